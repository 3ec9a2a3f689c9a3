"""PhotoChat preparation: shards -> dialogues; photos fetched with retries, dead ones listed."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from crossmodal import stages
from crossmodal.dialog.data import (
    FetchSettings,
    available_photos,
    excluded_dialogues,
    fetch_photos,
    mirror_photos,
    photo_id_of,
    read_shards,
    shard_names,
    shard_url,
    status_summary,
)
from crossmodal.errors import DataFormatError
from crossmodal.io import read_provenance

FAST = FetchSettings(retries=2, timeout=5.0, backoff=0.0, workers=4)


def _jpeg(colour=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="JPEG")
    return buf.getvalue()


def _dialogue(i: int, url: str, shared: bool = True) -> dict:
    turns = [
        {"message": f"hello {i}", "share_photo": False, "user_id": 1},
        {"message": "see my photo", "share_photo": False, "user_id": 0},
        {"message": "", "share_photo": shared, "user_id": 0},
        {"message": "nice", "share_photo": False, "user_id": 1},
    ]
    return {
        "dialogue": turns,
        "dialogue_id": i,
        "photo_description": f"Objects in the photo: Thing{i}",
        "photo_url": url,
    }


def test_reference_shard_names():
    assert shard_names("test") == ["test/test_00.json", "test/test_01.json"]
    assert len(shard_names("train")) == 21 and shard_names("train")[-1] == "train/train_20.json"
    assert shard_url("dev/dev_01.json").endswith("multimodalchat/photochat/dev/dev_01.json")
    assert photo_id_of("https://farm7.staticflickr.com/3948/15705071685_5d905852c2_o.jpg") == (
        "15705071685_5d905852c2_o"
    )


def test_shards_to_rows_turns_before_the_photo(tmp_path):
    a, b = tmp_path / "test_00.json", tmp_path / "test_01.json"
    a.write_text(
        json.dumps([_dialogue(1, "http://x/p/1_a_o.jpg"), _dialogue(0, "http://x/0_b.jpg")])
    )
    b.write_text(json.dumps([_dialogue(2, "http://x/2_c.jpg", shared=False)]))
    table, left_out = read_shards([a, b], "test")
    assert table.column("dialogue_id").to_pylist() == [0, 1]
    assert table.column("turns").to_pylist()[0] == ["User 1: hello 0", "User 0: see my photo"]
    assert table.column("photo_id").to_pylist() == ["0_b", "1_a_o"]
    assert left_out == {"2": "no turn shares the photo"}  # listed, not silently dropped


def test_overlapping_shards_and_bad_entries_are_errors(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([_dialogue(1, "http://x/1.jpg"), _dialogue(1, "http://x/2.jpg")]))
    with pytest.raises(DataFormatError, match="dialogue_id 1 also in"):
        read_shards([a], "test")
    a.write_text(json.dumps([{"dialogue": []}]))
    with pytest.raises(DataFormatError, match="entry 0: expected an object with keys"):
        read_shards([a], "test")


def test_fetch_lists_dead_links_and_non_images(tmp_path, file_server):
    file_server.files = {"good.jpg": _jpeg(), "html.jpg": b"<html>"}
    photos = {
        "dead": file_server.url + "gone.jpg",  # 404
        "good": file_server.url + "good.jpg",
        "html": file_server.url + "html.jpg",  # not an image
    }
    statuses = {s.photo_id: s for s in fetch_photos(photos, tmp_path / "photos", FAST)}
    assert statuses["good"].status == "ok" and Path(statuses["good"].path).is_file()
    assert statuses["dead"].status == "failed" and statuses["dead"].error == "HTTP 404"
    assert statuses["dead"].attempts == 1  # a 404 is final: no retries
    assert statuses["html"].status == "failed" and "not an image" in statuses["html"].error
    summary = status_summary(list(statuses.values()))
    assert summary["counts"] == {"ok": 1, "failed": 2}
    assert sorted(summary["failed"]) == ["dead", "html"]
    # a second run keeps what it has and tries the dead ones again
    again = {s.photo_id: s for s in fetch_photos(photos, tmp_path / "photos", FAST)}
    assert again["good"].status == "cached" and again["dead"].status == "failed"


def test_cut_transfer_is_retried(tmp_path, file_server):
    file_server.files = {"cut.jpg": _jpeg()}
    file_server.cut_after, file_server.cuts_left = 10, 1
    (status,) = fetch_photos({"cut": file_server.url + "cut.jpg"}, tmp_path, FAST)
    assert (status.status, status.attempts) == ("ok", 2)
    with Image.open(status.path) as im:
        assert im.size == (8, 8)


def test_mirror_lists_missing_photos(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.png").write_bytes(b"x")
    statuses = mirror_photos({"a": "http://x/a.jpg", "b": "http://x/b.jpg"}, tmp_path / "m")
    assert [(s.photo_id, s.status) for s in statuses] == [("a", "mirror"), ("b", "failed")]
    with pytest.raises(DataFormatError, match="data.mirrors.photochat"):
        mirror_photos({}, tmp_path / "nowhere")


def test_stages_exclude_the_dialogue_of_a_dead_photo_with_a_count(tmp_path, file_server):
    file_server.files = {"1.jpg": _jpeg(), "2.jpg": _jpeg((0, 0, 200))}
    shard = tmp_path / "test_00.json"
    shard.write_text(json.dumps([_dialogue(i, f"{file_server.url}{i}.jpg") for i in (1, 2, 3)]))
    dialogues = tmp_path / "dialogues.parquet"
    stages.DialogPrepare(shards=[shard], split="test", dialogues=dialogues).run()
    photos = tmp_path / "photos.parquet"
    stages.DialogPhotos(
        dialogues=[dialogues],
        photos=photos,
        folder=tmp_path / "img",
        fetch={"retries": 1, "timeout": 5.0, "backoff": 0.0, "workers": 2, "max_bytes": 1 << 20},
        mirror=None,
    ).run()
    prov = read_provenance(photos)
    assert prov["counts"] == {"ok": 2, "failed": 1} and list(prov["failed"]) == ["3"]
    ok, failed = available_photos(photos)
    assert sorted(ok) == ["1", "2"] and failed == {"3": "HTTP 404"}
    excluded = excluded_dialogues(pq.read_table(dialogues), failed)
    assert excluded == {"3": "photo 3 unavailable: HTTP 404"}
