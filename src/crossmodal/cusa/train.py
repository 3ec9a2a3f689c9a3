"""CUSA training under ``torchrun``: DDP (gloo on the CPU, NCCL on GPUs), checkpoints, resume.

The loop follows the reference's retrieval.py (lerogo/aaai24_itr_cusa @ 58e8721): AdamW with
weight decay off for biases and 1-d tensors (optim/optim_factory.py:25-38), a cosine learning
rate set once per epoch from ``lr`` down to ``min_lr`` (scheduler/cosine_lr.py:69-91,
``lr_scheduler.step(epoch)`` at each epoch's start), seed ``seed + rank`` (retrieval.py:33),
batches of ``batch_size`` pairs per process with the last short batch dropped (dataset/
__init__.py:32-38), the text teacher on the pre-processed caption, evaluation after every epoch
and the best epoch kept.

Where it departs (config/README.md lists each):
* The best epoch is chosen on the validation split (``select: val``); the reference chooses on
  the test split (retrieval.py:164), which ``select: test`` reproduces.
* The shuffle is ``DistributedSampler``'s, seeded with ``seed`` rather than its default 0, in
  every run (the reference's single-process run shuffles with the global RNG instead), so the
  batches of an epoch are known before it starts and a resumed epoch skips exactly the batches
  already trained.
* The text teacher's features are computed once per caption by their own stage (they do not
  change during training: the teacher is frozen) instead of once per batch.

Crash safety: ``last.pt`` (model, optimizer, position, running loss sums, best so far) is
written atomically every ``checkpoint_every`` steps and after every epoch, under a folder named
by the run's identity (settings, the inputs' content, the code), so a killed job resumes where
it stopped and a changed setting never resumes another run's state.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from crossmodal.cusa.itr_eval import evaluate
from crossmodal.cusa.losses import CusaLossTerms, CusaSettings
from crossmodal.cusa.model import (
    CusaStudent,
    parameter_groups,
    save_student,
    variant_settings,
)
from crossmodal.cusa.pairs import SplitRows, read_eval_split, read_split_rows
from crossmodal.cusa.retrieval import read_rgb, similarity
from crossmodal.cusa.teachers import ids_sha256
from crossmodal.errors import CrossmodalError, DataFormatError
from crossmodal.io import atomic_path, read_json, write_json
from crossmodal.training import (
    epoch_batches,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    start_processes,
)

log = logging.getLogger(__name__)

# Settings that change where or how often state is saved, never the trained weights.
OPERATIONAL = ("checkpoints", "checkpoint_every", "workers", "eval_batch_size")


# --- schedule and batches ---------------------------------------------------------------------


def epoch_lr(epoch: int, epochs: int, lr: float, min_lr: float) -> float:
    """Cosine from ``lr`` (epoch 0) towards ``min_lr``, one value per epoch, no warmup: the
    reference's ``CosineLRScheduler(t_initial=epochs, warmup_t=0)`` at ``step(epoch)``."""
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * epoch / epochs))


# --- data -------------------------------------------------------------------------------------


class TeacherFile:
    """A teacher feature file (.npy) with its JSON sidecar, opened memory-mapped on first use
    (in each DataLoader worker: a memory map is not sent between processes)."""

    def __init__(self, path: Path, meta: Path) -> None:
        self.path, self.meta = Path(path), read_json(meta)
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def row(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.array[i], dtype=np.float32))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}


def check_teachers(rows: SplitRows, image: TeacherFile, text: TeacherFile) -> None:
    """The teacher files must describe exactly these training rows: the image teacher one row
    per image in first-appearance order, the text teacher one row per pair."""
    if image.meta["ids"] != rows.image_ids:
        raise DataFormatError(
            f"{image.path}: its image ids are not the training images of the pairs table "
            "(prepared again since?): rebuild the image teacher features"
        )
    if text.meta["ids_sha256"] != ids_sha256(rows.texts):
        raise DataFormatError(
            f"{text.path}: computed on other texts than the training captions of the pairs "
            "table (prepared again since?): rebuild the text teacher features"
        )
    shapes = ((image, len(rows.image_ids)), (text, len(rows.texts)))
    for teacher, n in shapes:
        if teacher.meta["rows"] != n or teacher.array.shape[0] != n:
            raise DataFormatError(
                f"{teacher.path}: {teacher.array.shape[0]} rows for {n} training "
                f"{'images' if teacher is image else 'pairs'}: rebuild the teacher features"
            )


