"""The challenge's files -> the tables the compositional retrieval stages read.

The Rayan challenge (and the reference's ``RetrievalDataset``, RD:11-20) hands out a CSV with
the columns ``query_image, query_text, target_image`` (file names) and a folder of images.
``prepare-cir`` turns one split of that into

* ``queries.parquet``: ``query_id`` (the CSV row, 0-based), ``query_image_id``, ``query_text``
  (as written), ``target_image_id``;
* ``images.parquet`` in the shared layout (``image_id, path, width, height``,
  :data:`crossmodal.data.prepare.IMAGES_SCHEMA`): every image of the folder, ids given in
  sorted file-name order, so the same folder always gets the same ids;
* ``missing.json``: the images the CSV names that the folder lacks (or that cannot be read),
  each with the number of rows that name it, and the rows dropped for them.

A missing image is an error unless ``max_missing_fraction`` tolerates the share of rows it
drops: the reference would fail on the first such row inside training, hours in.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from crossmodal.errors import DataFormatError
from crossmodal.io import write_json, write_table

log = logging.getLogger(__name__)

CSV_COLUMNS = ("query_image", "query_text", "target_image")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def read_challenge_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a challenge CSV, checked: the three columns present, no empty cell."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in CSV_COLUMNS if c not in header]
            if missing:
                raise DataFormatError(
                    f"{path}: the CSV lacks the columns {missing} (it has {header}); the "
                    f"challenge layout is {', '.join(CSV_COLUMNS)}"
                )
            rows = [{c: (row[c] or "").strip() for c in CSV_COLUMNS} for row in reader]
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path}: no such CSV; check data.mirrors.cir") from exc
    for i, row in enumerate(rows):
        empty = [c for c in CSV_COLUMNS if not row[c]]
        if empty:
            raise DataFormatError(f"{path}: row {i} has empty {empty}: {row}")
    return rows


def _image_sizes(image_dir: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Width and height of every image file in the folder, and the files that cannot be read."""
    from PIL import Image

    if not image_dir.is_dir():
        raise DataFormatError(f"{image_dir}: no such image folder; check data.mirrors.cir")
    sizes, unreadable = {}, {}
    for p in sorted(image_dir.iterdir()):
        if not p.is_file() or p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            with Image.open(p) as img:
                sizes[p.name] = img.size
        except Exception as exc:  # PIL raises many types for a broken file
            unreadable[p.name] = f"unreadable ({type(exc).__name__}: {exc})"
    return sizes, unreadable


def prepare_cir(
    csv_path: str | Path,
    image_dir: str | Path,
    queries_out: str | Path,
    images_out: str | Path,
    missing_out: str | Path,
    *,
    max_missing_fraction: float,
) -> dict[str, Any]:
    """Write the three outputs (see the module docstring); return the missing-image report."""
    image_dir = Path(image_dir)
    rows = read_challenge_csv(csv_path)
    sizes, unreadable = _image_sizes(image_dir)
    names = sorted(sizes)
    image_id = {name: i for i, name in enumerate(names)}
    named = Counter(n for row in rows for n in {row["query_image"], row["target_image"]})
    missing = {name: count for name, count in sorted(named.items()) if name not in image_id}
    kept = [
        (i, row)
        for i, row in enumerate(rows)
        if row["query_image"] in image_id and row["target_image"] in image_id
    ]
    report = {
        "csv": str(csv_path),
        "image_dir": str(image_dir),
        "n_rows": len(rows),
        "n_kept": len(kept),
        "n_dropped": len(rows) - len(kept),
        "n_missing_images": len(missing),
        "missing": {
            n: {"rows": c, "reason": unreadable.get(n, "absent")} for n, c in missing.items()
        },
        "n_images": len(names),
        "max_missing_fraction": max_missing_fraction,
    }
    dropped = report["n_dropped"] / max(len(rows), 1)
    if dropped > max_missing_fraction or not kept:
        listed = ", ".join(f"{n} ({c} rows)" for n, c in list(missing.items())[:10])
        raise DataFormatError(
            f"{csv_path}: {len(missing)} images it names are missing from {image_dir} or "
            f"unreadable, dropping {report['n_dropped']} of {len(rows)} rows ({dropped:.1%}, "
            f"cir.data.max_missing_fraction is {max_missing_fraction:.1%}): {listed}. Put the "
            "images in place, or raise cir.data.max_missing_fraction to drop those rows"
        )
    for name, count in missing.items():
        log.warning("%s: %s names %s in %d rows: dropped", image_dir, csv_path, name, count)
    from crossmodal.data.prepare import IMAGES_SCHEMA

    images = pa.table(
        {
            "image_id": pa.array(range(len(names)), pa.int64()),
            "path": pa.array([str(image_dir / n) for n in names], pa.string()),
            "width": pa.array([sizes[n][0] for n in names], pa.int32()),
            "height": pa.array([sizes[n][1] for n in names], pa.int32()),
        },
        schema=IMAGES_SCHEMA,
    )
    queries = pa.table(
        {
            "query_id": pa.array([i for i, _ in kept], pa.int64()),
            "query_image_id": pa.array([image_id[r["query_image"]] for _, r in kept], pa.int64()),
            "query_text": pa.array([r["query_text"] for _, r in kept], pa.string()),
            "target_image_id": pa.array([image_id[r["target_image"]] for _, r in kept], pa.int64()),
        }
    )
    prov = {"stage": "prepare-cir", "csv": str(csv_path), "image_dir": str(image_dir)}
    write_table(images_out, images, prov)
    write_table(queries_out, queries, prov)
    write_json(missing_out, report)
    return report


def run_prepare_cir(job) -> dict[str, Any]:
    """The ``prepare-cir`` stage (a :class:`crossmodal.stages.PrepareCir` job)."""
    report = prepare_cir(
        job.csv,
        job.image_dir,
        job.queries,
        job.images,
        job.missing,
        max_missing_fraction=job.max_missing_fraction,
    )
    log.info(
        "%d queries (%d dropped), %d images -> %s",
        report["n_kept"],
        report["n_dropped"],
        report["n_images"],
        job.queries,
    )
    return report
