"""VQA accuracy, reproducing GT-Vision-Lab's vqaEval.py, quirks included.

For each question: strip newlines/tabs; only when the ten ground-truth answers are not all the
same are the answers and the prediction normalised; accuracy is the mean, over the ten
leave-one-annotator-out subsets, of min(1, matches among the other nine / 3). Predictions must
cover exactly the annotated questions (the official loader asserts the same).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from crossmodal.errors import DataFormatError
from crossmodal.io import read_json
from crossmodal.vqa.normalize import clean_whitespace, normalize


def question_accuracy(gt_answers: list[dict[str, Any]], prediction: str) -> float:
    """Accuracy in [0, 1] of one prediction against the annotators' answer records."""
    answers = [dict(a, answer=clean_whitespace(a["answer"])) for a in gt_answers]
    res = clean_whitespace(prediction)
    if len({a["answer"] for a in answers}) > 1:
        answers = [dict(a, answer=normalize(a["answer"])) for a in answers]
        res = normalize(res)
    accs = []
    for gt in answers:
        others = [a for a in answers if a != gt]  # sic: whole records compared, as upstream
        matches = [a for a in others if a["answer"] == res]
        accs.append(min(1.0, len(matches) / 3))
    return sum(accs) / len(accs)


def evaluate(
    annotations: dict[str, Any], predictions: list[dict[str, Any]], source: str = "predictions"
) -> dict[str, Any]:
    """Overall (0-100), per question type and answer type (0-100), per question (0-1)."""
    by_qid = {int(a["question_id"]): a for a in annotations["annotations"]}
    preds: dict[int, str] = {}
    for i, p in enumerate(predictions):
        if not isinstance(p, dict) or "question_id" not in p or "answer" not in p:
            raise DataFormatError(f"{source}: entry {i} needs 'question_id' and 'answer'")
        preds[int(p["question_id"])] = str(p["answer"])
    missing, extra = set(by_qid) - set(preds), set(preds) - set(by_qid)
    if missing or extra:
        raise DataFormatError(
            f"{source}: predictions must cover exactly the annotated questions "
            f"({len(missing)} missing, e.g. {sorted(missing)[:5]}; {len(extra)} unknown, "
            f"e.g. {sorted(extra)[:5]})"
        )
    per_q: dict[int, float] = {}
    per_qtype: dict[str, list[float]] = defaultdict(list)
    per_atype: dict[str, list[float]] = defaultdict(list)
    for qid in sorted(by_qid):
        ann = by_qid[qid]
        acc = question_accuracy(ann["answers"], preds[qid])
        per_q[qid] = acc
        per_qtype[ann["question_type"]].append(acc)
        per_atype[ann["answer_type"]].append(acc)

    def pct(values: list[float]) -> float:
        return 100.0 * sum(values) / len(values)

    overall = pct(list(per_q.values())) if per_q else 0.0
    return {
        "overall": overall,
        "overall_official_rounding": round(overall, 2),
        "perQuestionType": {k: pct(v) for k, v in sorted(per_qtype.items())},
        "perAnswerType": {k: pct(v) for k, v in sorted(per_atype.items())},
        "per_question": {str(k): v for k, v in per_q.items()},
        "n_questions": len(per_q),
    }


def evaluate_files(
    questions: str | Path, annotations: str | Path, predictions: str | Path
) -> dict[str, Any]:
    qdata = read_json(questions)
    adata = read_json(annotations)
    pdata = read_json(predictions)
    if not isinstance(pdata, list):
        raise DataFormatError(f"{predictions}: expected a JSON list of {{question_id, answer}}")
    if "annotations" not in adata:
        raise DataFormatError(f"{annotations}: missing key 'annotations'")
    qids = {int(q["question_id"]) for q in qdata.get("questions", [])}
    aids = {int(a["question_id"]) for a in adata["annotations"]}
    if qids != aids:
        raise DataFormatError(f"{questions} and {annotations} cover different question ids")
    return evaluate(adata, pdata, str(predictions))
