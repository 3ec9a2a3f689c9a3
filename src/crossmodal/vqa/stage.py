"""The PICa stage: descriptions + CLIP features -> official-format answers for every loop.

One job answers every loop k (context = the question image's first k descriptions), so a served
LLM starts once. Requests go through the journal, like the describe stage.

Which questions are answered is explicit, never silent:

- a validation question whose image the describe stage left out (unreadable, beyond
  ``describe.limit``) is left out too, with that reason, and listed in the coverage file that
  scoring and ``acc.json`` report; a question image that was neither described nor left out is
  an error naming it;
- the in-context example pool is every training question with a non-empty question, at least
  one answer and a non-empty description of its image. Examples that fail this are excluded
  (PICa's reference redraws such examples: the next most similar one takes the place) and
  counted per reason in the coverage file; a training image neither described nor left out by
  the describe stage is an error naming it.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from crossmodal import stages
from crossmodal.errors import CrossmodalError
from crossmodal.features import read_embeddings
from crossmodal.generation.journal import JournaledGenerator
from crossmodal.io import texts_by_image, write_json
from crossmodal.recod.stage import left_out_images
from crossmodal.vqa.pica import (
    Example,
    PicaSettings,
    answer_questions,
    map_to_choices,
    rank_examples,
)

log = logging.getLogger(__name__)


def _lookup(ids: np.ndarray, emb: np.ndarray, wanted: list, what: str, path: Path) -> np.ndarray:
    pos = {k: i for i, k in enumerate(ids.tolist())}
    missing = [w for w in wanted if w not in pos]
    if missing:
        raise CrossmodalError(f"{path}: {len(missing)} {what} have no features, e.g. {missing[:5]}")
    return emb[[pos[w] for w in wanted]]


def reason_kind(reason: str) -> str:
    """The category of a left-out reason ("unreadable image: truncated" -> "unreadable image")."""
    return reason.split(":", 1)[0]


def _described(descriptions: Path, image_ids: list[int], what: str) -> tuple[dict, dict]:
    """(image_id -> texts in loop order, image_id -> left-out reason) for ``image_ids``."""
    texts = texts_by_image(descriptions, "text", order_by="loop")
    left_out = left_out_images(descriptions)
    unknown = sorted({i for i in image_ids if i not in texts and i not in left_out})
    if unknown:
        raise CrossmodalError(
            f"{descriptions}: no description of {len(unknown)} {what} image(s), e.g. "
            f"{unknown[:5]}, and the describe stage did not leave them out: the table is from "
            "another question set; delete it and rerun"
        )
    return texts, left_out


def example_pool(train, train_desc: Path) -> tuple[list[int], list[Example], Counter]:
    """(rows of ``train`` usable as examples, their examples, excluded count per reason)."""
    image_ids = [int(i) for i in train["image_id"]]
    texts, left_out = _described(train_desc, image_ids, "training")
    rows, examples, excluded = [], [], Counter()
    for row, (question, image_id, answers) in enumerate(
        zip(train["question"], image_ids, train["answers"], strict=True)
    ):
        if image_id in left_out:
            excluded[f"image left out ({reason_kind(left_out[image_id])})"] += 1
        elif not str(question).strip():
            excluded["empty question"] += 1
        elif len(answers) == 0 or not str(answers[0]).strip():
            excluded["empty first answer"] += 1
        elif not texts[image_id][0].strip():
            excluded["empty description"] += 1
        else:
            rows.append(row)
            examples.append(Example(texts[image_id][0], str(question), str(answers[0])))
    if not examples:
        raise CrossmodalError(f"{train_desc}: no training question is usable as an example")
    return rows, examples, excluded


def run_pica(job: stages.Pica) -> dict[str, Any]:
    """Write one answers file per loop, the ledger and the coverage file."""
    settings = PicaSettings.from_dict(job.settings)
    if len(job.loops) != len(job.answers):
        raise CrossmodalError(f"{len(job.loops)} loops but {len(job.answers)} answers files")
    val_all = pq.read_table(job.val_questions).to_pandas()
    train = pq.read_table(job.train_questions).to_pandas()

    val_ids = [int(i) for i in val_all["image_id"]]
    val_desc, val_left_out = _described(job.val_descriptions, val_ids, "validation")
    keep = [i not in val_left_out for i in val_ids]
    val = val_all[keep].reset_index(drop=True)
    left_out_q = {
        str(q): val_left_out[i]
        for q, i, k in zip(val_all["question_id"], val_ids, keep, strict=True)
        if not k
    }
    if val.empty:
        raise CrossmodalError(f"{job.val_descriptions}: every validation question was left out")

    rows, examples, excluded = example_pool(train, job.train_descriptions)
    qv_ids, qv = read_embeddings(job.val_question_features, "question_id")
    qt_ids, qt = read_embeddings(job.train_question_features, "question_id")
    iv_ids, iv = read_embeddings(job.val_image_features)
    it_ids, it = read_embeddings(job.train_image_features)
    pool = train.iloc[rows]
    ranks = rank_examples(
        _lookup(qv_ids, qv, val["question_id"].tolist(), "questions", job.val_question_features),
        _lookup(iv_ids, iv, val["image_id"].tolist(), "images", job.val_image_features),
        _lookup(qt_ids, qt, pool["question_id"].tolist(), "questions", job.train_question_features),
        _lookup(it_ids, it, pool["image_id"].tolist(), "images", job.train_image_features),
        settings.n_shot * settings.n_ensemble,
    )

    def examples_for(i: int) -> list[list[Example]]:
        row = ranks[i]
        return [
            [examples[j] for j in row[r * settings.n_shot : (r + 1) * settings.n_shot]]
            for r in range(settings.n_ensemble)
        ]

    embed = _text_embedder(job.encoder) if job.format == "aokvqa" else None
    with JournaledGenerator(job.llm, job.journal, own="journal.jsonl", chunk=256) as generate:
        for k, out in zip(job.loops, job.answers, strict=True):
            targets = []
            for qid, img, q in zip(
                val["question_id"], val["image_id"], val["question"], strict=True
            ):
                descs = val_desc[int(img)][:k]
                # empty descriptions add nothing to a context; the describe ledger counts them
                context = settings.join.join(d for d in descs if d.strip())
                targets.append((qid.item() if hasattr(qid, "item") else qid, context, q))
            records = answer_questions(targets, examples_for, settings, generate)
            _write_answers(out, records, job.format, val, embed)
        stats = generate.stats()
    write_json(job.ledger, stats)
    wanted = settings.n_shot * settings.n_ensemble
    coverage = {
        "questions": len(val_all),
        "answered": len(val),
        "answered_ids": [str(q) for q in val["question_id"]],
        "left_out": left_out_q,
        "left_out_by_reason": dict(Counter(reason_kind(r) for r in left_out_q.values())),
        "examples": {
            "pool": len(examples),
            "excluded": dict(sorted(excluded.items())),
            # a pool smaller than n_shot x n_ensemble leaves the later prompts short
            "per_question": min(wanted, len(examples)),
            "wanted_per_question": wanted,
        },
    }
    if len(examples) < wanted:
        log.warning(
            "only %d usable in-context examples for %d per question (n_shot x n_ensemble): "
            "the later ensemble prompts get fewer examples",
            len(examples),
            wanted,
        )
    write_json(job.coverage, coverage)
    if left_out_q:
        log.warning("%d of %d questions left out: %s", len(left_out_q), len(val_all), coverage)
    return coverage


def _write_answers(out: Path, records: list[dict], fmt: str, val, embed) -> None:
    if fmt == "aokvqa":
        mc = map_to_choices([r["answer"] for r in records], val["choices"].tolist(), embed)
        preds = {
            str(r["question_id"]): {"direct_answer": r["answer"], "multiple_choice": c}
            for r, c in zip(records, mc, strict=True)
        }
        write_json(out, preds)
    elif fmt == "okvqa":
        write_json(
            out, [{"question_id": int(r["question_id"]), "answer": r["answer"]} for r in records]
        )
    else:
        raise CrossmodalError(f"--format {fmt!r}: choose okvqa or aokvqa")


def _text_embedder(encoder_spec: dict[str, Any] | None):
    if encoder_spec is None:
        raise CrossmodalError("A-OKVQA multiple choice needs the CLIP encoder (--encoder)")
    from crossmodal.encoders import build_encoder

    encoder = build_encoder(encoder_spec)
    return lambda texts: encoder.encode_texts(texts)
