"""Official VQA scoring, case by case, each case worked out by hand from vqaEval.py's rules."""

from __future__ import annotations

import json

import pytest

from crossmodal.cli import main
from crossmodal.errors import DataFormatError
from crossmodal.vqa import aokvqa_eval
from crossmodal.vqa.normalize import process_digit_article, process_punctuation
from crossmodal.vqa.vqa_eval import evaluate, question_accuracy


def gt(*answers):
    return [
        {"answer": a, "answer_id": i + 1, "answer_confidence": "yes"} for i, a in enumerate(answers)
    ]


def test_leave_one_out_average():
    # 2 of 10 say "cat": removing a "cat" annotator leaves 1 match (1/3), else 2 (2/3)
    answers = gt("cat", "cat", *["dog"] * 8)
    assert question_accuracy(answers, "cat") == pytest.approx((2 * (1 / 3) + 8 * (2 / 3)) / 10)
    # 3 matches: removing one of them leaves 2 (2/3); removing another leaves 3 (1)
    answers = gt("cat", "cat", "cat", *["dog"] * 7)
    assert question_accuracy(answers, "cat") == pytest.approx((3 * (2 / 3) + 7 * 1) / 10)
    assert question_accuracy(gt(*["dog"] * 4, *["x"] * 6), "dog") == 1.0


def test_no_normalisation_when_all_answers_agree():
    # all ten identical: the prediction is compared raw, so "Two" and "the dog" do not match
    assert question_accuracy(gt(*["2"] * 10), "two") == 0.0
    assert question_accuracy(gt(*["dog"] * 10), "the dog") == 0.0
    # one differing answer switches normalisation on: now "two" -> "2" and articles drop
    assert question_accuracy(gt(*["2"] * 9, "3"), "two") == 1.0
    assert question_accuracy(gt(*["dog"] * 9, "cat"), "the dog") == 1.0


def test_whitespace_is_always_cleaned():
    assert question_accuracy(gt(*["dog"] * 10), " dog\n") == 1.0
    assert question_accuracy(gt(*["ice\tcream"] * 10), "ice cream") == 1.0


def test_punctuation_rules():
    # "p " or " p" present -> punctuation deleted; otherwise replaced by a space
    assert process_punctuation("hot-dog") == "hot dog"
    assert process_punctuation("a - b") == "a  b"
    # a digit,digit comma anywhere switches to deletion for every mark
    assert process_punctuation("1,000 a-b") == "1000 ab"
    # periods between digits stay; others go
    assert process_punctuation("3.5 mph.") == "3.5 mph"


def test_period_quirk_stops_after_32():
    # re.UNICODE (32) is passed as sub's count: only the first 32 periods are removed
    text = "." * 40
    assert process_punctuation(text) == "." * 8


def test_digit_article_and_contractions():
    assert process_digit_article("The Two dogs") == "2 dogs"
    assert process_digit_article("dont know") == "don't know"
    assert process_digit_article("none of a kind") == "0 of kind"


def test_evaluate_aggregates_and_requires_full_coverage():
    anns = {
        "annotations": [
            {
                "question_id": 1,
                "question_type": "what",
                "answer_type": "other",
                "answers": gt(*["a1"] * 10),
            },
            {
                "question_id": 2,
                "question_type": "what",
                "answer_type": "number",
                "answers": gt(*["2"] * 10),
            },
            {
                "question_id": 3,
                "question_type": "how",
                "answer_type": "number",
                "answers": gt(*["3"] * 10),
            },
        ]
    }
    preds = [
        {"question_id": 1, "answer": "a1"},
        {"question_id": 2, "answer": "2"},
        {"question_id": 3, "answer": "4"},
    ]
    res = evaluate(anns, preds)
    assert res["overall"] == pytest.approx(200 / 3)  # unrounded
    assert res["overall_official_rounding"] == 66.67
    assert res["perQuestionType"] == {"how": 0.0, "what": 100.0}
    assert res["perAnswerType"] == {"number": 50.0, "other": 100.0}
    assert res["per_question"] == {"1": 1.0, "2": 1.0, "3": 0.0}
    with pytest.raises(DataFormatError, match="1 missing"):
        evaluate(anns, preds[:2])


def test_vqa_eval_cli(tmp_path):
    (tmp_path / "q.json").write_text(
        json.dumps({"questions": [{"question_id": 7, "image_id": 1, "question": "?"}]})
    )
    (tmp_path / "a.json").write_text(
        json.dumps(
            {
                "annotations": [
                    {
                        "question_id": 7,
                        "image_id": 1,
                        "question_type": "t",
                        "answer_type": "other",
                        "answers": gt(*["red"] * 5, *["dark red"] * 5),
                    }
                ]
            }
        )
    )
    (tmp_path / "p.json").write_text(json.dumps([{"question_id": 7, "answer": "Red."}]))
    args = [
        "vqa-eval",
        "--questions",
        str(tmp_path / "q.json"),
        "--annotations",
        str(tmp_path / "a.json"),
        "--predictions",
        str(tmp_path / "p.json"),
        "--out",
        str(tmp_path / "acc.json"),
    ]
    assert main(args) == 0
    acc = json.loads((tmp_path / "acc.json").read_text())
    assert acc["overall"] == 100.0 and acc["per_question"] == {"7": 1.0}
    (tmp_path / "p.json").write_text("[{")
    assert main(args) == 2  # malformed predictions: one clear error, exit status 2


