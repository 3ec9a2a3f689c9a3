"""Safe extraction: traversal refused, truncated archives rejected, nothing half-extracted."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from crossmodal.data.extract import safe_extract
from crossmodal.errors import CorruptArchiveError, UnsafeArchiveError


def make_zip(path, entries: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


def make_tar(path, entries: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_zip_extracts_and_merges_into_existing_folder(tmp_path):
    a, b = tmp_path / "a.zip", tmp_path / "b.zip"
    make_zip(a, {"annotations/captions.json": b"{}", "train/1.jpg": b"x"})
    make_zip(b, {"annotations/instances.json": b"[]"})
    target = tmp_path / "out"
    safe_extract(a, target)
    safe_extract(b, target)
    assert (target / "annotations" / "captions.json").read_bytes() == b"{}"
    assert (target / "annotations" / "instances.json").read_bytes() == b"[]"
    assert (target / "train" / "1.jpg").read_bytes() == b"x"
    assert not [p for p in target.iterdir() if p.name.startswith(".extract-")]


@pytest.mark.parametrize("maker,suffix", [(make_zip, ".zip"), (make_tar, ".tar.gz")])
@pytest.mark.parametrize("evil", ["../escape.txt", "ok/../../escape.txt", "/abs/escape.txt"])
def test_entry_outside_target_is_refused(tmp_path, maker, suffix, evil):
    archive = tmp_path / f"evil{suffix}"
    maker(archive, {"fine.txt": b"1", evil: b"pwned"})
    target = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeArchiveError, match="outside the target"):
        safe_extract(archive, target)
    assert not (tmp_path / "deep" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()
    assert not (target / "fine.txt").exists()  # refused before anything was written


def test_tar_symlink_is_refused(tmp_path):
    archive = tmp_path / "link.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="link"):
        safe_extract(archive, tmp_path / "out")


@pytest.mark.parametrize("maker,suffix", [(make_zip, ".zip"), (make_tar, ".tar.gz")])
def test_truncated_archive_leaves_target_untouched(tmp_path, maker, suffix):
    archive = tmp_path / f"full{suffix}"
    maker(archive, {f"dir/file{i}.bin": bytes(range(256)) * 400 for i in range(20)})
    data = archive.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("before")
    with pytest.raises(CorruptArchiveError, match="cut"):
        safe_extract(cut, target)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
