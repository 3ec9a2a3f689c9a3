"""The compositional retrieval stages over files: parse, fine-tune, embed, evaluate.

Tables these stages read (the data preparation writes them):

* ``queries.parquet``: ``query_id`` (int64), ``query_image_id`` (int64), ``query_text``
  (string), ``target_image_id`` (int64): the challenge's ``query_image, query_text,
  target_image`` CSV with images named by id.
* ``images.parquet`` of the collection: ``image_id``, ``path`` (the shared layout).

Tables they write:

* ``edits.parquet`` (``cir-parse``): ``query_id``, ``words``, ``labels``, ``add``, ``remove``
  (lists of phrases) and the parser that made them.
* query and database embeddings in the shared features layout (``query_id`` / ``image_id``,
  ``embedding``, L2-normalised), so ``build-index`` indexes the database like any collection.
* ``metrics.json`` and ``rankings.parquet`` (``cir-eval``): top-1, R@5 and every query's
  ranked ids, for checking against another evaluator.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from crossmodal.cir.compose import (
    ComposeSettings,
    compose_queries,
    edit_sums,
    retrieval_metrics,
    unique_targets,
)
from crossmodal.cir.projection import (
    EditPairs,
    ProjectionSettings,
    load_projection,
    parse_fixed_edit,
    raw_image_embeddings,
    raw_text_embeddings,
    save_projection,
    split_pairs,
    train_projection,
)
from crossmodal.cir.tagger import PROMPT
from crossmodal.errors import CrossmodalError, DataFormatError
from crossmodal.io import write_json, write_table

log = logging.getLogger(__name__)

QUERY_COLUMNS = ("query_id", "query_image_id", "query_text", "target_image_id")
PARSERS = ("tagger", "fixed")
DATABASES = ("targets", "collection")


# --- reading the inputs ---------------------------------------------------------------------------


def read_queries(path: str | Path) -> dict[str, list]:
    """The query table's columns, checked: every column present, query ids unique."""
    table = pq.read_table(path)
    missing = [c for c in QUERY_COLUMNS if c not in table.column_names]
    if missing:
        raise DataFormatError(f"{path}: query table lacks the columns {missing}")
    cols = {c: table.column(c).to_pylist() for c in QUERY_COLUMNS}
    if len(set(cols["query_id"])) != len(cols["query_id"]):
        raise DataFormatError(f"{path}: query_id values repeat")
    return cols


def image_paths(images: str | Path, ids: list[int]) -> list[str]:
    """The path of each image id, from the collection's images.parquet; every id must exist."""
    table = pq.read_table(images, columns=["image_id", "path"])
    where = dict(
        zip(table.column("image_id").to_pylist(), table.column("path").to_pylist(), strict=True)
    )
    absent = sorted({i for i in ids if i not in where})
    if absent:
        raise DataFormatError(
            f"{images}: {len(absent)} images the queries name are not in the collection "
            f"(first: {absent[:5]}); prepare the collection from the same data"
        )
    return [where[i] for i in ids]


def read_edits(path: str | Path, query_ids: list[int]) -> tuple[list[list[str]], list[list[str]]]:
    """Add and remove phrases per query, in the order of ``query_ids``."""
    table = pq.read_table(path, columns=["query_id", "add", "remove"]).to_pylist()
    by_id = {row["query_id"]: row for row in table}
    absent = [q for q in query_ids if q not in by_id]
    if absent:
        raise DataFormatError(f"{path}: no edits for queries {absent[:5]}; rerun cir-parse")
    return [by_id[q]["add"] for q in query_ids], [by_id[q]["remove"] for q in query_ids]


