"""The committed download manifest, plus checksums recorded on first verified download.

An entry of ``files`` holds ``url`` and, where known, ``size``, ``md5``, ``sha256``; optional
sanity bounds for files that publish no checksum: ``min_size`` (bytes a genuine file has at
least) and ``max_extracted_bytes`` (the most an archive may extract to, see
``extract.safe_extract``). A file without a published sha256 gets one recorded in
``recorded-checksums.json`` beside the manifest on its first download that passed every check;
later downloads must match it. A wrong recording is reset by removing its entry from that file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crossmodal.data.download import RemoteFile
from crossmodal.errors import DataFormatError
from crossmodal.io import read_json, write_json

RECORDED = "recorded-checksums.json"


def recorded_path(manifest: str | Path) -> Path:
    """The file of recorded checksums that belongs to ``manifest``."""
    return Path(manifest).parent / RECORDED


def load_remote(manifest: str | Path, name: str) -> RemoteFile:
    """The manifest entry for ``name``, with any recorded sha256/size filled in."""
    manifest = Path(manifest)
    entry = _entry(manifest, name)
    min_size = _optional_int(entry, "min_size", f"{manifest}: files[{name!r}]")
    recorded = _recorded(manifest).get(name, {})
    if not isinstance(recorded, dict):
        raise DataFormatError(
            f"{recorded_path(manifest)}: entry {name!r} must be an object "
            "{sha256, size}; remove it and rerun the download to record it again"
        )
    uses_recorded = "sha256" not in entry and "sha256" in recorded
    if uses_recorded and min_size is not None and int(recorded.get("size", min_size)) < min_size:
        raise DataFormatError(
            f"{recorded_path(manifest)}: the checksum recorded for {name!r} is of a "
            f"{recorded['size']}-byte file, below the manifest's min_size {min_size} (an error "
            "page was probably recorded); remove that entry and rerun the download"
        )
    return RemoteFile(
        name=name,
        url=entry["url"],
        size=entry.get("size", recorded.get("size") if uses_recorded else None),
        md5=entry.get("md5"),
        sha256=entry.get("sha256", recorded.get("sha256")),
        min_size=min_size,
        recorded_in=recorded_path(manifest) if uses_recorded else None,
    )


def extraction_limit(manifest: str | Path, name: str) -> int | None:
    """The manifest's ``max_extracted_bytes`` for archive ``name``; None when it gives none."""
    manifest = Path(manifest)
    return _optional_int(_entry(manifest, name), "max_extracted_bytes", f"{manifest}: {name}")


def _entry(manifest: Path, name: str) -> dict[str, Any]:
    data = read_json(manifest)
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, dict):
        raise DataFormatError(f"{manifest}: expected an object with a 'files' object")
    if name not in files:
        raise DataFormatError(f"{manifest}: no entry for {name!r}; known: {sorted(files)}")
    entry = files[name]
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
        raise DataFormatError(f"{manifest}: files[{name!r}] needs a 'url' string")
    return entry


def _optional_int(entry: dict[str, Any], key: str, where: str) -> int | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DataFormatError(f"{where}: {key!r} must be a whole number of bytes, got {value!r}")
    return value


def _recorded(manifest: Path) -> dict[str, dict]:
    path = recorded_path(manifest)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{path}: malformed JSON ({exc}); fix it, or delete it to record every checksum "
            "again on the next downloads"
        ) from exc
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected an object of {{name: {{sha256, size}}}}")
    return data


def record_first_download(manifest: str | Path, remote: RemoteFile, sha256: str, size: int) -> bool:
    """Pin a file that has no published checksum: store its sha256 and size. True if new.

    Call only with what ``download.fetch`` returned: it returns only files that passed the
    content checks and verification, so an error page is never recorded.
    """
    manifest = Path(manifest)
    if remote.sha256 is not None:
        return False
    recorded = _recorded(manifest)
    recorded[remote.name] = {"sha256": sha256, "size": size}
    write_json(recorded_path(manifest), recorded)
    return True
