"""The describe stage: one shard of targets -> descriptions Parquet + ledger; shards -> merged.

Targets are the images a split's questions ask about, in image_id order. An image the feature
stage could not read (listed in its skip report) cannot be described: it is left out, with the
reason, and so is every target beyond ``describe.limit``. The left-out images travel in the
table's provenance, so PICa and scoring drop exactly their questions and ``acc.json`` says how
many and why. Nothing is left out silently: a question image missing from the collection is an
error.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from crossmodal import stages
from crossmodal.errors import CrossmodalError
from crossmodal.generation.journal import JournaledGenerator
from crossmodal.io import read_json, read_provenance, texts_by_image, write_json, write_table
from crossmodal.recod.loop import (
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
# Ledger fields that add up across shards.
ADDITIVE = (
    "requests",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "sent",
    "answered_from_journal",
    "empty_answers",
    "empty_descriptions",
    "torn_journal_lines",
    "targets",
)


def select_targets(
    images_parquet: str | Path,
    questions_parquet: str | Path,
    skips_json: str | Path,
    limit: int | None,
) -> tuple[list[tuple[int, str]], dict[int, str]]:
    """(targets as (image_id, path) in image_id order, left-out image_id -> reason)."""
    images = pq.read_table(images_parquet, columns=["image_id", "path"]).to_pandas()
    wanted = set(
        pq.read_table(questions_parquet, columns=["image_id"]).column("image_id").to_pylist()
    )
    missing = wanted - set(images["image_id"])
    if missing:
        raise CrossmodalError(
            f"{questions_parquet}: {len(missing)} question image(s) not in {images_parquet}, "
            f"e.g. {sorted(missing)[:5]}: the questions and the image collection do not match"
        )
    skipped = {int(s["image_id"]): s["reason"] for s in read_json(skips_json)["skipped"]}
    left_out = {i: f"unreadable image: {skipped[i]}" for i in sorted(wanted & set(skipped))}
    images = images[images["image_id"].isin(wanted - set(skipped))].sort_values("image_id")
    targets = list(zip(images["image_id"].astype(int), images["path"], strict=True))
    if limit is not None:
        left_out.update({i: f"beyond describe.limit={limit}" for i, _ in targets[limit:]})
        targets = targets[:limit]
    return targets, dict(sorted(left_out.items()))


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


def seed_layout(table: pa.Table) -> dict[str, Any]:
    """The reference code's JSON: per image, the list of descriptions in loop order."""
    out: dict[str, Any] = {}
    ordered = table.sort_by([("image_id", "ascending"), ("loop", "ascending")])
    for image_id, text in zip(
        ordered.column("image_id").to_pylist(), ordered.column("text").to_pylist(), strict=True
    ):
        out.setdefault(str(image_id), {"new_captions": []})["new_captions"].append(text)
    return out


def left_out_images(descriptions: str | Path) -> dict[int, str]:
    """Images of a descriptions table's split that were not described, with the reason."""
    provenance = read_provenance(descriptions)
    if "left_out" not in provenance:
        raise CrossmodalError(
            f"{descriptions}: no record of the images left out (not written by the describe "
            "stage of this version); delete it and rerun"
        )
    return {int(k): v for k, v in provenance["left_out"].items()}


def run_describe_job(job: stages.Describe) -> list[DescriptionRow]:
    """Describe this job's shard of the targets; every request goes through the journal."""
    settings = DescribeSettings.from_dict(job.settings)
    if not 0 <= job.shard < job.shards:
        raise CrossmodalError(f"--shard {job.shard} is not in 0..{job.shards - 1}")
    targets, left_out = select_targets(job.images, job.questions, job.skips, job.limit)
    mine = targets[job.shard :: job.shards]
    own = f"shard{job.shard}of{job.shards}.jsonl"
    with JournaledGenerator(job.vlm, job.journal, own=own, chunk=job.chunk) as generate:
        if settings.method == "base":
            rows = describe_base(settings, mine, generate)
        else:
            rows = _run_recod(settings, mine, generate, job)
        stats = generate.stats()
    empty = sum(1 for r in rows if not r.text.strip())
    provenance = {
        "stage": "describe",
        "vlm": job.vlm,
        "settings": job.settings,
        "shard": [job.shard, job.shards],
        "targets": len(mine),
        "left_out": {str(k): v for k, v in left_out.items()},
        "empty_descriptions": empty,
    }
    write_table(job.table, rows_table(rows), provenance)
    write_json(job.ledger, {**stats, "targets": len(mine), "empty_descriptions": empty})
    if left_out:
        log.warning("%d target image(s) left out (see the table's provenance)", len(left_out))
    if empty:
        log.warning("%d of %d descriptions are empty after clean-up", empty, len(rows))
    log.info("%d descriptions of %d targets -> %s", len(rows), len(mine), job.table)
    return rows