class TrainPairs(Dataset):
    """One training pair: pixels, caption tokens, both teachers' rows, the image index."""

    def __init__(
        self, rows: SplitRows, preprocess, tokenizer, image: TeacherFile, text: TeacherFile
    ):
        self.rows, self.preprocess, self.tokenizer = rows, preprocess, tokenizer
        self.image_teacher, self.text_teacher = image, text

    def __len__(self) -> int:
        return len(self.rows.texts)

    def __getitem__(self, i: int):
        k = self.rows.image_index[i]
        return (
            self.preprocess(read_rgb(self.rows.paths[k])),
            self.tokenizer([self.rows.texts[i]])[0],
            self.image_teacher.row(k),
            self.text_teacher.row(i),
            k,
        )


# --- processes --------------------------------------------------------------------------------


# --- one step ---------------------------------------------------------------------------------


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch, device
) -> CusaLossTerms:
    """Forward, backward (DDP averages the gradients over processes), one optimizer step."""
    pixels, tokens, teacher_image, teacher_text, idx = (t.to(device) for t in batch)
    terms = model(pixels, tokens, teacher_image, teacher_text, idx)
    optimizer.zero_grad()
    terms.total.backward()
    optimizer.step()
    return terms


# --- identity and checkpoints -----------------------------------------------------------------


