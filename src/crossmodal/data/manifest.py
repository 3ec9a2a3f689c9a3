"""The committed download manifest, plus checksums recorded on first verified download."""

from __future__ import annotations

import json
from pathlib import Path

from crossmodal.data.download import RemoteFile
from crossmodal.errors import DataFormatError
from crossmodal.io import read_json, write_json

RECORDED = "recorded-checksums.json"


def load_remote(manifest: str | Path, name: str) -> RemoteFile:
    """The manifest entry for ``name``, with any recorded sha256/size filled in."""
    manifest = Path(manifest)
    files = read_json(manifest).get("files", {})
    if name not in files:
        raise DataFormatError(f"{manifest}: no entry for {name!r}; known: {sorted(files)}")
    entry = dict(files[name])
    recorded = _recorded(manifest).get(name, {})
    return RemoteFile(
        name=name,
        url=entry["url"],
        size=entry.get("size", recorded.get("size")),
        md5=entry.get("md5"),
        sha256=entry.get("sha256", recorded.get("sha256")),
    )


def _recorded(manifest: Path) -> dict[str, dict]:
    path = manifest.parent / RECORDED
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: malformed JSON ({exc})") from exc


def record_first_download(manifest: str | Path, remote: RemoteFile, sha256: str, size: int) -> bool:
    """Pin a file that has no published checksum: store its sha256 and size. True if new."""
    manifest = Path(manifest)
    if remote.sha256 is not None:
        return False
    recorded = _recorded(manifest)
    recorded[remote.name] = {"sha256": sha256, "size": size}
    write_json(manifest.parent / RECORDED, recorded)
    return True
