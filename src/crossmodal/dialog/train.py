"""Fine-tune CLIP on (descriptor text, photo) pairs under ``torchrun``: DDP, checkpoints, resume.

The training pairs are the training split's dialogues whose photo could be had, each with its
descriptor's CLIP text (a fallback dialogue keeps its raw-dialogue text). Dialogues whose photo
is dead are left out and listed in the history, with the count.

Losses (both tested against hand computation):

* ``infonce`` (default): CLIP's symmetric InfoNCE with a learnable temperature, the model's own
  ``logit_scale`` (``exp(logit_scale)`` = 1 / temperature, clamped at 100 as CLIP does); the
  mean of the descriptor->photo and photo->descriptor cross-entropies over the batch. It is
  VisualDialog's ``get_loss`` (CLDiagDescriptor.py:63-76, learnable ``t`` initialised at 0.07)
  with the temperature kept on a log scale, which keeps it positive.
* ``one_way``: the course solution's loss, one direction only (descriptor -> photo, the query
  side) at a fixed temperature ``tau`` (0.5 there); ``logit_scale`` is frozen.

Optimiser: AdamW at 5e-5 for 15 epochs (the issue's settings; VisualDialog uses Adam at 1e-5,
CLDiagDescriptor.py:100 and :480). bf16 autocast on GPUs only; the CPU trains in float32.

Negatives are the other pairs of a process's own batch (no gather across processes): with N
processes an epoch sees N times as many batches of the same size, as with CUSA's training.

Crash safety as in CUSA's training (:mod:`crossmodal.training`): ``last.pt`` is written
atomically every ``checkpoint_every`` steps and after every epoch, in a folder named by the run's
identity (settings that shape the weights, the inputs' content, this code), and a killed job
resumes from it, skipping exactly the batches already trained.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from crossmodal.dialog.data import available_photos, excluded_dialogues, read_photo
from crossmodal.errors import CrossmodalError, DataFormatError
from crossmodal.io import atomic_path, write_json
from crossmodal.training import (
    epoch_batches,
    file_sha256,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
    start_processes,
)

log = logging.getLogger(__name__)

LOSSES = ("infonce", "one_way")
MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps 1 / temperature at 100
# Settings that change where or how often state is saved, never the weights (``device`` is not
# one: bf16 on a GPU and float32 on the CPU train different weights).
OPERATIONAL = ("checkpoints", "checkpoint_every", "workers")


# --- losses --------------------------------------------------------------------------------------


def symmetric_infonce(
    text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Mean of the text->image and image->text cross-entropies of ``exp(logit_scale) * t @ i^T``
    (rows L2-normalised; pair ``k`` is row ``k`` of both)."""
    logits = logit_scale.exp() * text @ image.T
    target = torch.arange(len(text), device=text.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def one_way_infonce(text: torch.Tensor, image: torch.Tensor, tau: float) -> torch.Tensor:
    """Cross-entropy of each descriptor against the batch's photos at temperature ``tau``."""
    logits = text @ image.T / tau
    return F.cross_entropy(logits, torch.arange(len(text), device=text.device))


class DialogClip(torch.nn.Module):
    """A CLIP model whose forward is the training loss of a batch of (pixels, tokens)."""

    def __init__(self, model: torch.nn.Module, loss: str, tau: float) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise CrossmodalError(f"dialog.train.loss {loss!r}: choose one of {list(LOSSES)}")
        self.model, self.loss, self.tau = model, loss, tau
        self.model.logit_scale.requires_grad_(loss == "infonce")

    def encode(self, pixels: torch.Tensor, tokens: torch.Tensor):
        image = F.normalize(self.model.encode_image(pixels).float(), dim=-1)
        text = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        return text, image

    def forward(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        text, image = self.encode(pixels, tokens)
        if self.loss == "infonce":
            return symmetric_infonce(text, image, self.model.logit_scale.float())
        return one_way_infonce(text, image, self.tau)


# --- pairs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    dialogue_ids: list[int]
    texts: list[str]
    paths: list[str]
    excluded: dict[str, str]  # dialogue_id -> why it is not a training pair


def read_pairs(dialogues: Path, descriptors: Path, photos: Path) -> Pairs:
    """Training pairs: each dialogue with an available photo, its descriptor text and photo."""
    table = pq.read_table(dialogues, columns=["dialogue_id", "photo_id"])
    ok, failed = available_photos(photos)
    excluded = excluded_dialogues(table, failed)
    desc = pq.read_table(descriptors, columns=["dialogue_id", "text"]).to_pylist()
    text_of = {int(r["dialogue_id"]): r["text"] for r in desc}
    ids, texts, paths = [], [], []
    for d, photo in zip(
        table.column("dialogue_id").to_pylist(), table.column("photo_id").to_pylist(), strict=True
    ):
        if str(d) in excluded:
            continue
        if d not in text_of:
            raise DataFormatError(
                f"{descriptors}: no descriptor for dialogue {d} of {dialogues}; describe the "
                "same dialogues table again"
            )
        if photo not in ok:
            raise DataFormatError(
                f"{photos}: photo {photo} of dialogue {d} has no status row; fetch the photos "
                f"of {dialogues} again"
            )
        ids.append(int(d))
        texts.append(text_of[d])
        paths.append(ok[photo])
    return Pairs(ids, texts, paths, excluded)


class PairData(Dataset):
    def __init__(self, pairs: Pairs, preprocess, tokenizer) -> None:
        self.pairs, self.preprocess, self.tokenizer = pairs, preprocess, tokenizer

    def __len__(self) -> int:
        return len(self.pairs.texts)

    def __getitem__(self, i: int):
        pixels = self.preprocess(read_photo(self.pairs.paths[i]))
        return pixels, self.tokenizer([self.pairs.texts[i]])[0]


# --- identity ------------------------------------------------------------------------------------


def run_identity(job: Any) -> str:
    """Settings that shape the weights, the inputs' content and this code, hashed: the name of
    the checkpoint folder (a changed setting never resumes another run's state)."""
    from crossmodal.codehash import code_digest, package_root
    from crossmodal.jobs import PARAM

    settings = {n: getattr(job, n) for n in type(job).names(PARAM) if n not in OPERATIONAL}
    record = {
        "settings": settings,
        "inputs": {k: file_sha256(getattr(job, k)) for k in ("dialogues", "descriptors", "photos")},
        "code": code_digest(package_root(), "crossmodal.dialog.train"),
    }
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --- the loop ------------------------------------------------------------------------------------


def train(job: Any) -> dict[str, Any]:
    """Fine-tune; rank 0 writes the weights (with the encoder entry) and the history."""
    from crossmodal.encoders.registry import load_trainable_clip

    procs = start_processes(job.device)
    identity = run_identity(job)
    last = Path(job.checkpoints) / identity / "last.pt"
    seed_everything(job.seed + procs.rank)

    clip = load_trainable_clip(job.student, device=str(procs.device))
    module = DialogClip(clip.model, job.loss, job.tau).to(procs.device).train()
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=job.lr, weight_decay=job.weight_decay)
    progress: dict[str, Any] = {"epoch": 0, "step": 0, "loss_sum": 0.0, "history": []}
    state = load_checkpoint(last)
    if state is not None:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        progress = state["progress"]
        if procs.main:
            log.info("resuming %s at epoch %d, step %d", last, progress["epoch"], progress["step"])
    model: torch.nn.Module = module
    if procs.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [procs.device.index] if procs.device.type == "cuda" else None
        model = DistributedDataParallel(module, device_ids=ids)

    pairs = read_pairs(job.dialogues, job.descriptors, job.photos)
    data = PairData(pairs, clip.preprocess, clip.tokenizer)
    cuda = procs.device.type == "cuda"

    def checkpoint() -> None:
        if procs.main:
            save_checkpoint(
                last,
                {
                    "model": module.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "progress": progress,
                    "identity": identity,
                },
            )

    for epoch in range(progress["epoch"], job.epochs):
        batches = epoch_batches(len(data), procs.world, procs.rank, job.seed, epoch, job.batch_size)
        if not batches:
            raise CrossmodalError(
                f"dialog: {len(data)} training pairs make no full batch of {job.batch_size} per "
                f"process ({procs.world} processes): lower dialog.train.batch_size"
            )
        loader = DataLoader(
            data,
            batch_sampler=batches[progress["step"] :],
            num_workers=job.workers,
            pin_memory=cuda,
        )
        bar = tqdm(
            total=len(batches),
            initial=progress["step"],
            desc=f"dialog epoch {epoch}",
            disable=not procs.main,
            leave=False,
        )
        for pixels, tokens in loader:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = model(pixels.to(procs.device), tokens.to(procs.device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                module.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
            progress["loss_sum"] += loss.item()
            progress["step"] += 1
            bar.update(1)
            every = job.checkpoint_every
            if every and progress["step"] % every == 0 and progress["step"] < len(batches):
                checkpoint()
        bar.close()
        record = {
            "epoch": epoch,
            "steps": len(batches),
            "loss": progress["loss_sum"] / len(batches),
            "temperature": float(1 / module.model.logit_scale.detach().exp())
            if job.loss == "infonce"
            else job.tau,
        }
        if procs.main:
            log.info("epoch %d: %s", epoch, json.dumps(record, sort_keys=True))
        progress["history"].append(record)
        progress.update(epoch=epoch + 1, step=0, loss_sum=0.0)
        checkpoint()
        if procs.world > 1:
            dist.barrier()

    result = {
        "identity": identity,
        "loss": job.loss,
        "processes": procs.world,
        "seed": job.seed,
        "pairs": len(pairs.texts),
        "excluded": pairs.excluded,
        "n_excluded": len(pairs.excluded),
        "epochs": progress["history"],
    }
    if procs.main:
        state = {"encoder": job.student, "state_dict": _cpu(clip.model.state_dict())}
        with atomic_path(job.model) as tmp:
            torch.save(state, tmp)
        write_json(job.history, result)
    if procs.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def load_finetuned(path: Path, device: str = "cpu"):
    """A fine-tuned model written by :func:`train`: its encoder entry's model with the saved
    weights, in eval mode (a :class:`~crossmodal.encoders.registry.TrainableClip`)."""
    from crossmodal.encoders.registry import load_trainable_clip

    state = torch.load(path, map_location="cpu", weights_only=False)
    clip = load_trainable_clip(state["encoder"], device=device)
    clip.model.load_state_dict(state["state_dict"])
    clip.model.eval()
    return clip


def run_dialog_train(job: Any) -> dict[str, Any]:
    """The ``dialog-train`` stage (a :class:`crossmodal.stages.DialogTrain` job)."""
    return train(job)