def run_identity(job: Any) -> str:
    """Settings that shape the weights, the inputs' content and this code, hashed: the name of
    the checkpoint folder. The teacher arrays are named by their sidecars (provenance, ids,
    shape) and size; hashing gigabytes of features per start would cost minutes."""
    from crossmodal.codehash import code_digest, package_root
    from crossmodal.jobs import PARAM

    names = [n for n in type(job).names(PARAM) if n not in OPERATIONAL]
    settings = {n: getattr(job, n) for n in names}
    inputs = {
        "pairs": file_sha256(job.pairs),
        "image_teacher_meta": file_sha256(job.image_teacher_meta),
        "text_teacher_meta": file_sha256(job.text_teacher_meta),
        "image_teacher_bytes": Path(job.image_teacher).stat().st_size,
        "text_teacher_bytes": Path(job.text_teacher).stat().st_size,
    }
    record = {
        "settings": settings,
        "inputs": inputs,
        "code": code_digest(package_root(), "crossmodal.cusa.train"),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- the loop ---------------------------------------------------------------------------------


@dataclass
class Progress:
    """Where training stands: what a checkpoint restores."""

    epoch: int = 0
    step: int = 0  # batches of ``epoch`` already trained
    sums: dict[str, float] | None = None  # running loss sums of the epoch
    best: float = -math.inf
    best_epoch: int = -1
    history: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _batches_from(batches: list[list[int]], skip: int) -> Iterator[list[int]]:
    yield from batches[skip:]


def evaluate_epoch(
    student: CusaStudent,
    clip,
    pairs: Path,
    splits: list[str],
    device,
    batch_size: int,
    workers: int,
) -> dict[str, dict[str, float]]:
    """Retrieval metrics of the current student on each split (the reference's itm_eval)."""
    student.eval()
    out = {}
    for split in splits:
        data = read_eval_split(pairs, split)
        scores = similarity(
            data,
            student.encode_image,
            student.encode_text,
            clip.preprocess,
            clip.tokenizer,
            device,
            batch_size,
            workers,
        )
        out[split] = evaluate(scores, data.image_ids, data.text_image)
    student.train()
    return out


def train(job: Any) -> dict[str, Any]:
    """Train one method variant; write the selected model and the training log (rank 0)."""
    from crossmodal.encoders.registry import load_trainable_clip

    procs = start_processes(job.device)
    identity = run_identity(job)
    folder = Path(job.checkpoints) / identity
    last = folder / "last.pt"
    best = folder / "best.pt"
    seed_everything(job.seed + procs.rank)

    clip = load_trainable_clip(job.student, device=str(procs.device))
    settings = variant_settings(CusaSettings(**job.loss), job.method)
    student = CusaStudent(clip, settings).to(procs.device)
    student.train()
    optimizer = torch.optim.AdamW(parameter_groups(student, job.weight_decay), lr=job.lr)

    progress = Progress(sums={}, history=[])
    state = load_checkpoint(last)
    if state is not None:
        student.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        progress = Progress(**state["progress"])
        if procs.main:
            log.info("resuming %s at epoch %d, step %d", last, progress.epoch, progress.step)
    model: torch.nn.Module = student
    if procs.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [procs.device.index] if procs.device.type == "cuda" else None
        model = DistributedDataParallel(student, device_ids=ids)

    rows = read_split_rows(job.pairs, "train")
    image_teacher = TeacherFile(job.image_teacher, job.image_teacher_meta)
    text_teacher = TeacherFile(job.text_teacher, job.text_teacher_meta)
    check_teachers(rows, image_teacher, text_teacher)
    data = TrainPairs(rows, clip.preprocess, clip.tokenizer, image_teacher, text_teacher)
    eval_splits = ["val"] + (["test"] if job.select == "test" else [])

    def checkpoint() -> None:
        if procs.main:
            state = {
                "model": student.state_dict(),
                "optimizer": optimizer.state_dict(),
                "progress": progress.as_dict(),
                "identity": identity,
            }
            save_checkpoint(last, state)

    for epoch in range(progress.epoch, job.epochs):
        lr = epoch_lr(epoch, job.epochs, job.lr, job.min_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = epoch_batches(len(data), procs.world, procs.rank, job.seed, epoch, job.batch_size)
        if not batches:
            raise CrossmodalError(
                f"cusa: {len(data)} training pairs make no full batch of {job.batch_size} per "
                f"process ({procs.world} processes): lower cusa.train.batch_size"
            )
        loader = DataLoader(
            data,
            batch_sampler=list(_batches_from(batches, progress.step)),
            num_workers=job.workers,
            pin_memory=procs.device.type == "cuda",
        )
        bar = tqdm(
            total=len(batches),
            initial=progress.step,
            desc=f"cusa {job.method} epoch {epoch}",
            disable=not procs.main,
            leave=False,
        )
        for batch in loader:
            terms = train_step(model, optimizer, batch, procs.device)
            for name in ("contrastive", "csa", "usa"):
                progress.sums[name] = progress.sums.get(name, 0.0) + getattr(terms, name).item()
            progress.step += 1
            bar.update(1)
            every = job.checkpoint_every
            if every and progress.step % every == 0 and progress.step < len(batches):
                checkpoint()
        bar.close()

        record = {
            "epoch": epoch,
            "lr": lr,
            "steps": len(batches),
            **{f"loss_{k}": v / len(batches) for k, v in sorted(progress.sums.items())},
            **{k: float(v) for k, v in student.loss.named_parameters()},
        }
        if procs.main:
            metrics = evaluate_epoch(
                student, clip, job.pairs, eval_splits, procs.device, job.eval_batch_size, 0
            )
            for split, values in metrics.items():
                record.update({f"{split}_{k}": v for k, v in values.items()})
            score = metrics[job.select]["rsum"]
            if score > progress.best:  # the first best epoch is kept, as the reference's ">"
                progress.best, progress.best_epoch = score, epoch
                save_student(best, student, job.student, {"epoch": epoch, "identity": identity})
            log.info("epoch %d: %s", epoch, json.dumps(record, sort_keys=True))
        progress.history.append(record)
        progress.epoch, progress.step, progress.sums = epoch + 1, 0, {}
        checkpoint()
        if procs.world > 1:
            dist.barrier()

    result = {
        "method": job.method,
        "identity": identity,
        "selected_on": job.select,
        "best_epoch": progress.best_epoch,
        "best_rsum": progress.best,
        "processes": procs.world,
        "seed": job.seed,
        "epochs": progress.history,
    }
    if procs.main:
        with atomic_path(job.model) as tmp:
            shutil.copyfile(best, tmp)
        write_json(job.history, result)
    if procs.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def run_cusa_train(job: Any) -> dict[str, Any]:
    """The ``cusa-train`` stage (a :class:`crossmodal.stages.CusaTrain` job)."""
    return train(job)
