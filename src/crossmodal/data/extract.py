"""Safe archive extraction: nothing lands outside the target, nothing half-extracted, no bombs.

Every entry is checked before any byte is written: absolute paths, ``..`` components, links,
device files and entries that appear twice (the second would silently overwrite the first) are
refused. The total size is capped: the sizes the archive declares are summed and checked against
``max_bytes`` (and the free disk space) up front, and the bytes actually written are counted as
they are written, so an archive whose headers understate its content cannot get past the cap
either. Entries are extracted into a temporary folder inside the target and moved into place
only after the whole archive has been read, so a truncated or refused archive leaves the target
exactly as it was.

Default cap, when the caller passes none (the pipeline passes the manifest's
``max_extracted_bytes`` when it gives one): 100 times the archive's size (genuine data sets
expand far less: JPEG zips about 1x, JSON zips 5 to 20x), at least 64 MiB so tiny archives are
never refused, at most 1 TiB.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import IO

from crossmodal.errors import CorruptArchiveError, UnsafeArchiveError

DEFAULT_RATIO = 100
DEFAULT_FLOOR = 64 << 20
DEFAULT_CAP = 1 << 40
_COPY_CHUNK = 1 << 20


class ArchiveTooLargeError(UnsafeArchiveError):
    """An archive would extract to more bytes than the limit (a zip bomb, or a wrong file)."""


def default_limit(archive: Path) -> int:
    """The cap used when none is given: 100x the archive size, within [64 MiB, 1 TiB]."""
    return min(DEFAULT_CAP, max(DEFAULT_FLOOR, DEFAULT_RATIO * archive.stat().st_size))


def _human(n: int) -> str:
    """Bytes in binary units, for messages."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


class _Budget:
    """Counts bytes written against the limit; raises as soon as it is exceeded."""

    def __init__(self, archive: Path, limit: int, given: bool) -> None:
        self.archive, self.limit, self.given, self.written = archive, limit, given, 0

    def refuse(self, amount: int, what: str) -> ArchiveTooLargeError:
        source = (
            "max_bytes"
            if self.given
            else f"the default, {DEFAULT_RATIO}x the archive size within "
            f"[{_human(DEFAULT_FLOOR)}, {_human(DEFAULT_CAP)}]"
        )
        return ArchiveTooLargeError(
            f"{self.archive}: {what} {_human(amount)}, more than the limit of "
            f"{_human(self.limit)} ({self.limit} bytes; {source}); refusing to extract (a zip "
            "bomb or the wrong file?). If the archive is genuine, raise the limit: "
            "'max_extracted_bytes' in its download-manifest entry (max_bytes=... in Python)."
        )

    def check_declared(self, total: int, target: Path) -> None:
        if total > self.limit:
            raise self.refuse(total, "its entries declare")
        free = shutil.disk_usage(target).free
        if total > free:
            raise ArchiveTooLargeError(
                f"{self.archive}: its entries declare {_human(total)}, but only {_human(free)} "
                f"is free at {target}; free some space (or extract elsewhere) and rerun"
            )

    def copy(self, src: IO[bytes], dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with dest.open("wb") as out:
            for block in iter(lambda: src.read(_COPY_CHUNK), b""):
                self.written += len(block)
                if self.written > self.limit:
                    raise self.refuse(self.written, "writing reached")
                out.write(block)


def _member_path(archive: Path, name: str) -> PurePosixPath:
    """The entry's path relative to the target; refuse anything that would land outside."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise UnsafeArchiveError(
            f"{archive}: entry {name!r} would land outside the target folder; refusing to extract"
        )
    return pure


def _check_member_name(archive: Path, name: str) -> None:
    _member_path(archive, name)


def _refuse_duplicates(archive: Path, entries: Iterable[tuple[str, bool]]) -> None:
    """``entries``: (name, is_dir). A path given twice, where either is a file, is refused:
    the second copy would silently overwrite the first."""
    seen: dict[PurePosixPath, tuple[str, bool]] = {}
    for name, is_dir in entries:
        key = _member_path(archive, name)
        if key in seen and not (is_dir and seen[key][1]):
            raise UnsafeArchiveError(
                f"{archive}: entry {name!r} appears twice (also as {seen[key][0]!r}); the "
                "second would overwrite the first, so the archive is refused: download it "
                "again or get a correct copy"
            )
        seen[key] = (name, is_dir)


def _extract_zip(archive: Path, tmp: Path, budget: _Budget) -> list[str]:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member_name(archive, info.filename)
                mode = (info.external_attr >> 16) & 0o170000
                if mode == 0o120000:
                    raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} is a symlink")
            _refuse_duplicates(archive, ((i.filename, i.is_dir()) for i in infos))
            budget.check_declared(sum(i.file_size for i in infos), tmp)
            for info in infos:
                dest = tmp / _member_path(archive, info.filename)
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                with zf.open(info) as src:
                    budget.copy(src, dest)
            return [i.filename for i in infos]
    except UnsafeArchiveError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
        # RuntimeError: encrypted entry; NotImplementedError: unsupported compression method
        raise CorruptArchiveError(f"{archive}: truncated or corrupt zip ({exc})") from exc


def _extract_tar(archive: Path, tmp: Path, budget: _Budget) -> list[str]:
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()  # reads the whole archive: detects truncation up front
            for m in members:
                _check_member_name(archive, m.name)
                if not (m.isfile() or m.isdir()):
                    raise UnsafeArchiveError(
                        f"{archive}: entry {m.name!r} is a link or device; refusing to extract"
                    )
            _refuse_duplicates(archive, ((m.name, m.isdir()) for m in members))
            budget.check_declared(sum(m.size for m in members if m.isfile()), tmp)
            for m in members:
                dest = tmp / _member_path(archive, m.name)
                if m.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                src = tf.extractfile(m)
                if src is None:
                    raise CorruptArchiveError(f"{archive}: entry {m.name!r} has no data")
                with src:
                    budget.copy(src, dest)
            return [m.name for m in members]
    except UnsafeArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise CorruptArchiveError(f"{archive}: truncated or corrupt tar ({exc})") from exc


def safe_extract(
    archive: str | Path, target: str | Path, *, max_bytes: int | None = None
) -> list[Path]:
    """Extract ``archive`` (zip, tar, tar.gz) into ``target``; return the top-level paths made.

    ``max_bytes`` caps the total extracted size (None: see ``default_limit``).
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise CorruptArchiveError(f"{archive}: no such file")
    budget = _Budget(
        archive, default_limit(archive) if max_bytes is None else max_bytes, max_bytes is not None
    )
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp, budget)
        elif archive.name.endswith((".tar", ".tar.gz", ".tgz")) or tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp, budget)
        elif archive.suffix == ".zip":
            raise CorruptArchiveError(f"{archive}: not a readable zip (truncated download?)")
        else:
            raise CorruptArchiveError(f"{archive}: unknown archive format")
        placed = []
        for entry in sorted(tmp.iterdir()):
            dest = target / entry.name
            if dest.is_dir() and entry.is_dir():
                _merge_dirs(entry, dest)
            else:
                if dest.exists():
                    shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
                entry.replace(dest)
            placed.append(dest)
        return placed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge_dirs(src: Path, dest: Path) -> None:
    """Move the contents of ``src`` into an existing ``dest`` (two zips sharing a folder)."""
    for entry in src.iterdir():
        target = dest / entry.name
        if entry.is_dir() and target.is_dir():
            _merge_dirs(entry, target)
        else:
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            entry.replace(target)
