"""Dialogue retrieval stages: descriptors (through the generation layer), embeddings, search.

* ``dialog-describe``: every dialogue of a split through :class:`JournaledGenerator` (journal,
  ledger and cost like ReCoD's describe stage); parsed strictly, repaired once, and the fallbacks
  counted and listed in the table's provenance and the ledger.
* ``dialog-embed``: the descriptor texts of the test dialogues whose photo could be had, and every
  available candidate photo, through one CLIP model: the encoder entry's weights (zero-shot) or
  the fine-tuned ones. Embeddings are stored raw; the search decides how to compare them.
* ``dialog-search``: a FAISS index of the candidates (inner product on L2-normalised embeddings,
  or Euclidean distance on raw ones, the course solution's choice), ``predictions.csv`` with the
  top-k photo ids per dialogue, and the exact score matrix with its id files for ``dialog-eval``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from crossmodal.dialog.data import available_photos, excluded_dialogues, read_photo
from crossmodal.dialog.descriptor import DescriptorSettings, describe_dialogues
from crossmodal.errors import CrossmodalError, DataFormatError
from crossmodal.io import atomic_path, read_provenance, write_json, write_table

log = logging.getLogger(__name__)

DESCRIPTORS_SCHEMA = pa.schema(
    [
        ("dialogue_id", pa.int64()),
        ("status", pa.string()),  # ok | repaired | fallback
        ("values", pa.string()),  # the five values as a JSON object ("" values for a fallback)
        ("text", pa.string()),  # what CLIP reads
        ("answer", pa.string()),  # the last LLM answer
        ("problem", pa.string()),
    ]
)
METRICS = ("ip", "l2")


# --- descriptors ---------------------------------------------------------------------------------


def run_describe(job) -> pa.Table:
    """The ``dialog-describe`` stage: descriptors of every dialogue of one split."""
    from crossmodal.generation.journal import JournaledGenerator

    table = pq.read_table(job.dialogues, columns=["dialogue_id", "turns"]).to_pylist()
    dialogues = [(int(r["dialogue_id"]), r["turns"]) for r in table]
    settings = DescriptorSettings(**job.settings)
    with JournaledGenerator(job.llm, job.journal, own="journal.jsonl", chunk=job.chunk) as gen:
        rows, report = describe_dialogues(dialogues, gen, settings)
        stats = gen.stats()
    out = pa.table(
        {
            "dialogue_id": [r.dialogue_id for r in rows],
            "status": [r.status for r in rows],
            "values": [json.dumps(r.values, sort_keys=True) for r in rows],
            "text": [r.text for r in rows],
            "answer": [r.answer for r in rows],
            "problem": [r.problem for r in rows],
        },
        schema=DESCRIPTORS_SCHEMA,
    )
    provenance = {"stage": "dialog-describe", "llm": job.llm, "settings": job.settings}
    write_table(job.descriptors, out, {**provenance, **report.as_dict()})
    write_json(job.ledger, {**stats, **report.as_dict(), "dialogues": len(rows)})
    if report.fallback:
        log.warning(
            "%d of %d descriptors fell back to the raw dialogue (listed in %s)",
            report.fallback,
            len(rows),
            job.ledger,
        )
    return out


# --- embeddings ----------------------------------------------------------------------------------


def _load_model(job):
    from crossmodal.dialog.train import load_finetuned
    from crossmodal.encoders.base import resolve_device
    from crossmodal.encoders.registry import load_trainable_clip

    device = str(resolve_device(job.device))
    if job.model is None:
        clip = load_trainable_clip(job.encoder, device=device)
        clip.model.eval()
        return clip
    clip = load_finetuned(job.model, device=device)
    if clip.spec.get("model") != job.encoder.get("model") or clip.spec.get(
        "backend"
    ) != job.encoder.get("backend"):
        raise CrossmodalError(
            f"{job.model}: fine-tuned from {clip.spec}, not from the encoder entry {job.encoder}; "
            "embed with the entry the model was trained from"
        )
    return clip


def _batched(
    items: Sequence[Any], batch_size: int, encode: Callable[[Sequence[Any]], torch.Tensor]
) -> np.ndarray:
    out = [
        encode(items[i : i + batch_size]).float().cpu().numpy()
        for i in range(0, len(items), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def embed(clip, texts: Sequence[str], paths: Sequence[str], batch_size: int):
    """(text embeddings, image embeddings), raw (not normalised), float32."""
    device = next(clip.model.parameters()).device
    cuda = device.type == "cuda"
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        text = _batched(
            list(texts),
            batch_size,
            lambda b: clip.model.encode_text(clip.tokenizer(list(b)).to(device)),
        )
        image = _batched(
            list(paths),
            batch_size,
            lambda b: clip.model.encode_image(
                torch.stack([clip.preprocess(read_photo(p)) for p in b]).to(device)
            ),
        )
    return text, image


def _embedding_column(vectors: np.ndarray) -> pa.Array:
    flat = pa.array(vectors.astype(np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])


def read_vectors(path: Path, id_field: str) -> tuple[list, np.ndarray, pa.Table]:
    table = pq.read_table(path)
    emb = table.column("embedding").combine_chunks()
    vectors = emb.flatten().to_numpy().reshape(len(table), emb.type.list_size)
    return table.column(id_field).to_pylist(), vectors.astype(np.float32), table


def run_embed(job) -> tuple[int, int]:
    """The ``dialog-embed`` stage: usable test dialogues and available candidate photos."""
    dialogues = pq.read_table(job.dialogues, columns=["dialogue_id", "photo_id"])
    ok, failed = available_photos(job.photos)
    excluded = excluded_dialogues(dialogues, failed)
    desc = pq.read_table(job.descriptors, columns=["dialogue_id", "text"]).to_pylist()
    text_of = {int(r["dialogue_id"]): r["text"] for r in desc}
    left_out = read_provenance(job.dialogues).get("left_out")
    if left_out is None:
        raise DataFormatError(
            f"{job.dialogues}: no record of the dialogues left out (not written by "
            "dialog-prepare of this version); delete it and rerun"
        )
    ids, truth = [], []
    for d, photo in zip(
        dialogues.column("dialogue_id").to_pylist(),
        dialogues.column("photo_id").to_pylist(),
        strict=True,
    ):
        if str(d) in excluded:
            continue
        if d not in text_of or photo not in ok:
            raise DataFormatError(
                f"dialogue {d} of {job.dialogues} has no descriptor in {job.descriptors} or no "
                f"status row in {job.photos}: rerun the describe and photo stages for this table"
            )
        ids.append(int(d))
        truth.append(photo)
    candidates = sorted(set(dialogues.column("photo_id").to_pylist()) & set(ok))
    excluded.update({d: f"not scored: {why}" for d, why in left_out.items()})
    clip = _load_model(job)
    text, image = embed(
        clip, [text_of[d] for d in ids], [ok[p] for p in candidates], job.batch_size
    )
    provenance = {
        "stage": "dialog-embed",
        "encoder": job.encoder,
        "model": str(job.model) if job.model else None,
        "excluded": excluded,
    }
    write_table(
        job.queries,
        pa.table({"dialogue_id": ids, "photo_id": truth, "embedding": _embedding_column(text)}),
        provenance,
    )
    write_table(
        job.candidates,
        pa.table({"photo_id": candidates, "embedding": _embedding_column(image)}),
        provenance,
    )
    log.info(
        "%d dialogues (%d excluded), %d candidates embedded",
        len(ids),
        len(excluded),
        len(candidates),
    )
    return len(ids), len(candidates)


# --- search --------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


def score_matrix(queries: np.ndarray, candidates: np.ndarray, metric: str) -> np.ndarray:
    """Exact scores, higher is better: cosine for ``ip``, minus the squared distance for ``l2``."""
    if metric == "ip":
        return _unit(queries) @ _unit(candidates).T
    sq = (queries**2).sum(1)[:, None] + (candidates**2).sum(1)[None, :] - 2 * queries @ candidates.T
    return -sq


def ranked(queries: np.ndarray, candidates: np.ndarray, metric: str, top: int):
    """The FAISS index of the candidates and the top-``top`` candidate rows of each query."""
    from crossmodal.index import IndexParams, build_index, search

    if metric not in METRICS:
        raise CrossmodalError(f"dialog.search.metric {metric!r}: choose one of {list(METRICS)}")
    q, c = (_unit(queries), _unit(candidates)) if metric == "ip" else (queries, candidates)
    index = build_index(c, np.arange(len(c)), IndexParams(kind="flat"), metric=metric)
    rows, _ = search(index, q, min(top, len(c)))
    return index, rows


def run_search(job) -> np.ndarray:
    """The ``dialog-search`` stage: index, score matrix, id files, predictions.csv."""
    from crossmodal.index import save_index

    dialogue_ids, q, _ = read_vectors(job.queries, "dialogue_id")
    photo_ids, c, _ = read_vectors(job.candidates, "photo_id")
    truth = pq.read_table(job.queries, columns=["photo_id"]).column("photo_id").to_pylist()
    index, rows = ranked(q, c, job.metric, job.top)
    save_index(
        index,
        job.index,
        {"metric": job.metric, "candidates": len(photo_ids), "queries": str(job.queries)},
    )
    scores = score_matrix(q, c, job.metric).astype(np.float32)
    with atomic_path(job.scores) as tmp, tmp.open("wb") as fh:
        np.save(fh, scores)
    write_json(job.candidate_ids, photo_ids)
    write_json(job.truth, truth)
    provenance = read_provenance(job.queries)
    if "excluded" not in provenance:
        raise DataFormatError(
            f"{job.queries}: no record of the dialogues left out (not written by dialog-embed "
            "of this version); delete it and rerun"
        )
    write_json(job.excluded, provenance["excluded"])
    k = rows.shape[1]
    with atomic_path(job.predictions) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["dialogue_id", *(f"rank_{i + 1}" for i in range(k))])
        for d, row in zip(dialogue_ids, rows, strict=True):
            writer.writerow([d, *(photo_ids[j] for j in row)])
    return rows
