"""The PICa stage end to end on small real files: OK-VQA and A-OKVQA output formats."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers.jobs import pica_settings
from PIL import Image

from crossmodal import stages
from crossmodal.data.prepare import prepare_aokvqa
from crossmodal.encoders import build_encoder
from crossmodal.features import extract_image_features, extract_text_features
from crossmodal.generation.tiny import build_tiny_llava
from crossmodal.io import write_table
from crossmodal.recod.stage import DESCRIPTIONS_SCHEMA
from crossmodal.vqa import aokvqa_eval
from crossmodal.vqa.stage import run_pica

TINY = {"backend": "tiny", "seed": 0}


@pytest.fixture(scope="module")
def aokvqa_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("aok")
    enc = build_encoder(TINY, device="cpu")
    for split, ids in (("train", range(1, 9)), ("val", range(101, 104))):
        rows, data, desc = [], [], []
        for i in ids:
            p = root / f"{i}.jpg"
            Image.new("RGB", (64, 48), (i * 20 % 255, 90, 140)).save(p)
            rows.append((i, str(p)))
            data.append(
                {
                    "question_id": f"q{i}",
                    "image_id": i,
                    "question": f"What is {i}?",
                    "choices": ["red", "green", "blue", "cat"],
                    "correct_choice_idx": i % 4,
                    "direct_answers": ["red"] * 10,
                    "difficult_direct_answer": i == 102,
                    "rationales": ["r"],
                }
            )
            desc.append(
                {
                    "image_id": i,
                    "loop": 0,
                    "text": f"Picture {i}.",
                    "retrieved_id": None,
                    "score": None,
                    "reference": [],
                }
            )
            if split == "val":
                desc.append(
                    {
                        "image_id": i,
                        "loop": 1,
                        "text": "More detail.",
                        "retrieved_id": 1,
                        "score": 0.5,
                        "reference": [],
                    }
                )
        (root / f"{split}.json").write_text(json.dumps(data))
        prepare_aokvqa(root / f"{split}.json", root / f"{split}_q.parquet")
        pq.write_table(
            pa.table(
                {
                    "image_id": [r[0] for r in rows],
                    "path": [r[1] for r in rows],
                    "width": [64] * len(rows),
                    "height": [48] * len(rows),
                }
            ),
            root / f"{split}_images.parquet",
        )
        extract_image_features(
            enc, root / f"{split}_images.parquet", root / f"{split}_if.parquet", workers=0
        )
        extract_text_features(
            enc,
            root / f"{split}_q.parquet",
            root / f"{split}_qf.parquet",
            id_column="question_id",
            text_column="question",
        )
        write_table(
            root / f"{split}_desc.parquet",
            pa.Table.from_pylist(desc, schema=DESCRIPTIONS_SCHEMA),
            {"stage": "describe", "left_out": {}},
        )
    build_tiny_llava(root / "lm")
    return root


def test_aokvqa_answers_have_both_forms_and_score(aokvqa_world, tmp_path):
    r = aokvqa_world
    outs = [tmp_path / "loop1.json", tmp_path / "loop2.json"]
    job = stages.Pica(
        llm={"backend": "transformers", "model": str(r / "lm"), "device": "cpu"},
        settings=pica_settings(n_shot=2, n_ensemble=2),
        format="aokvqa",
        val_questions=r / "val_q.parquet",
        train_questions=r / "train_q.parquet",
        val_question_features=r / "val_qf.parquet",
        train_question_features=r / "train_qf.parquet",
        val_image_features=r / "val_if.parquet",
        train_image_features=r / "train_if.parquet",
        val_descriptions=r / "val_desc.parquet",
        train_descriptions=r / "train_desc.parquet",
        loops=[1, 2],
        answers=outs,
        journal=tmp_path / "journal",
        ledger=tmp_path / "ledger.json",
        coverage=tmp_path / "coverage.json",
        encoder=TINY,
    )
    coverage = run_pica(job)
    assert coverage["answered"] == coverage["questions"] == 3 and not coverage["left_out"]
    preds = json.loads(outs[1].read_text())
    assert set(preds) == {"q101", "q102", "q103"}
    for p in preds.values():
        assert set(p) == {"direct_answer", "multiple_choice"}
        assert p["multiple_choice"] in ["red", "green", "blue", "cat"]
    data = json.loads((r / "val.json").read_text())
    scores = aokvqa_eval.evaluate(data, preds)
    assert scores["n_direct_answer"] == 2 and scores["n_multiple_choice"] == 3
    # 2 loops x 3 questions x 2 ensemble prompts, every one journalled once
    assert len((tmp_path / "journal/journal.jsonl").read_text().splitlines()) == 12
    assert json.loads((tmp_path / "ledger.json").read_text())["requests"] == 12
