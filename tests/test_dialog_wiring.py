"""Dialogue retrieval wiring: the demo world in PhotoChat's layout, the summary, the downloads."""

from __future__ import annotations

import json

import pytest

from crossmodal import stages
from crossmodal.dialog.data import mirror_photos, read_shards
from crossmodal.dialog.demo import make_dialog_demo
from crossmodal.dialog.wiring import download_owners, manifest_name
from crossmodal.errors import CrossmodalError
from crossmodal.io import read_json


def test_demo_world_is_photochat_layout_and_its_photos_are_a_mirror(tmp_path):
    train, test = tmp_path / "train/train_00.json", tmp_path / "test/test_00.json"
    marker = tmp_path / "photos/.generated.json"
    make_dialog_demo(train, test, marker, seed=3, n_train=6, n_test=4)
    table, left_out = read_shards([test], "test")
    assert table.num_rows == 4 and left_out == {}
    turns = table.column("turns").to_pylist()[0]
    assert turns[0].startswith("User 1: ") and "painted a" in turns[1]
    assert all(not t.endswith("wow, looks great!") for t in turns)  # after the photo: not kept
    ids, urls = table.column("photo_id").to_pylist(), table.column("photo_url").to_pylist()
    photos = dict(zip(ids, urls, strict=True))
    assert {s.status for s in mirror_photos(photos, marker.parent)} == {"mirror"}
    # seeded: the same world twice
    again = tmp_path / "again"
    make_dialog_demo(again / "a.json", again / "b.json", again / "p/.g.json", 3, 6, 4)
    assert json.loads(test.read_text()) == json.loads((again / "b.json").read_text())


def test_photochat_shards_are_named_downloads():
    (owner,) = download_owners()
    assert len(owner.archives) == 25 and owner.mirror_key == "photochat_json"
    assert manifest_name("test/test_01.json") == "photochat_test_01.json"
    manifest = read_json("resources/manifests/downloads.json")["files"]
    for name in owner.archives:
        shard = name.removeprefix("photochat_")  # e.g. train_07.json
        expected = f"multimodalchat/photochat/{shard.split('_')[0]}/{shard}"
        assert manifest[name]["url"].endswith(expected)


def _metrics(path, r1):
    counts = {"n_evaluated": 9, "n_excluded": 1, "n_total": 10, "n_candidates": 9}
    path.write_text(json.dumps({"r1": r1, "r5": 0.5, "r10": 0.7, "hit30": 1.0, **counts}))
    return path


def test_summary_rows_carry_the_metrics_and_the_denominator(tmp_path):
    job = stages.DialogSummary(
        metrics=[_metrics(tmp_path / "a.json", 0.1), _metrics(tmp_path / "b.json", 0.3)],
        methods=["zero_shot", "finetuned"],
        encoder="tiny",
        llm="tiny_lm",
        config_hash="abc",
        title="t",
        summary=tmp_path / "s.json",
        plot=tmp_path / "s.png",
    )
    job.run()
    rows = read_json(job.summary)["rows"]
    assert [r["method"] for r in rows] == ["zero_shot", "finetuned"]
    assert rows[1]["r1"] == 0.3 and rows[1]["n_excluded"] == 1 and rows[0]["config_hash"] == "abc"
    assert job.plot.read_bytes()[:4] == b"\x89PNG"
    (tmp_path / "a.json").write_text("{}")
    with pytest.raises(CrossmodalError, match="not a dialog-eval output"):
        job.run()