def _run_recod(settings: DescribeSettings, targets, generate, job: stages.Describe):
    from crossmodal.encoders import build_encoder
    from crossmodal.index import load_index
    from crossmodal.recod.retrieval import retrieve

    needed = {
        "--base": job.base,
        "--encoder": job.encoder,
        "--index": job.index,
        "--retrieval-images": job.retrieval_images,
        "--retrieval-captions": job.retrieval_captions,
    }
    missing = [flag for flag, value in needed.items() if value is None]
    if missing:
        raise CrossmodalError(f"method {settings.method} needs {', '.join(missing)}")
    encoder = build_encoder(job.encoder)
    index = load_index(job.index)
    captions = texts_by_image(job.retrieval_captions, "caption")
    imgs = pq.read_table(job.retrieval_images, columns=["image_id", "path"]).to_pandas()
    paths = dict(zip(imgs["image_id"].astype(int), imgs["path"], strict=True))
    first = {i: texts[0] for i, texts in texts_by_image(job.base, "text", "loop").items()}
    return describe_recod(
        settings,
        targets,
        generate,
        lambda descs, exclude: retrieve(encoder, index, descs, exclude),
        captions,
        paths,
        first,
    )


def run_merge_job(job: stages.MergeDescriptions) -> pa.Table:
    """One table, ledger and reference-layout export from a describe stage's shards."""
    if len(job.tables) != len(job.ledgers):
        raise CrossmodalError(f"{len(job.tables)} shard tables but {len(job.ledgers)} ledgers")
    provenances = [read_provenance(t) for t in job.tables]
    left_out = left_out_images(job.tables[0])
    for path, prov in zip(job.tables, provenances, strict=True):
        if left_out_images(path) != left_out or prov["settings"] != provenances[0]["settings"]:
            raise CrossmodalError(
                f"{path}: its settings or left-out images differ from {job.tables[0]}'s; "
                "the shards come from different runs: delete them and rerun"
            )
    table = pa.concat_tables([pq.read_table(t) for t in job.tables]).sort_by(
        [("image_id", "ascending"), ("loop", "ascending")]
    )
    ids = table.column("image_id").to_pylist()
    if len(set(zip(ids, table.column("loop").to_pylist(), strict=True))) != len(ids):
        raise CrossmodalError(f"shards {job.tables} overlap: an image is described twice")
    merged = {
        **{k: v for k, v in provenances[0].items() if k != "shard"},
        "shards": len(job.tables),
        "targets": sum(p["targets"] for p in provenances),
        "empty_descriptions": sum(p["empty_descriptions"] for p in provenances),
    }
    write_table(job.table, table.cast(DESCRIPTIONS_SCHEMA), merged)
    write_json(job.ledger, merge_ledgers([read_json(p) for p in job.ledgers]))
    write_json(job.export, seed_layout(table))
    return table


def merge_ledgers(ledgers: list[dict[str, Any]]) -> dict[str, Any]:
    """Shards' ledgers added up (the model, prices and identity are the same in each)."""
    out = dict(ledgers[0])
    for key in ADDITIVE:
        if key in out:
            out[key] = sum(ledger[key] for ledger in ledgers)
    out["sampling_sent"] = _merge_sampling([ledger["sampling_sent"] for ledger in ledgers])
    out["cost_usd"] = round(out["cost_usd"], 6)
    out["shards"] = len(ledgers)
    return out


def _merge_sampling(parts: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Shards' records of the sampling they sent: request counts added, ranges widened."""
    merged: dict[str, dict[str, float]] = {}
    for part in parts:
        for name, seen in part.items():
            into = merged.setdefault(name, {"requests": 0, "min": seen["min"], "max": seen["max"]})
            into["requests"] += seen["requests"]
            into["min"], into["max"] = min(into["min"], seen["min"]), max(into["max"], seen["max"])
    return dict(sorted(merged.items()))
