"""Scoring jobs: the official evaluators over plain files, and the pipeline's ``score`` stage.

``vqa-eval`` and ``aokvqa-eval`` take exactly the official files and predictions, so anyone can
check a number against the reference evaluators. ``score`` is the stage the DAG runs: the same
evaluators over the questions PICa covered, with the questions left out (and why) carried into
the result, so a partial run can never pass for a complete one.
"""

from __future__ import annotations

import logging
from typing import Any

from crossmodal import stages
from crossmodal.errors import CrossmodalError, DataFormatError
from crossmodal.io import read_json, write_json
from crossmodal.vqa import aokvqa_eval, vqa_eval

log = logging.getLogger(__name__)


def run_vqa_eval(job: stages.VqaEval) -> dict[str, Any]:
    result = vqa_eval.evaluate_files(job.questions, job.annotations, job.predictions)
    write_json(job.out, result)
    log.info("overall accuracy %.4f on %d questions", result["overall"], result["n_questions"])
    return result


def run_aokvqa_eval(job: stages.AokvqaEval) -> dict[str, Any]:
    result = aokvqa_eval.evaluate_files(job.dataset, job.predictions)
    write_json(job.out, result)
    log.info("DA %.2f MC %.2f", result["direct_answer"], result["multiple_choice"])
    return result


def _covered_okvqa(job: stages.Score, answered: set[str]) -> dict[str, Any]:
    if job.annotations_json is None:
        raise CrossmodalError("--annotations-json is required for --format okvqa")
    annotations = read_json(job.annotations_json)
    if not isinstance(annotations, dict) or "annotations" not in annotations:
        raise DataFormatError(f"{job.annotations_json}: missing key 'annotations'")
    covered = [a for a in annotations["annotations"] if str(a["question_id"]) in answered]
    predictions = read_json(job.answers)
    if not isinstance(predictions, list):
        raise DataFormatError(f"{job.answers}: expected a JSON list of {{question_id, answer}}")
    return vqa_eval.evaluate({"annotations": covered}, predictions, str(job.answers))


def _covered_aokvqa(job: stages.Score, answered: set[str]) -> dict[str, Any]:
    dataset = read_json(job.questions_json)
    if not isinstance(dataset, list):
        raise DataFormatError(f"{job.questions_json}: expected the A-OKVQA JSON list")
    predictions = read_json(job.answers)
    if not isinstance(predictions, dict) or set(predictions) != answered:
        raise DataFormatError(
            f"{job.answers}: predictions must cover exactly the {len(answered)} answered "
            "questions of the coverage file"
        )
    covered = [q for q in dataset if str(q["question_id"]) in answered]
    return aokvqa_eval.evaluate(covered, predictions)


def run_score(job: stages.Score) -> dict[str, Any]:
    """Official accuracy over the answered questions; what was left out, counted by reason."""
    coverage = read_json(job.coverage)
    answered = set(coverage["answered_ids"])
    if len(answered) + len(coverage["left_out"]) != coverage["questions"]:
        raise DataFormatError(
            f"{job.coverage}: {len(answered)} answered + {len(coverage['left_out'])} left out "
            f"is not the {coverage['questions']} questions of the split"
        )
    if job.format == "okvqa":
        result = _covered_okvqa(job, answered)
    elif job.format == "aokvqa":
        result = _covered_aokvqa(job, answered)
    else:
        raise CrossmodalError(f"--format {job.format!r}: choose okvqa or aokvqa")
    result.update(
        n_split_questions=coverage["questions"],
        n_left_out=len(coverage["left_out"]),
        left_out_by_reason=coverage["left_out_by_reason"],
    )
    write_json(job.scores, result)
    return result
