"""CUSA training: schedule, batches, optimizer groups, DDP semantics, selection, kill and resume."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers.itr import make_pairs, make_teachers
from torch.utils.data import DistributedSampler

from crossmodal import stages
from crossmodal.cusa.losses import REFERENCE_SETTINGS, CusaSettings
from crossmodal.cusa.model import (
    CusaStudent,
    load_student,
    parameter_groups,
    variant_settings,
)
from crossmodal.cusa.train import epoch_batches, epoch_lr, train_step
from crossmodal.encoders.registry import load_trainable_clip
from crossmodal.io import read_json
from crossmodal.jobs import to_args

TINY = {"backend": "tiny", "seed": 0}
SCHEMA = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"


def _job(root: Path, method: str = "cusa", **overrides) -> stages.CusaTrain:
    pairs = root / "data" / "pairs.parquet"
    if not pairs.exists():
        pairs = make_pairs(root / "data")
        make_teachers(pairs, root / "teachers")
    teachers = {
        "image_teacher": root / "teachers/image.npy",
        "image_teacher_meta": root / "teachers/image.json",
        "text_teacher": root / "teachers/text.npy",
        "text_teacher_meta": root / "teachers/text.json",
    }
    settings = dict(
        student=TINY,
        method=method,
        loss=dataclasses.asdict(REFERENCE_SETTINGS),
        epochs=2,
        batch_size=8,
        lr=1e-4,
        min_lr=1e-5,
        weight_decay=1e-4,
        seed=23,
        select="val",
        device="cpu",
        workers=0,
        eval_batch_size=16,
        checkpoints=root / "checkpoints",
        checkpoint_every=0,
    )
    settings.update(overrides)
    out = root / f"out_{method}"
    return stages.CusaTrain(
        pairs=pairs, **teachers, model=out / "model.pt", history=out / "history.json", **settings
    )


# --- schedule, batches, optimizer -------------------------------------------------------------


def test_epoch_lr_is_the_reference_cosine_per_epoch():
    assert epoch_lr(0, 30, 1e-5, 1e-6) == pytest.approx(1e-5)
    assert epoch_lr(15, 30, 1e-5, 1e-6) == pytest.approx(5.5e-6)  # halfway: the mean
    assert epoch_lr(29, 30, 1e-5, 1e-6) == pytest.approx(
        1e-6 + 0.5 * 9e-6 * (1 + math.cos(math.pi * 29 / 30))
    )


@pytest.mark.parametrize("n,world", [(23, 1), (23, 2), (24, 3)])
def test_epoch_batches_are_distributed_samplers_order_with_drop_last(n, world):
    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=7)
        sampler.set_epoch(3)
        order = list(sampler)
        expected = [order[i : i + 4] for i in range(0, len(order) - 3, 4)]
        assert epoch_batches(n, world, rank, 7, 3, 4) == expected
        assert all(len(b) == 4 for b in expected)


def test_parameter_groups_decay_matrices_and_temperatures_not_biases():
    student = CusaStudent(load_trainable_clip(TINY), REFERENCE_SETTINGS)
    no_decay, decay = parameter_groups(student, 1e-4)
    assert (no_decay["weight_decay"], decay["weight_decay"]) == (0.0, 1e-4)
    ids = {id(p) for p in decay["params"]}
    assert id(student.loss.tau) in ids and id(student.loss.cross_tau) in ids  # 0-d: decayed
    assert id(student.heads.cross_image_projection.weight) in ids
    assert id(student.heads.cross_image_projection.bias) not in ids
    assert id(student.heads.ln_cross_image_projection.weight) not in ids  # 1-d
    frozen = student.loss.cross_the_softlabel_tau
    assert all(id(frozen) != id(p) for g in (no_decay, decay) for p in g["params"])


def test_variants_freeze_what_their_loss_never_reaches():
    clip = load_trainable_clip(TINY)
    contrastive = CusaStudent(clip, variant_settings(REFERENCE_SETTINGS, "contrastive"))
    assert not contrastive.heads.uni_image_projection.weight.requires_grad
    assert not contrastive.loss.cross_tau.requires_grad
    assert contrastive.loss.tau.requires_grad
    assert contrastive.heads.cross_text_projection.weight.requires_grad
    with pytest.raises(Exception, match="choose one of"):
        variant_settings(REFERENCE_SETTINGS, "clip")


def _batch(n: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n, 3, 224, 224, generator=g)
    tokens = torch.randint(1, 400, (n, 77), generator=g)
    tokens[:, 10:] = 0
    tokens[:, 9] = 49407  # end-of-text: open_clip pools at the highest token id
    idx = torch.tensor([0, 0, 1, 2, 3, 3, 4, 5])[:n]
    return pixels, tokens, torch.randn(n, 12, generator=g), torch.randn(n, 10, generator=g), idx


def test_gradients_reach_both_head_pairs_the_backbone_and_the_temperatures():
    student = CusaStudent(load_trainable_clip(TINY), REFERENCE_SETTINGS)
    terms = student(*_batch())
    terms.total.backward()
    for name in ("cross_image_projection", "cross_text_projection", "uni_image_projection"):
        assert getattr(student.heads, name).weight.grad.abs().sum() > 0, name
    for name in ("tau", "cross_tau", "uni_tau_image", "uni_tau_text"):
        assert getattr(student.loss, name).grad.abs() > 0, name
    assert student.loss.cross_the_softlabel_tau.grad is None  # frozen
    assert student.clip.visual.conv1.weight.grad.abs().sum() > 0


# --- two gloo processes against one ------------------------------------------------------------


def _settings(all_gather: bool) -> CusaSettings:
    return dataclasses.replace(REFERENCE_SETTINGS, all_gather=all_gather)


def _fresh(all_gather: bool):
    torch.manual_seed(0)
    student = CusaStudent(load_trainable_clip(TINY), _settings(all_gather))
    optimizer = torch.optim.AdamW(parameter_groups(student, 1e-4), lr=1e-4)
    return student, optimizer


def _ddp_worker(rank: int, world: int, init: str, all_gather: bool, out: str) -> None:
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    student, optimizer = _fresh(all_gather)
    model = DistributedDataParallel(student)
    half = len(_batch()[0]) // world
    local = [t[rank * half : (rank + 1) * half] for t in _batch()]
    terms = train_step(model, optimizer, local, torch.device("cpu"))
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    state = {"loss": terms.total.item(), "state": student.state_dict(), "grads": grads}
    torch.save(state, Path(out) / f"{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("all_gather", [False, True])
def test_two_gloo_processes_take_the_step_of_one_process(tmp_path, all_gather):
    """all_gather off: each process's loss is its half's (per-GPU semantics, the reference's
    default) and DDP averages the gradients, i.e. one process stepping on the mean of the two
    halves' losses. On: each process's loss is the whole batch's, the gradient of its own
    slice only: DDP's average is the one-process gradient divided by the world size for the
    network, and the whole one for the temperatures (every process computes them over the
    whole batch), as in the reference (AdamW normalises each parameter's scale, so this is
    the one-process step up to AdamW's eps)."""
    torch.set_num_threads(1)
    mp.spawn(
        _ddp_worker,
        args=(2, f"file://{tmp_path / 'init'}", all_gather, str(tmp_path)),
        nprocs=2,
        join=True,
    )
    results = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]

    student, optimizer = _fresh(False)
    batch = _batch()
    optimizer.zero_grad()
    if all_gather:
        whole = student(*batch).total
        expected_losses = [whole.item()] * 2
        whole.backward()
    else:  # one backward per half (a forward clamps the temperatures in place)
        expected_losses = []
        for r in range(2):
            half = student(*[t[r * 4 : (r + 1) * 4] for t in batch]).total
            expected_losses.append(half.item())
            (half / 2).backward()
    grads = {n: p.grad for n, p in student.named_parameters() if p.grad is not None}
    if all_gather:  # each process computes the temperatures' gradient over the whole batch
        for name, grad in grads.items():
            if not name.startswith("loss."):
                grad /= 2
    optimizer.step()
    for rank, got in enumerate(results):
        assert got["loss"] == pytest.approx(expected_losses[rank], rel=1e-5)
        assert got["grads"].keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(got["grads"][name], grad, rtol=1e-4, atol=1e-8)
        # AdamW steps a weight by about lr whatever its gradient's size, so where gradients
        # are rounding noise (near eps = 1e-8) the step's sign is noise too: compare the step
        # where the gradient is real, and every weight that had no gradient exactly
        for name, value in student.state_dict().items():
            real = grads[name].abs() > 1e-6 if name in grads else torch.ones_like(value, dtype=bool)
            torch.testing.assert_close(got["state"][name][real], value[real], rtol=1e-5, atol=1e-6)


