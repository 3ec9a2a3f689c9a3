"""Safe extraction: traversal refused, truncated archives rejected, nothing half-extracted."""

from __future__ import annotations

import io
import tarfile
import warnings
import zipfile

import pytest

from crossmodal.data.extract import ArchiveTooLargeError, _Budget, safe_extract
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


def test_duplicate_zip_entry_is_refused_naming_it(tmp_path):
    archive = tmp_path / "dup.zip"
    with zipfile.ZipFile(archive, "w") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns "Duplicate name"
        zf.writestr("annotations/answers.json", b"real answers")
        zf.writestr("annotations/answers.json", b"silently replaces them")
    target = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=r"entry 'annotations/answers.json' appears twice"):
        safe_extract(archive, target)
    assert list(target.iterdir()) == []


def test_duplicate_tar_file_is_refused_but_repeated_folders_are_fine(tmp_path):
    archive = tmp_path / "dup.tar.gz"
    make_tar(archive, {"a/x.txt": b"1", "./a/x.txt": b"2"})
    with pytest.raises(UnsafeArchiveError, match=r"entry './a/x.txt' appears twice"):
        safe_extract(archive, tmp_path / "out")
    ok = tmp_path / "ok.tar"
    with tarfile.open(ok, "w") as tf:
        for _ in range(2):
            tf.addfile(_dir_info("a"))
        info = tarfile.TarInfo("a/x.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"1"))
    safe_extract(ok, tmp_path / "out2")
    assert (tmp_path / "out2" / "a" / "x.txt").read_bytes() == b"1"


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info


def write_zeros_zip(path, entries: dict[str, int]) -> None:
    """A zip of all-zero entries, streamed in 1 MiB blocks (deflate shrinks them ~1000x)."""
    block = bytes(1 << 20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, size in entries.items():
            with zf.open(name, "w", force_zip64=True) as fh:
                for start in range(0, size, len(block)):
                    fh.write(block[: min(len(block), size - start)])


def test_zip_bomb_is_refused_against_max_bytes(tmp_path):
    archive = tmp_path / "bomb.zip"
    write_zeros_zip(archive, {f"z{i}.bin": 1 << 20 for i in range(3)})
    target = tmp_path / "out"
    with pytest.raises(ArchiveTooLargeError) as info:
        safe_extract(archive, target, max_bytes=2 << 20)
    msg = str(info.value)
    assert str(archive) in msg and "declare 3.0 MiB" in msg and "limit of 2.0 MiB" in msg
    assert "max_extracted_bytes" in msg
    assert list(target.iterdir()) == []
    placed = safe_extract(archive, target, max_bytes=3 << 20)  # the limit, exactly: fine
    assert [p.name for p in placed] == ["z0.bin", "z1.bin", "z2.bin"]


def test_zip_bomb_is_refused_by_the_default_limit(tmp_path):
    archive = tmp_path / "bomb.zip"
    write_zeros_zip(archive, {"zeros.bin": 100 << 20})  # ~100 kB on disk
    assert archive.stat().st_size * 100 < 64 << 20  # so the 64 MiB floor is the limit
    with pytest.raises(ArchiveTooLargeError, match=r"limit of 64.0 MiB .*the default, 100x"):
        safe_extract(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_understated_sizes_cannot_get_past_the_cap(tmp_path):
    """Central directory patched to claim 10 bytes for 4 MiB of data: nothing is placed."""
    archive = tmp_path / "liar.zip"
    write_zeros_zip(archive, {"zeros.bin": 4 << 20})
    data = bytearray(archive.read_bytes())
    central = data.rindex(b"PK\x01\x02")  # the central directory entry zipfile trusts
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")  # its uncompressed size
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as zf:
        assert zf.infolist()[0].file_size == 10
    target = tmp_path / "out"
    with pytest.raises((ArchiveTooLargeError, CorruptArchiveError)):
        safe_extract(archive, target, max_bytes=1 << 20)
    assert list(target.iterdir()) == []


def test_written_bytes_are_counted_against_the_limit(tmp_path):
    budget = _Budget(tmp_path / "a.zip", limit=3000, given=True)
    budget.copy(io.BytesIO(b"x" * 2000), tmp_path / "one")
    with pytest.raises(ArchiveTooLargeError, match="writing reached"):
        budget.copy(io.BytesIO(b"x" * 2000), tmp_path / "two")
