"""A-OKVQA accuracy as allenai/aokvqa's evaluation computes it.

Direct answer: questions marked ``difficult_direct_answer`` are excluded; accuracy is
min(1, exact matches among the ten direct answers / 3), no normalisation. Multiple choice:
exact match with the correct choice. A question without a prediction scores 0 (the official
script's non-strict mode, which it uses for prediction files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossmodal.errors import DataFormatError
from crossmodal.io import read_json


def evaluate(dataset: list[dict[str, Any]], predictions: dict[str, dict[str, str]]) -> dict:
    by_qid = {str(q["question_id"]): q for q in dataset}
    da, mc = [], []
    per_q: dict[str, dict[str, float]] = {}
    for qid, q in by_qid.items():
        pred = predictions.get(qid, {})
        if not q.get("difficult_direct_answer", False):
            answer = pred.get("direct_answer")
            hits = sum(answer == d for d in q.get("direct_answers", [])) if answer else 0
            da.append(min(1.0, hits / 3.0))
            per_q.setdefault(qid, {})["direct_answer"] = da[-1]
        if q.get("correct_choice_idx") is not None:
            choice = pred.get("multiple_choice")
            mc.append(float(choice == q["choices"][q["correct_choice_idx"]]))
            per_q.setdefault(qid, {})["multiple_choice"] = mc[-1]
    return {
        "direct_answer": 100.0 * sum(da) / len(da) if da else 0.0,
        "multiple_choice": 100.0 * sum(mc) / len(mc) if mc else 0.0,
        "n_direct_answer": len(da),
        "n_multiple_choice": len(mc),
        "per_question": per_q,
    }


def evaluate_files(dataset_json: str | Path, predictions_json: str | Path) -> dict:
    dataset = read_json(dataset_json)
    preds = read_json(predictions_json)
    if not isinstance(dataset, list):
        raise DataFormatError(f"{dataset_json}: expected the A-OKVQA JSON list")
    if not isinstance(preds, dict) or not all(isinstance(v, dict) for v in preds.values()):
        raise DataFormatError(
            f"{predictions_json}: expected {{question_id: {{direct_answer, multiple_choice}}}}"
        )
    unknown = set(preds) - {str(q["question_id"]) for q in dataset}
    if unknown:
        raise DataFormatError(
            f"{predictions_json}: unknown question ids, e.g. {sorted(unknown)[:5]}"
        )
    return evaluate(dataset, preds)
