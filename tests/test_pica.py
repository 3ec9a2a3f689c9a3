"""PICa: golden prompt, example ranking, ensemble choice, answer clean-up, summary schema."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.jobs import pica_settings

from crossmodal.errors import CrossmodalError
from crossmodal.generation import Response
from crossmodal.summary import summarize
from crossmodal.vqa.pica import (
    Example,
    PicaSettings,
    answer_questions,
    build_prompt,
    choose,
    process_answer,
    rank_examples,
)

GOLDEN = (
    "Please answer the question according to the above context.\n===\n"
    "Context: A dog on a sofa.\n===\n"
    "Q: What animal is this?\nA: dog\n\n===\n"
    "Context: Two red buses.\n===\n"
    "Q: What city has these buses?\nA: london\n\n===\n"
    "Context: The image shows a cat. It sleeps\n===\n"
    "Q: What do cats eat?\nA:"
)


def test_golden_prompt():
    examples = [
        Example("A dog on a sofa.", "What animal is this?", "dog"),
        Example("Two red buses.", "What city has these buses?", "london"),
    ]
    prompt = build_prompt(examples, "The image shows a cat. It sleeps", "What do cats eat?")
    assert prompt == GOLDEN


def test_answer_cleanup_as_pica():
    assert process_answer(" The Fish.") == "fish"
    assert process_answer(" to the store, quickly") == "store quickly"
    assert process_answer(" an apple") == "apple"


def test_ranking_equals_brute_force_imagequestion_similarity():
    rng = np.random.default_rng(0)
    qv, iv = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    qt, it = rng.standard_normal((50, 8)), rng.standard_normal((50, 8))
    got = rank_examples(qv, iv, qt, it, n=12, chunk=2)
    for i in range(5):
        sims = [qv[i] @ qt[j] + iv[i] @ it[j] for j in range(50)]
        expect = sorted(range(50), key=lambda j: -sims[j])[:12]
        assert got[i].tolist() == expect


def test_ensemble_picks_highest_summed_logprob_first_of_equals():
    resps = [
        Response(" cat", logprobs=[-0.5, -1.0]),
        Response(" dog", logprobs=[-0.2, -0.3]),
        Response(" bird", logprobs=[-0.5]),
    ]
    assert choose(resps) == ("dog", "logprob")
    tie = [Response(" a cat", logprobs=[-1.0]), Response(" dog", logprobs=[-1.0])]
    assert choose(tie) == ("cat", "logprob")


def test_majority_vote_without_logprobs():
    resps = [Response(" cat"), Response(" dog"), Response(" Dog."), Response(" cat")]
    assert choose(resps) == ("cat", "majority")  # tie 2-2: earliest (most similar examples)
    assert choose([Response(" x"), Response(" y"), Response(" y")]) == ("y", "majority")


def test_ensemble_groups_use_consecutive_ranks():
    ranked = [Example(f"c{i}", f"q{i}", f"a{i}") for i in range(6)]
    settings = PicaSettings.from_dict(pica_settings(n_shot=2, n_ensemble=3))
    seen = []

    def generate(requests):
        seen.extend(r.messages[0].parts[0].value for r in requests)
        return [Response(" x", logprobs=[-float(i)]) for i in range(len(requests))]

    def examples_for(i):
        return [ranked[r * 2 : (r + 1) * 2] for r in range(3)]

    out = answer_questions([(1, "ctx", "what?")], examples_for, settings, generate)
    assert len(seen) == 3
    assert "Q: q0" in seen[0] and "Q: q1" in seen[0] and "Q: q2" not in seen[0]
    assert seen[0].index("Q: q0") < seen[0].index("Q: q1")  # most similar first
    assert "Q: q4" in seen[2] and "Q: q5" in seen[2]
    assert out == [
        {"question_id": 1, "answer": "x", "rule": "logprob", "candidates": ["x", "x", "x"]}
    ]


def test_failed_requests_are_all_named_not_dropped():
    settings = PicaSettings.from_dict(pica_settings(n_shot=1, n_ensemble=2))

    def generate(requests):  # the second question's second ensemble member fails for good
        return [Response("", error="HTTP 500") if i == 3 else Response(" x") for i in range(4)]

    targets = [(7, "ctx", "q?"), (8, "ctx", "q?")]
    with pytest.raises(CrossmodalError, match="1 of 4 PICa requests failed") as info:
        answer_questions(targets, lambda i: [[Example("c", "q", "a")]] * 2, settings, generate)
    assert "question 8: HTTP 500" in str(info.value) and "question 7" not in str(info.value)


def test_pica_request_shape():
    from crossmodal.vqa.pica import pica_request

    r = pica_request(GOLDEN, PicaSettings.from_dict(pica_settings(max_tokens=5)))
    assert r.raw and r.logprobs and r.max_tokens == 5 and r.temperature == 0.0
    assert r.stop == ("\n",) and r.messages[0].parts[0].value == GOLDEN


def _score(path, result, left_out=None):
    """A score file as the score stage writes it: the evaluator's result plus coverage."""
    left_out = left_out or {}
    result = dict(
        result,
        n_split_questions=result.get("n_questions", result.get("n_direct_answer", 0))
        + sum(left_out.values()),
        n_left_out=sum(left_out.values()),
        left_out_by_reason=left_out,
    )
    path.write_text(json.dumps(result))
    return path


def test_summary_schema(tmp_path):
    runs, scores = [], []
    for k, acc in ((1, 10.0), (2, 12.5)):
        scores.append(
            _score(
                tmp_path / f"s{k}.json",
                {"overall": acc, "n_questions": 40},
                {"beyond describe.limit=40": 7},
            )
        )
        runs.append(
            dict(dataset="okvqa", vlm="v", method="recod", loop=k, llm="l", config_hash="abc")
        )
    recs = summarize(runs, scores, tmp_path / "acc.json", tmp_path / "acc.png", "title")
    saved = json.loads((tmp_path / "acc.json").read_text())
    assert saved["runs"] == recs and [r["accuracy"] for r in recs] == [10.0, 12.5]
    assert set(recs[0]) == {
        "dataset",
        "vlm",
        "method",
        "loop",
        "llm",
        "config_hash",
        "accuracy",
        "n_questions",
        "n_split_questions",
        "n_left_out",
        "left_out_by_reason",
    }
    # the summary says over how many questions, and what was left out and why
    assert (recs[0]["n_questions"], recs[0]["n_split_questions"], recs[0]["n_left_out"]) == (
        40,
        47,
        7,
    )
    assert recs[0]["left_out_by_reason"] == {"beyond describe.limit=40": 7}
    assert (tmp_path / "acc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_reads_aokvqa_scores(tmp_path):
    score = _score(
        tmp_path / "s.json", {"direct_answer": 40.0, "multiple_choice": 60.0, "n_direct_answer": 9}
    )
    run = dict(dataset="aokvqa", vlm="v", method="base", loop=1, llm="l", config_hash="h")
    recs = summarize([run], [score], tmp_path / "a.json", tmp_path / "a.png", "t")
    assert recs[0]["accuracy"] == 40.0 and recs[0]["multiple_choice"] == 60.0


def test_multiple_choice_mapping():
    from crossmodal.vqa.pica import map_to_choices

    def embed(texts):  # a transparent stand-in embedding: letters as axes
        vecs = np.array(
            [[t.count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts], dtype=float
        )
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)

    choices = [["The Apple", "banana"], ["zzz", "kiwi"]]
    # exact after PICa's clean-up; otherwise the nearest choice by embedding
    assert map_to_choices(["apple", "kiwis"], choices, embed) == ["The Apple", "kiwi"]
