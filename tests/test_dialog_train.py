"""Dialogue retrieval fine-tuning: losses by hand, a short run that learns, kill and resume."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from helpers.dialog import make_world

from crossmodal import stages
from crossmodal.dialog import train as dialog_train
from crossmodal.dialog.train import one_way_infonce, read_pairs, symmetric_infonce
from crossmodal.io import read_json
from crossmodal.jobs import to_args

TINY = {"backend": "tiny", "seed": 0}
TEXT = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
IMAGE = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_symmetric_infonce_by_hand():
    # scale 2: text->image logits [[2, 1.2], [0, 1.6]]; image->text is the transpose
    t2i = (_ce([2.0, 1.2], 0) + _ce([0.0, 1.6], 1)) / 2
    i2t = (_ce([2.0, 0.0], 0) + _ce([1.2, 1.6], 1)) / 2
    got = symmetric_infonce(TEXT, IMAGE, torch.tensor(math.log(2.0)))
    assert got.item() == pytest.approx((t2i + i2t) / 2, rel=1e-6)


def test_one_way_loss_at_tau_half_by_hand():
    expected = (_ce([2.0, 1.2], 0) + _ce([0.0, 1.6], 1)) / 2  # [[1, .6], [0, .8]] / 0.5
    assert one_way_infonce(TEXT, IMAGE, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_learnable_temperature_gets_a_gradient_only_for_infonce():
    scale = torch.tensor(math.log(2.0), requires_grad=True)
    symmetric_infonce(TEXT, IMAGE, scale).backward()
    assert scale.grad is not None and scale.grad.abs() > 0


def _job(root, world, **overrides) -> stages.DialogTrain:
    settings = dict(
        dialogues=world["dialogues"],
        descriptors=world["descriptors"],
        photos=world["photos"],
        model=root / "out" / "model.pt",
        history=root / "out" / "train.json",
        student=TINY,
        loss="infonce",
        tau=0.5,
        epochs=3,
        batch_size=4,
        lr=5e-4,
        weight_decay=0.0,
        seed=3,
        device="cpu",
        workers=0,
        checkpoints=root / "ckpt",
        checkpoint_every=0,
    )
    settings.update(overrides)
    return stages.DialogTrain(**settings)


def test_dead_photos_are_excluded_from_the_pairs_and_listed(tmp_path):
    world = make_world(tmp_path / "w", dead=("grey",))
    pairs = read_pairs(world["dialogues"], world["descriptors"], world["photos"])
    assert len(pairs.texts) == 7 and pairs.excluded == {"7": "photo grey unavailable: HTTP 404"}


@pytest.mark.parametrize("loss", ["infonce", "one_way"])
def test_short_run_lowers_the_loss(tmp_path, loss):
    world = make_world(tmp_path / "w")
    result = _job(tmp_path, world, loss=loss, epochs=4).run()
    losses = [e["loss"] for e in result["epochs"]]
    assert losses[-1] < losses[0]
    history = read_json(tmp_path / "out" / "train.json")
    assert history["pairs"] == 8 and history["n_excluded"] == 0
    if loss == "one_way":
        assert all(e["temperature"] == 0.5 for e in history["epochs"])
    state = torch.load(tmp_path / "out" / "model.pt", weights_only=False)
    assert state["encoder"] == TINY


def test_killed_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    world = make_world(tmp_path / "w")
    whole = _job(tmp_path / "a", world, epochs=2, checkpoint_every=1)
    whole.run()
    expected = torch.load(whole.model, weights_only=False)["state_dict"]

    real_save = dialog_train.save_checkpoint
    saves = []

    def save_then_die(path, state):
        real_save(path, state)
        saves.append(state["progress"]["step"])
        if len(saves) == 3:  # epoch 0 step 1, end of epoch 0, epoch 1 step 1: then killed
            raise KeyboardInterrupt

    monkeypatch.setattr(dialog_train, "save_checkpoint", save_then_die)
    killed = _job(tmp_path / "b", world, epochs=2, checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):
        killed.run()
    assert not killed.model.exists()
    last = tmp_path / "b" / "ckpt" / dialog_train.run_identity(killed) / "last.pt"
    progress = torch.load(last, weights_only=False)["progress"]
    assert (progress["epoch"], progress["step"]) == (1, 1)  # killed mid-epoch 1
    monkeypatch.setattr(dialog_train, "save_checkpoint", real_save)
    result = killed.run()
    got = torch.load(killed.model, weights_only=False)["state_dict"]
    assert [e["epoch"] for e in result["epochs"]] == [0, 1]
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6)


def test_a_changed_setting_trains_in_another_checkpoint_folder(tmp_path):
    world = make_world(tmp_path / "w")
    a = dialog_train.run_identity(_job(tmp_path, world))
    assert a == dialog_train.run_identity(_job(tmp_path, world, workers=2))  # operational
    assert a != dialog_train.run_identity(_job(tmp_path, world, lr=1e-5))
    assert a != dialog_train.run_identity(_job(tmp_path, world, loss="one_way"))


@pytest.mark.slow
def test_two_torchrun_processes_train_with_gloo(tmp_path):
    world = make_world(tmp_path / "w")
    job = _job(tmp_path, world, epochs=1, batch_size=2)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, "-m", "crossmodal", "dialog-train", *to_args(job)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = read_json(job.history)
    assert history["processes"] == 2 and history["epochs"][0]["steps"] == 2