# --- the training stage ------------------------------------------------------------------------


def test_training_writes_the_selected_epoch_and_its_log(tmp_path):
    job = _job(tmp_path, epochs=3)
    result = job.run()
    log = read_json(job.history)
    assert [e["epoch"] for e in log["epochs"]] == [0, 1, 2]
    rsums = [e["val_rsum"] for e in log["epochs"]]
    assert log["best_epoch"] == rsums.index(max(rsums))  # the first best, as the reference
    assert log["selected_on"] == "val" and result["best_rsum"] == max(rsums)
    assert [e["lr"] for e in log["epochs"]] == pytest.approx(
        [epoch_lr(k, 3, 1e-4, 1e-5) for k in range(3)]
    )
    student, _ = load_student(job.model, torch.device("cpu"))
    saved = torch.load(job.model, weights_only=False)
    assert saved["epoch"] == log["best_epoch"]
    assert student.settings == REFERENCE_SETTINGS
    assert not any("test_" in k for k in log["epochs"][0])  # the test split stays unseen


def test_selecting_on_test_evaluates_the_test_split(tmp_path):
    job = _job(tmp_path, epochs=1, select="test")
    job.run()
    log = read_json(job.history)
    assert "test_rsum" in log["epochs"][0] and log["selected_on"] == "test"


