"""The PICa stage: descriptions + CLIP features -> official-format answers for every loop.

One job answers every loop k (context = the target image's first k descriptions), so a served
LLM starts once. Requests go through the journal, like the describe stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from crossmodal.errors import CrossmodalError
from crossmodal.features import read_embeddings
from crossmodal.generation.journal import JournaledGenerator
from crossmodal.io import texts_by_image, write_json
from crossmodal.vqa.pica import (
    Example,
    PicaSettings,
    answer_questions,
    map_to_choices,
    rank_examples,
)


def _lookup(ids: np.ndarray, emb: np.ndarray, wanted, what: str) -> np.ndarray:
    pos = {k: i for i, k in enumerate(ids.tolist())}
    missing = [w for w in wanted if w not in pos]
    if missing:
        raise CrossmodalError(f"{len(missing)} {what} have no features, e.g. {missing[:5]}")
    return emb[[pos[w] for w in wanted]]


def run_pica(
    *,
    llm_spec: dict[str, Any],
    settings: PicaSettings,
    dataset_format: str,
    val_questions: str | Path,
    train_questions: str | Path,
    val_question_features: str | Path,
    train_question_features: str | Path,
    val_image_features: str | Path,
    train_image_features: str | Path,
    val_descriptions: str | Path,
    train_descriptions: str | Path,
    loops: list[int],
    outputs: list[str | Path],
    journal_path: str | Path,
    ledger_path: str | Path,
    encoder_spec: dict[str, Any] | None = None,
) -> None:
    """Write one answers file per loop in ``loops`` (OK-VQA list or A-OKVQA dict format)."""
    val = pq.read_table(val_questions).to_pandas()
    train = pq.read_table(train_questions).to_pandas()
    qv_ids, qv = read_embeddings(val_question_features, "question_id")
    qt_ids, qt = read_embeddings(train_question_features, "question_id")
    iv_ids, iv = read_embeddings(val_image_features)
    it_ids, it = read_embeddings(train_image_features)
    qv = _lookup(qv_ids, qv, val["question_id"].tolist(), "validation questions")
    qt = _lookup(qt_ids, qt, train["question_id"].tolist(), "training questions")
    iv = _lookup(iv_ids, iv, val["image_id"].tolist(), "validation images")
    it = _lookup(it_ids, it, train["image_id"].tolist(), "training images")
    ranks = rank_examples(qv, iv, qt, it, settings.n_shot * settings.n_ensemble)

    train_desc = texts_by_image(train_descriptions, "text", order_by="loop")
    val_desc = texts_by_image(val_descriptions, "text", order_by="loop")
    examples = []
    for q, img, answers in zip(train["question"], train["image_id"], train["answers"], strict=True):
        context = train_desc.get(int(img), [""])[0]
        examples.append(Example(context, q, answers[0] if len(answers) else ""))

    def examples_for(i: int) -> list[list[Example]]:
        row = ranks[i]
        return [
            [examples[j] for j in row[r * settings.n_shot : (r + 1) * settings.n_shot]]
            for r in range(settings.n_ensemble)
        ]

    embed = _text_embedder(encoder_spec) if dataset_format == "aokvqa" else None
    with JournaledGenerator(llm_spec, journal_path) as generate:
        for k, out in zip(loops, outputs, strict=True):
            targets = []
            for qid, img, q in zip(
                val["question_id"], val["image_id"], val["question"], strict=True
            ):
                descs = val_desc.get(int(img))
                if not descs:
                    raise CrossmodalError(f"{val_descriptions}: no description for image {img}")
                context = settings.join.join(d for d in descs[:k] if d)
                targets.append((qid.item() if hasattr(qid, "item") else qid, context, q))

            records = answer_questions(targets, examples_for, settings, generate)
            if dataset_format == "aokvqa":
                mc = map_to_choices([r["answer"] for r in records], val["choices"].tolist(), embed)
                preds = {
                    str(r["question_id"]): {"direct_answer": r["answer"], "multiple_choice": c}
                    for r, c in zip(records, mc, strict=True)
                }
                write_json(out, preds)
            else:
                write_json(
                    out,
                    [
                        {"question_id": int(r["question_id"]), "answer": r["answer"]}
                        for r in records
                    ],
                )
        stats = generate.stats()
    write_json(ledger_path, stats)


def _text_embedder(encoder_spec: dict[str, Any] | None):
    if encoder_spec is None:
        raise CrossmodalError("A-OKVQA multiple choice needs the CLIP encoder (--encoder-spec)")
    from crossmodal.encoders import build_encoder

    encoder = build_encoder(encoder_spec)
    return lambda texts: encoder.encode_texts(texts)
