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
    if not gt_answers:
        raise DataFormatError("no ground-truth answers to score against")
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
    annotations: dict[str, Any],
    predictions: list[dict[str, Any]],
    source: str = "predictions",
    annotations_source: str = "annotations",
) -> dict[str, Any]:
    """Overall (0-100), per question type and answer type (0-100), per question (0-1).

    Every annotation needs a non-empty answer list and every question id may appear once, in
    the annotations and in the predictions: a duplicate is an error, never "last one wins".
    """
    by_qid = _annotations_by_qid(annotations, annotations_source)
    preds: dict[int, str] = {}
    first_seen: dict[int, int] = {}
    for i, p in enumerate(predictions):
        if not isinstance(p, dict) or "question_id" not in p or "answer" not in p:
            raise DataFormatError(f"{source}: entry {i} needs 'question_id' and 'answer'")
        qid = _qid(p["question_id"], f"{source}: entry {i}")
        if qid in first_seen:
            raise DataFormatError(
                f"{source}: question_id {qid} is predicted twice (entries {first_seen[qid]} "
                f"and {i}); keep one answer per question"
            )
        first_seen[qid] = i
        preds[qid] = str(p["answer"])
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


def _qid(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataFormatError(f"{where}: question_id must be an integer, got {value!r}")
    return value


def _annotations_by_qid(annotations: Any, source: str) -> dict[int, dict[str, Any]]:
    """Annotations by question id, each checked as the scorer needs it."""
    if not isinstance(annotations, dict) or not isinstance(annotations.get("annotations"), list):
        raise DataFormatError(f"{source}: expected an object with an 'annotations' list")
    by_qid: dict[int, dict[str, Any]] = {}
    first_seen: dict[int, int] = {}
    for i, ann in enumerate(annotations["annotations"]):
        where = f"{source}: annotations[{i}]"
        needed = ("question_id", "answers", "question_type", "answer_type")
        if not isinstance(ann, dict) or any(k not in ann for k in needed):
            raise DataFormatError(f"{where}: expected an object with {list(needed)}")
        qid = _qid(ann["question_id"], where)
        answers = ann["answers"]
        if not isinstance(answers, list) or not all(
            isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers
        ):
            raise DataFormatError(
                f"{where} (question_id {qid}): 'answers' must be a list of {{'answer': str}}"
            )
        if not answers:
            raise DataFormatError(
                f"{where}: question_id {qid} has an empty 'answers' list, so it cannot be "
                "scored; use the official annotations file, or drop the question from both "
                "the questions and the annotations"
            )
        if qid in first_seen:
            raise DataFormatError(
                f"{source}: question_id {qid} is annotated twice (annotations[{first_seen[qid]}] "
                f"and annotations[{i}]); keep one annotation per question"
            )
        first_seen[qid] = i
        by_qid[qid] = ann
    return by_qid


def evaluate_files(
    questions: str | Path, annotations: str | Path, predictions: str | Path
) -> dict[str, Any]:
    qdata = read_json(questions)
    adata = read_json(annotations)
    pdata = read_json(predictions)
    if not isinstance(pdata, list):
        raise DataFormatError(f"{predictions}: expected a JSON list of {{question_id, answer}}")
    if not isinstance(qdata, dict) or not isinstance(qdata.get("questions"), list):
        raise DataFormatError(f"{questions}: expected an object with a 'questions' list")
    qids: set[int] = set()
    for i, q in enumerate(qdata["questions"]):
        if not isinstance(q, dict) or "question_id" not in q:
            raise DataFormatError(f"{questions}: questions[{i}] needs a 'question_id'")
        qids.add(_qid(q["question_id"], f"{questions}: questions[{i}]"))
    by_qid = _annotations_by_qid(adata, str(annotations))
    if qids != set(by_qid):
        only_q, only_a = sorted(qids - set(by_qid)), sorted(set(by_qid) - qids)
        raise DataFormatError(
            f"{questions} and {annotations} cover different question ids ({len(only_q)} only "
            f"in the questions, e.g. {only_q[:5]}; {len(only_a)} only in the annotations, e.g. "
            f"{only_a[:5]}); use the questions and annotations files of the same split"
        )
    return evaluate(adata, pdata, str(predictions), str(annotations))
