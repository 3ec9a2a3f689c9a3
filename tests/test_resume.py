"""Kill the ReCoD stage mid-run, rerun: same table as an uninterrupted run, nothing sent twice."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from helpers.jobs import describe_settings

from crossmodal import stages
from crossmodal.data.demo import make_demo_world
from crossmodal.data.prepare import prepare_collection, prepare_okvqa
from crossmodal.encoders import build_encoder
from crossmodal.features import extract_image_features, read_embeddings
from crossmodal.generation.tiny import build_tiny_llava
from crossmodal.index import IndexParams, build_index, save_index
from crossmodal.jobs import to_args
from crossmodal.recod.stage import run_describe_job

TINY = {"backend": "tiny", "seed": 0}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    make_demo_world(root / "res", seed=1, n_train=30, n_val=6, image_size=(96, 64))
    for split in ("train", "val"):
        prepare_collection(
            root / f"res/coco/{split}2014",
            root / f"res/coco/annotations/captions_{split}2014.json",
            root / f"{split}_images.parquet",
            root / f"{split}_captions.parquet",
        )
    prepare_okvqa(
        root / "res/okvqa/OpenEnded_mscoco_val2014_questions.json",
        root / "res/okvqa/mscoco_val2014_annotations.json",
        root / "val_q.parquet",
    )
    enc = build_encoder(TINY, device="cpu")
    extract_image_features(enc, root / "train_images.parquet", root / "train_f.parquet", workers=0)
    ids, x = read_embeddings(root / "train_f.parquet")
    save_index(build_index(x, ids, IndexParams("flat")), root / "train.faiss", {})
    build_tiny_llava(root / "vlm", seed=0)
    (root / "val_skips.json").write_text(json.dumps({"skipped": []}))
    run_describe_job(describe_job(root, root / "base", "base"))  # ReCoD's loop 0
    return root


def describe_job(world, out_dir, method):
    return stages.Describe(
        vlm={"backend": "transformers", "model": str(world / "vlm"), "device": "cpu"},
        settings=describe_settings(method, vlm={"max_tokens": 8}, n_descriptions=5),
        images=world / "val_images.parquet",
        questions=world / "val_q.parquet",
        skips=world / "val_skips.json",
        encoder=TINY,
        index=world / "train.faiss",
        retrieval_images=world / "train_images.parquet",
        retrieval_captions=world / "train_captions.parquet",
        chunk=2,
        journal=out_dir / "journal",
        table=out_dir / "d.parquet",
        ledger=out_dir / "ledger.json",
        shard=0,
        shards=1,
        base=None if method == "base" else world / "base" / "d.parquet",
    )


def describe_cmd(world, out_dir, method):
    job = describe_job(world, out_dir, method)
    return [sys.executable, "-m", "crossmodal", "describe", *to_args(job)]


def journal_keys(path):
    return [json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["recod", "recod_img"])
def test_kill_and_rerun_equals_uninterrupted(world, tmp_path, method):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    ref.mkdir()
    cut.mkdir()
    subprocess.run(describe_cmd(world, ref, method), check=True, capture_output=True)
    total = len(journal_keys(ref / "journal" / "shard0of1.jsonl"))
    assert total == 6 * 4  # 6 targets x 4 loops (loop 0 is the base run's)

    proc = subprocess.Popen(describe_cmd(world, cut, method), stderr=subprocess.DEVNULL)
    journal = cut / "journal" / "shard0of1.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if journal.exists() and len(journal_keys(journal)) >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = len(journal_keys(journal))
    assert 10 <= done_at_kill < total, "the kill should land mid-run"
    assert not (cut / "d.parquet").exists()

    subprocess.run(describe_cmd(world, cut, method), check=True, capture_output=True)
    keys = journal_keys(journal)
    assert len(keys) == len(set(keys)) == total  # no request journalled (answered) twice
    ledger = json.loads((cut / "ledger.json").read_text())
    assert ledger["answered_from_journal"] == done_at_kill
    assert ledger["sent"] == total - done_at_kill
    assert (cut / "d.parquet").read_bytes() == (ref / "d.parquet").read_bytes()
