"""Safe archive extraction: nothing lands outside the target, nothing half-extracted.

Every entry is checked before any byte is written: absolute paths, ``..`` components, links and
device files are refused. Entries are extracted into a temporary folder inside the target and
moved into place only after the whole archive has been read, so a truncated archive leaves the
target exactly as it was.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from crossmodal.errors import CorruptArchiveError, UnsafeArchiveError


def _check_member_name(archive: Path, name: str) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise UnsafeArchiveError(
            f"{archive}: entry {name!r} would land outside the target folder; refusing to extract"
        )


def _extract_zip(archive: Path, tmp: Path) -> list[str]:
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                _check_member_name(archive, info.filename)
                mode = (info.external_attr >> 16) & 0o170000
                if mode == 0o120000:
                    raise UnsafeArchiveError(f"{archive}: entry {info.filename!r} is a symlink")
            for info in infos:
                zf.extract(info, tmp)
            return [i.filename for i in infos]
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        if isinstance(exc, UnsafeArchiveError):
            raise
        raise CorruptArchiveError(f"{archive}: truncated or corrupt zip ({exc})") from exc


def _extract_tar(archive: Path, tmp: Path) -> list[str]:
    try:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()  # reads the whole archive: detects truncation up front
            for m in members:
                _check_member_name(archive, m.name)
                if not (m.isfile() or m.isdir()):
                    raise UnsafeArchiveError(
                        f"{archive}: entry {m.name!r} is a link or device; refusing to extract"
                    )
            tf.extractall(tmp, members=members, filter="data")
            return [m.name for m in members]
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile) as exc:
        raise CorruptArchiveError(f"{archive}: truncated or corrupt tar ({exc})") from exc


def safe_extract(archive: str | Path, target: str | Path) -> list[Path]:
    """Extract ``archive`` (zip, tar, tar.gz) into ``target``; return the top-level paths made."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, tmp)
        elif archive.name.endswith((".tar", ".tar.gz", ".tgz")) or tarfile.is_tarfile(archive):
            _extract_tar(archive, tmp)
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