def test_a_changed_setting_never_resumes_another_runs_checkpoint(tmp_path):
    first = _job(tmp_path, epochs=1).run()
    second = _job(tmp_path, epochs=1, lr=5e-5).run()
    assert first["identity"] != second["identity"]
    folders = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert folders == sorted([first["identity"], second["identity"]])
    assert second["epochs"][0]["lr"] == 5e-5  # trained, not resumed from the first run


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=False)["state_dict"]


def _cli(job: stages.CusaTrain) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "crossmodal", "cusa-train", *to_args(job)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_gives_the_uninterrupted_model(tmp_path):
    """All three runs are processes of their own, with the same thread count (the float
    reductions, so the last bits, depend on it)."""
    reference = _job(tmp_path / "a", batch_size=2, checkpoint_every=1)
    _cli(reference).wait()

    job = _job(tmp_path / "b", batch_size=2, checkpoint_every=1)
    proc = _cli(job)
    last = None
    deadline = time.time() + 120
    while time.time() < deadline:
        found = list((tmp_path / "b/checkpoints").glob("*/last.pt"))
        if found:
            last = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last is not None, "no checkpoint appeared"
    assert not job.model.exists()
    saved = torch.load(last, weights_only=False)["progress"]
    assert saved["epoch"] == 0 and saved["step"] > 0  # killed mid-epoch

    assert _cli(job).wait() == 0
    a, b = _state(reference.model), _state(job.model)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    log_a, log_b = read_json(reference.history), read_json(job.history)
    assert log_a["epochs"] == log_b["epochs"]


def test_torchrun_hands_every_training_option_to_the_stage(tmp_path):
    """torchrun parses options up to its script with abbreviations allowed: no option of the
    stage may be read as one of torchrun's (``--log`` was taken for ``--log-dir``)."""
    from torch.distributed.run import get_args_parser

    args = to_args(_job(tmp_path))
    parsed = get_args_parser().parse_args(
        ["--standalone", "--nproc_per_node", "1", "-m", "crossmodal", "cusa-train", *args]
    )
    assert parsed.training_script == "crossmodal"
    assert parsed.training_script_args == ["cusa-train", *args]


def test_the_schema_defaults_are_the_reference_loss_settings():
    from crossmodal.config import validate_config

    config = validate_config({"features": {"encoder": "t"}, "encoders": {"t": TINY}}, SCHEMA)
    assert CusaSettings(**config["cusa"]["loss"]) == REFERENCE_SETTINGS
    train = config["cusa"]["train"]
    assert (train["lr"], train["min_lr"], train["weight_decay"]) == (1e-5, 1e-6, 1e-4)
    assert (train["batch_size"], train["seed"], train["epochs"]) == (
        128,
        23,
        {"coco_karpathy": 30, "flickr30k": 40},
    )


def test_a_text_teacher_of_other_captions_is_refused(tmp_path):
    import json

    job = _job(tmp_path, epochs=1)
    meta = json.loads(job.text_teacher_meta.read_text())
    meta["ids_sha256"] = "0" * 64  # same row count, other texts
    job.text_teacher_meta.write_text(json.dumps(meta))
    with pytest.raises(Exception, match="other texts than the training captions"):
        job.run()
