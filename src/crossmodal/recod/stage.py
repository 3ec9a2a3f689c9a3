"""The describe stage: files in, descriptions Parquet + ledger + seed-format JSON out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crossmodal.errors import CrossmodalError
from crossmodal.generation.journal import JournaledGenerator
from crossmodal.io import texts_by_image, write_json, write_table
from crossmodal.recod.loop import (
    METHODS,
    DescribeSettings,
    DescriptionRow,
    describe_base,
    describe_recod,
)

log = logging.getLogger(__name__)

DESCRIPTIONS_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("loop", pa.int32()),
        ("text", pa.string()),
        ("retrieved_id", pa.int64()),
        ("score", pa.float32()),
        ("reference", pa.list_(pa.string())),
    ]
)


def target_images(
    images_parquet: str | Path, questions_parquet: str | Path | None, limit: int | None = None
) -> list[tuple[int, str]]:
    """(image_id, path) of the images the split's questions ask about, in image_id order."""
    images = pq.read_table(images_parquet, columns=["image_id", "path"]).to_pandas()
    if questions_parquet is not None:
        wanted = set(
            pq.read_table(questions_parquet, columns=["image_id"]).column("image_id").to_pylist()
        )
        missing = wanted - set(images["image_id"])
        if missing:
            raise CrossmodalError(
                f"{questions_parquet}: {len(missing)} question image(s) not in {images_parquet}, "
                f"e.g. {sorted(missing)[:5]}"
            )
        images = images[images["image_id"].isin(wanted)]
    images = images.sort_values("image_id")
    pairs = list(zip(images["image_id"].astype(int), images["path"], strict=True))
    return pairs[:limit] if limit else pairs


def rows_table(rows: list[DescriptionRow]) -> pa.Table:
    return pa.table(
        {
            "image_id": [r.image_id for r in rows],
            "loop": [r.loop for r in rows],
            "text": [r.text for r in rows],
            "retrieved_id": [r.retrieved_id for r in rows],
            "score": [r.score for r in rows],
            "reference": [r.reference for r in rows],
        },
        schema=DESCRIPTIONS_SCHEMA,
    )


def seed_layout(rows: list[DescriptionRow]) -> dict[str, Any]:
    """The reference code's JSON: per image, the list of descriptions in loop order."""
    out: dict[str, Any] = {}
    for r in sorted(rows, key=lambda r: (r.image_id, r.loop)):
        out.setdefault(str(r.image_id), {"new_captions": []})["new_captions"].append(r.text)
    return out


def run_describe(
    *,
    vlm_spec: dict[str, Any],
    settings: DescribeSettings,
    targets: list[tuple[int, str]],
    out: str | Path,
    journal_path: str | Path,
    ledger_path: str | Path,
    export_path: str | Path | None = None,
    retrieval: dict[str, Any] | None = None,
    chunk: int = 64,
) -> list[DescriptionRow]:
    """Run base or ReCoD descriptions for ``targets``; every request goes through the journal.

    ``retrieval`` (ReCoD only): encoder spec, index path, and the retrieval collection's
    images.parquet and captions.parquet.
    """
    if settings.method not in METHODS:
        raise CrossmodalError(f"method {settings.method!r} unknown; choose one of {METHODS}")
    with JournaledGenerator(vlm_spec, journal_path, chunk=chunk) as generate:
        if settings.method == "base":
            rows = describe_base(settings, targets, generate)
        else:
            if retrieval is None:
                raise CrossmodalError(f"method {settings.method} needs a retrieval index")
            rows = _run_recod(settings, targets, generate, retrieval)
        stats = generate.stats()
    empty = sum(1 for r in rows if not r.text.strip())
    provenance = {
        "stage": "describe",
        "vlm": {k: v for k, v in vlm_spec.items() if "key" not in k.lower()},
        "settings": settings.__dict__,
        "targets": len(targets),
        "empty_descriptions": empty,
    }
    write_table(out, rows_table(rows), provenance)
    write_json(ledger_path, {**stats, "empty_descriptions": empty})
    if export_path:
        write_json(export_path, seed_layout(rows))
    if empty:
        log.warning(
            "%d of %d descriptions are empty after clean-up (see %s)", empty, len(rows), out
        )
    return rows


def _run_recod(settings, targets, generate, retrieval: dict[str, Any]):
    from crossmodal.encoders import build_encoder
    from crossmodal.index import load_index
    from crossmodal.recod.retrieval import retrieve

    encoder = build_encoder(retrieval["encoder_spec"], device=retrieval.get("device", "auto"))
    index = load_index(retrieval["index"])
    captions = texts_by_image(retrieval["captions"], "caption")
    imgs = pq.read_table(retrieval["images"], columns=["image_id", "path"]).to_pandas()
    paths = dict(zip(imgs["image_id"].astype(int), imgs["path"], strict=True))
    return describe_recod(
        settings,
        targets,
        generate,
        lambda descs, exclude: retrieve(encoder, index, descs, exclude),
        captions,
        paths,
    )
