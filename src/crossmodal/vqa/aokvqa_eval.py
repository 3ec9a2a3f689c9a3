"""A-OKVQA accuracy as allenai/aokvqa's evaluation computes it.

Direct answer: questions marked ``difficult_direct_answer`` are excluded; accuracy is
min(1, exact matches among the ten direct answers / 3), no normalisation. Multiple choice:
exact match with the correct choice. A question without a prediction scores 0 (the official
script's non-strict mode, which it uses for prediction files).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crossmodal.errors import DataFormatError
from crossmodal.io import read_json


def evaluate(dataset: list[dict[str, Any]], predictions: dict[str, dict[str, str]]) -> dict:
    by_qid = _dataset_by_qid(dataset, "dataset")
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


def _dataset_by_qid(dataset: Any, source: str) -> dict[str, dict[str, Any]]:
    """Questions by id, checked as the scorer needs them: one entry per id, a usable choice
    index, a non-empty direct-answer list where one is given."""
    if not isinstance(dataset, list):
        raise DataFormatError(f"{source}: expected the A-OKVQA JSON list")
    by_qid: dict[str, dict[str, Any]] = {}
    first_seen: dict[str, int] = {}
    for i, q in enumerate(dataset):
        if not isinstance(q, dict) or "question_id" not in q:
            raise DataFormatError(f"{source}: [{i}] must be an object with a 'question_id'")
        qid = str(q["question_id"])
        where = f"{source}: [{i}] (question_id {qid!r})"
        if qid in first_seen:
            raise DataFormatError(
                f"{source}: question_id {qid!r} appears twice ([{first_seen[qid]}] and [{i}]); "
                "keep one entry per question"
            )
        first_seen[qid] = i
        idx = q.get("correct_choice_idx")
        choices = q.get("choices")
        if idx is not None and (
            not isinstance(choices, list)
            or isinstance(idx, bool)
            or not isinstance(idx, int)
            or not 0 <= idx < len(choices)
        ):
            raise DataFormatError(
                f"{where}: correct_choice_idx {idx!r} is not an index into its choices"
            )
        direct = q.get("direct_answers")
        if not q.get("difficult_direct_answer", False) and "direct_answers" in q and not direct:
            raise DataFormatError(
                f"{where}: 'direct_answers' is empty, so it cannot be scored; give its "
                "answers, or leave the key out for an unanswered (test-split) question"
            )
        by_qid[qid] = q
    return by_qid


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dupes = sorted({k for k in keys if keys.count(k) > 1})
    if dupes:
        raise ValueError(f"key(s) {dupes[:5]} appear more than once")
    return dict(pairs)


def _read_predictions(path: str | Path) -> Any:
    """The predictions JSON; a question id given twice is an error (json keeps the last)."""
    try:
        with Path(path).open("rb") as fh:
            return json.load(fh, object_pairs_hook=_no_duplicate_keys)
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path}: file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: malformed JSON ({exc})") from exc
    except ValueError as exc:
        raise DataFormatError(f"{path}: {exc}; keep one prediction per question") from exc


def evaluate_files(dataset_json: str | Path, predictions_json: str | Path) -> dict:
    dataset = read_json(dataset_json)
    preds = _read_predictions(predictions_json)
    by_qid = _dataset_by_qid(dataset, str(dataset_json))
    if not isinstance(preds, dict) or not all(isinstance(v, dict) for v in preds.values()):
        raise DataFormatError(
            f"{predictions_json}: expected {{question_id: {{direct_answer, multiple_choice}}}}"
        )
    unknown = set(preds) - set(by_qid)
    if unknown:
        raise DataFormatError(
            f"{predictions_json}: unknown question ids, e.g. {sorted(unknown)[:5]}"
        )
    return evaluate(dataset, preds)