def _prompts(phrases: list[list[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(PROMPT.format(p) for p in ps) for ps in phrases)


# --- cir-parse ------------------------------------------------------------------------------------


def run_parse(job) -> int:
    """The ``cir-parse`` stage: every query text's add and remove phrases, from the tagger or
    from the fixed ``add X and remove Y`` format the reference's training loop reads."""
    queries = read_queries(job.queries)
    texts = queries["query_text"]
    if job.parser not in PARSERS:
        raise CrossmodalError(f"--parser {job.parser!r}: choose one of {list(PARSERS)}")
    if job.parser == "fixed":
        rows = []
        for text in texts:
            add, remove = parse_fixed_edit(text)
            rows.append((text.split(), [], [add], [remove]))
    else:
        if job.tagger is None:
            raise CrossmodalError("cir-parse --parser tagger needs --tagger (config.json)")
        from crossmodal.cir.tagger import load_tagger, parse_edits
        from crossmodal.encoders.base import resolve_device

        tagger = load_tagger(Path(job.tagger).parent, device=str(resolve_device(job.device)))
        edits = parse_edits(tagger, texts, max_length=job.max_length)
        rows = [(list(e.words), list(e.labels), list(e.add), list(e.remove)) for e in edits]
    strings = pa.list_(pa.string())
    table = pa.table(
        {
            "query_id": pa.array(queries["query_id"], pa.int64()),
            "words": pa.array([r[0] for r in rows], strings),
            "labels": pa.array([r[1] for r in rows], strings),
            "add": pa.array([r[2] for r in rows], strings),
            "remove": pa.array([r[3] for r in rows], strings),
        }
    )
    provenance = {"stage": "cir-parse", "parser": job.parser, "tagger": str(job.tagger)}
    write_table(job.edits, table, provenance)
    return len(rows)


# --- cir-train-projection -------------------------------------------------------------------------


def _pairs(queries: dict[str, list], images: Path, edits: Path, rows: list[int]) -> EditPairs:
    ids = [queries["query_id"][i] for i in rows]
    add, remove = read_edits(edits, ids)
    return EditPairs(
        query_images=tuple(image_paths(images, [queries["query_image_id"][i] for i in rows])),
        target_images=tuple(image_paths(images, [queries["target_image_id"][i] for i in rows])),
        add=_prompts(add),
        remove=_prompts(remove),
    )


def evaluate_pairs(
    model: torch.nn.Module,
    tokenizer: Any,
    preprocess: Any,
    pairs: EditPairs,
    compose: ComposeSettings,
    device: torch.device,
) -> dict[str, float]:
    """Top-1 and R@5 of a query set against its own unique targets (RE:18-28)."""
    from crossmodal.cir.compose import retrieve

    images = raw_image_embeddings(model, preprocess, pairs.query_images, device)
    texts = raw_text_embeddings(
        model, tokenizer, [p for ps in (*pairs.add, *pairs.remove) for p in ps], device
    )
    add, remove = edit_sums(pairs.add, pairs.remove, texts, images.shape[1])
    queries = compose_queries(images, add.to(images), remove.to(images), compose).cpu().numpy()
    database = unique_targets(pairs.target_images)
    db = raw_image_embeddings(model, preprocess, database, device).cpu().numpy()
    ranked, _ = retrieve(queries, db, range(len(database)), k=5)
    position = {p: i for i, p in enumerate(database)}
    return retrieval_metrics(ranked, [position[t] for t in pairs.target_images])


def run_train_projection(job) -> dict[str, Any]:
    """The ``cir-train-projection`` stage: split the queries as the reference does (RD:41-50),
    fine-tune the projection on the training part, score the validation part before training
    and after every epoch (RT:61-72), save the last epoch's projection."""
    from crossmodal.encoders.registry import load_trainable_clip
    from crossmodal.jobs import settings_from_dict

    settings = settings_from_dict(ProjectionSettings, job.settings, "cir projection settings")
    compose = settings_from_dict(ComposeSettings, job.compose, "cir compose settings")
    clip = load_trainable_clip(job.encoder, device=job.device)
    device = next(clip.model.parameters()).device
    queries = read_queries(job.queries)
    train_rows, val_rows = split_pairs(len(queries["query_id"]), job.train_fraction, job.split_seed)
    train = _pairs(queries, job.images, job.edits, train_rows)
    val = _pairs(queries, job.images, job.edits, val_rows) if val_rows else None

    def score(epoch: int, model: torch.nn.Module) -> dict[str, float]:
        if val is None:
            return {}
        return evaluate_pairs(model, clip.tokenizer, clip.preprocess, val, compose, device)

    from crossmodal.cir.checkpoint import drop_checkpoint, file_sha256, run_checkpoint

    identity = {
        "settings": dataclasses.asdict(settings),
        "compose": dataclasses.asdict(compose),
        "encoder": job.encoder,
        "split": [job.train_fraction, job.split_seed],
        "inputs": [file_sha256(f) for f in (job.queries, job.images, job.edits)],
    }
    checkpoint = run_checkpoint(job.checkpoint, identity)
    untrained = score(-1, clip.model)
    history = train_projection(
        clip.model,
        clip.tokenizer,
        clip.preprocess,
        train,
        settings,
        compose,
        device=device,
        checkpoint=checkpoint,
        on_epoch=score,
    )
    meta = {"encoder": job.encoder, "settings": dataclasses.asdict(settings)}
    save_projection(clip.model, job.projection, meta)
    result = {
        "untrained_val": untrained,
        "epoch_val": history.epoch_metrics,
        "epoch_losses": history.epoch_losses,
        "step_losses": history.step_losses,
        "train_query_ids": [queries["query_id"][i] for i in train_rows],
        "val_query_ids": [queries["query_id"][i] for i in val_rows],
        "settings": dataclasses.asdict(settings),
        "compose": dataclasses.asdict(compose),
    }
    write_json(job.log, result)
    drop_checkpoint(checkpoint)
    return result


# --- cir-embed ------------------------------------------------------------------------------------


def _write_embeddings(
    path: Path, id_field: str, ids: list[int], emb: np.ndarray, prov: dict
) -> None:
    from crossmodal.features import embedding_schema, embeddings_to_array
    from crossmodal.io import with_provenance

    schema = with_provenance(embedding_schema(id_field, pa.int64(), emb.shape[1], "float32"), prov)
    table = pa.table(
        [pa.array(ids, pa.int64()), embeddings_to_array(emb, "float32")], schema=schema
    )
    write_table(path, table)


def run_embed(job) -> int:
    """The ``cir-embed`` stage: composed query embeddings (RG:11-66) and database embeddings
    (RG:69-90) from one model, with or without a fine-tuned projection, both L2-normalised."""
    from crossmodal.encoders.registry import load_trainable_clip
    from crossmodal.jobs import settings_from_dict

    if job.database not in DATABASES:
        raise CrossmodalError(f"--database {job.database!r}: choose one of {list(DATABASES)}")
    compose = settings_from_dict(ComposeSettings, job.compose, "cir compose settings")
    clip = load_trainable_clip(job.encoder, device=job.device)
    device = next(clip.model.parameters()).device
    if job.projection is not None:
        load_projection(clip.model, job.projection)
    queries = read_queries(job.queries)
    pairs = _pairs(queries, job.images, job.edits, list(range(len(queries["query_id"]))))
    model = clip.model.eval()
    images = raw_image_embeddings(
        model, clip.preprocess, pairs.query_images, device, batch_size=job.batch_size,
        workers=job.workers,
    )  # fmt: skip
    texts = raw_text_embeddings(
        model, clip.tokenizer, [p for ps in (*pairs.add, *pairs.remove) for p in ps], device
    )
    add, remove = edit_sums(pairs.add, pairs.remove, texts, images.shape[1])
    query_emb = compose_queries(images, add.to(images), remove.to(images), compose)
    query_emb = torch.nn.functional.normalize(query_emb, dim=-1).cpu().numpy()
    if job.database == "targets":
        db_ids = unique_targets(queries["target_image_id"])
    else:
        db_ids = pq.read_table(job.images, columns=["image_id"]).column("image_id").to_pylist()
    db_emb = raw_image_embeddings(
        model, clip.preprocess, image_paths(job.images, db_ids), device,
        batch_size=job.batch_size, workers=job.workers,
    )  # fmt: skip
    db_emb = torch.nn.functional.normalize(db_emb, dim=-1).cpu().numpy()
    prov = {
        "stage": "cir-embed",
        "encoder": job.encoder,
        "projection": str(job.projection),
        "compose": dataclasses.asdict(compose),
        "database": job.database,
    }
    _write_embeddings(Path(job.query_features), "query_id", queries["query_id"], query_emb, prov)
    _write_embeddings(Path(job.database_features), "image_id", db_ids, db_emb, prov)
    return len(query_emb)


# --- cir-eval -------------------------------------------------------------------------------------


def run_eval(job) -> dict[str, float]:
    """The ``cir-eval`` stage: search the database index with the query embeddings; top-1 and
    R@k over the queries, and every query's ranking."""
    from crossmodal.features import read_embeddings
    from crossmodal.index import load_index, search

    queries = read_queries(job.queries)
    ids, emb = read_embeddings(job.query_features, id_field="query_id")
    target_of = dict(zip(queries["query_id"], queries["target_image_id"], strict=True))
    absent = [int(i) for i in ids if int(i) not in target_of]
    if absent:
        raise DataFormatError(
            f"{job.query_features}: query ids {absent[:5]} are not in {job.queries}"
        )
    index = load_index(job.index, use_gpu=False)
    k = max(job.ks)
    ranked, scores = search(index, emb, k)
    metrics = retrieval_metrics(ranked, [target_of[int(i)] for i in ids], ks=job.ks)
    metrics["n_database"] = float(index.ntotal)
    table = pa.table(
        {
            "query_id": pa.array(ids, pa.int64()),
            "ranked_ids": pa.array(ranked.tolist(), pa.list_(pa.int64())),
            "scores": pa.array(scores.tolist(), pa.list_(pa.float32())),
        }
    )
    write_table(job.rankings, table, {"stage": "cir-eval", "index": str(job.index)})
    write_json(job.metrics, metrics)
    log.info("cir-eval: %s", metrics)
    return metrics


# --- one query ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryAnswer:
    """The best database images for one query, and the phrases the query was built from."""

    add: tuple[str, ...]
    remove: tuple[str, ...]
    ids: tuple[int, ...]
    scores: tuple[float, ...]


def answer_query(
    model: torch.nn.Module,
    tokenizer: Any,
    preprocess: Any,
    index: Any,
    image: str | Path,
    add: list[str],
    remove: list[str],
    compose: ComposeSettings,
    *,
    k: int,
    device: torch.device,
) -> QueryAnswer:
    """Compose one query (reference image + add / remove phrases) and search a database index,
    exactly as ``cir-embed`` and ``cir-eval`` do for a whole query set."""
    from crossmodal.index import search

    pairs = EditPairs((str(image),), (str(image),), _prompts([add]), _prompts([remove]))
    emb = raw_image_embeddings(model, preprocess, pairs.query_images, device)
    texts = raw_text_embeddings(model, tokenizer, [*pairs.add[0], *pairs.remove[0]], device)
    add_sum, remove_sum = edit_sums(pairs.add, pairs.remove, texts, emb.shape[1])
    query = compose_queries(emb, add_sum.to(emb), remove_sum.to(emb), compose)
    query = torch.nn.functional.normalize(query, dim=-1).cpu().numpy()
    ids, scores = search(index, query, k)
    keep = ids[0] != -1
    return QueryAnswer(
        add=tuple(add),
        remove=tuple(remove),
        ids=tuple(int(i) for i in ids[0][keep]),
        scores=tuple(float(x) for x in scores[0][keep]),
    )


def run_query(job) -> QueryAnswer:
    """The ``cir-query`` command: parse the text with the tagger, compose the query with the
    encoder (and projection) the index was built with, print the parsed phrases and the top-k
    image ids (with their paths when ``--images`` is given)."""
    import json

    from crossmodal.cir.tagger import load_tagger, parse_edits
    from crossmodal.encoders.base import resolve_device
    from crossmodal.encoders.registry import load_trainable_clip
    from crossmodal.index import load_index
    from crossmodal.jobs import settings_from_dict

    if job.k < 1:
        raise CrossmodalError(f"--k {job.k}: ask for at least one image")
    if not Path(job.image).is_file():
        raise CrossmodalError(f"--image {job.image}: no such file")
    compose = settings_from_dict(ComposeSettings, job.compose, "cir compose settings")
    device = str(resolve_device(job.device))
    tagger = load_tagger(Path(job.tagger).parent, device=device)
    edit = parse_edits(tagger, [job.text], max_length=job.max_length)[0]
    clip = load_trainable_clip(job.encoder, device=device)
    if job.projection is not None:
        load_projection(clip.model, job.projection)
    model = clip.model.eval()
    index = load_index(job.index, use_gpu=False)
    answer = answer_query(
        model, clip.tokenizer, clip.preprocess, index, job.image, list(edit.add),
        list(edit.remove), compose, k=job.k, device=next(model.parameters()).device,
    )  # fmt: skip
    where = {}
    if job.images is not None:
        table = pq.read_table(job.images, columns=["image_id", "path"])
        ids, image_paths_ = table.column("image_id").to_pylist(), table.column("path").to_pylist()
        where = dict(zip(ids, image_paths_, strict=True))
    print(f"add: {json.dumps(list(answer.add))}")
    print(f"remove: {json.dumps(list(answer.remove))}")
    for rank, (i, score) in enumerate(zip(answer.ids, answer.scores, strict=True), 1):
        print(f"{rank}\t{i}\t{score:.4f}" + (f"\t{where[i]}" if i in where else ""))
    if job.out is not None:
        record = dataclasses.asdict(answer) | {"text": job.text, "image": str(job.image)}
        record["paths"] = [where.get(i) for i in answer.ids]
        write_json(job.out, record)
    return answer


# --- make-tiny-tagger -----------------------------------------------------------------------------


def run_make_tiny_tagger(job) -> Path:
    """The ``make-tiny-tagger`` stage: a random-weight DistilBERT tagger whose vocabulary covers
    the tagger sentences (tests and the demo)."""
    from crossmodal.cir.tagger import build_tiny_tagger
    from crossmodal.cir.tagger_data import read_sentences

    corpus = [s.text for s in read_sentences(job.sentences)]
    return build_tiny_tagger(Path(job.tokenizer).parent, corpus, seed=job.seed)
