"""Atomic file writes and Parquet provenance shared by every stage.

Every output is written to a temporary sibling and renamed into place, so a crash never leaves a
half-written file that Snakemake (or a reader) could mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crossmodal import __version__

PROVENANCE_KEY = b"crossmodal"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically with sorted keys, so equal content gives equal bytes."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON, turning a parse error into an error that names the file."""
    from crossmodal.errors import DataFormatError

    path = Path(path)
    try:
        with path.open("rb") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: malformed JSON ({exc})") from exc


def with_provenance(schema: pa.Schema, provenance: dict[str, Any]) -> pa.Schema:
    """Attach provenance (always including the package version) to a Parquet schema."""
    meta = dict(schema.metadata or {})
    record = {"package_version": __version__, **provenance}
    meta[PROVENANCE_KEY] = json.dumps(record, sort_keys=True).encode()
    return schema.with_metadata(meta)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the provenance record stored in a Parquet file's schema metadata."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def write_table(
    path: str | os.PathLike[str], table: pa.Table, provenance: dict[str, Any] | None = None
) -> None:
    """Write a Parquet table atomically, with provenance, deterministically (no timestamps)."""
    if provenance is not None:
        table = table.replace_schema_metadata(with_provenance(table.schema, provenance).metadata)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def texts_by_image(
    path: str | os.PathLike[str], column: str, order_by: str | None = None
) -> dict[int, list[str]]:
    """image_id -> the image's values of ``column``, in file order or sorted by ``order_by``
    (captions of a collection, descriptions of a describe stage by loop)."""
    columns = ["image_id", column] + ([order_by] if order_by else [])
    table = pq.read_table(path, columns=columns)
    if order_by:
        table = table.sort_by([("image_id", "ascending"), (order_by, "ascending")])
    out: dict[int, list[str]] = {}
    for image_id, value in zip(
        table.column("image_id").to_pylist(), table.column(column).to_pylist(), strict=True
    ):
        out.setdefault(image_id, []).append(value)
    return out