def test_aokvqa_rules():
    data = [
        {
            "question_id": "a",
            "choices": ["x", "y"],
            "correct_choice_idx": 1,
            "direct_answers": ["y"] * 2 + ["z"] * 8,
            "difficult_direct_answer": False,
        },
        {
            "question_id": "b",
            "choices": ["x", "y"],
            "correct_choice_idx": 0,
            "direct_answers": ["x"] * 10,
            "difficult_direct_answer": True,
        },
        {
            "question_id": "c",
            "choices": ["p", "q"],
            "correct_choice_idx": 0,
            "direct_answers": ["Q"] * 10,
            "difficult_direct_answer": False,
        },
    ]
    preds = {
        "a": {"direct_answer": "y", "multiple_choice": "y"},
        "b": {"direct_answer": "x", "multiple_choice": "x"},
        "c": {"direct_answer": "q", "multiple_choice": "q"},
    }
    res = aokvqa_eval.evaluate(data, preds)
    # DA: b excluded (difficult); a: 2 matches -> 2/3; c: exact match only, "q" != "Q" -> 0
    assert res["n_direct_answer"] == 2
    assert res["direct_answer"] == pytest.approx(100 * (2 / 3) / 2)
    assert res["multiple_choice"] == pytest.approx(100 * 2 / 3)
    missing = aokvqa_eval.evaluate(data, {"a": {"direct_answer": "z"}})
    assert missing["direct_answer"] == pytest.approx(50.0) and missing["multiple_choice"] == 0.0


def _ann(qid, answers):
    return {"question_id": qid, "question_type": "what", "answer_type": "other", "answers": answers}


def test_empty_answer_list_is_an_error_naming_the_id_not_a_division_by_zero():
    anns = {"annotations": [_ann(1, gt(*["a"] * 10)), _ann(2, [])]}
    preds = [{"question_id": 1, "answer": "a"}, {"question_id": 2, "answer": "b"}]
    with pytest.raises(DataFormatError, match="question_id 2 has an empty 'answers' list"):
        evaluate(anns, preds, "p.json", "a.json")
    with pytest.raises(DataFormatError, match="no ground-truth answers"):
        question_accuracy([], "b")


def test_duplicate_prediction_is_an_error_not_last_wins():
    anns = {"annotations": [_ann(1, gt(*["a"] * 10))]}
    preds = [{"question_id": 1, "answer": "a"}, {"question_id": 1, "answer": "b"}]
    with pytest.raises(DataFormatError, match=r"p.json: question_id 1 is predicted twice"):
        evaluate(anns, preds, "p.json")


def test_duplicate_annotation_is_an_error():
    anns = {"annotations": [_ann(1, gt(*["a"] * 10)), _ann(1, gt(*["b"] * 10))]}
    with pytest.raises(DataFormatError, match=r"a.json: question_id 1 is annotated twice"):
        evaluate(anns, [{"question_id": 1, "answer": "a"}], "p.json", "a.json")


@pytest.mark.parametrize(
    "questions,annotations,predictions,needle",
    [
        ([{"question_id": "x"}], [_ann(1, gt("a"))], [], "q.json: questions[0]: question_id"),
        ([{"question_id": 1}], [["not an object"]], [], "a.json: annotations[0]: expected"),
        (
            [{"question_id": 1}],
            [_ann(1, gt("a"))],
            [{"question_id": "one", "answer": "a"}],
            "p.json: entry 0: question_id must be an integer, got 'one'",
        ),
        (
            [{"question_id": 1}],
            [_ann(1, [])],
            [{"question_id": 1, "answer": "a"}],
            "a.json: annotations[0]: question_id 1 has an empty 'answers' list",
        ),
        ([{"question_id": 1}], [_ann(2, gt("a"))], [], "use the questions and annotations files"),
    ],
)
def test_vqa_eval_files_name_the_file_and_the_problem(
    tmp_path, questions, annotations, predictions, needle
):
    from crossmodal.vqa.vqa_eval import evaluate_files

    (tmp_path / "q.json").write_text(json.dumps({"questions": questions}))
    (tmp_path / "a.json").write_text(json.dumps({"annotations": annotations}))
    (tmp_path / "p.json").write_text(json.dumps(predictions))
    with pytest.raises(DataFormatError) as info:
        evaluate_files(tmp_path / "q.json", tmp_path / "a.json", tmp_path / "p.json")
    assert needle in str(info.value).replace(str(tmp_path) + "/", "")


def test_aokvqa_duplicates_and_bad_choice_index_are_errors(tmp_path):
    q = {"question_id": "a", "choices": ["x", "y"], "correct_choice_idx": 1}
    with pytest.raises(DataFormatError, match="question_id 'a' appears twice"):
        aokvqa_eval.evaluate([q, q], {})
    with pytest.raises(DataFormatError, match="correct_choice_idx 2 is not an index"):
        aokvqa_eval.evaluate([dict(q, correct_choice_idx=2)], {})
    with pytest.raises(DataFormatError, match="'direct_answers' is empty"):
        aokvqa_eval.evaluate([dict(q, direct_answers=[])], {})
    (tmp_path / "d.json").write_text(json.dumps([q]))
    (tmp_path / "p.json").write_text(
        '{"a": {"multiple_choice": "x"}, "a": {"multiple_choice": "y"}}'
    )
    with pytest.raises(DataFormatError, match=r"p.json: key\(s\) \['a'\] appear more than once"):
        aokvqa_eval.evaluate_files(tmp_path / "d.json", tmp_path / "p.json")
