"""wca-describe-classes: CuPL-style questions through the journal; garbage counted and listed;
a rerun sends nothing; a class without a description is an error naming it."""

from __future__ import annotations

import json

import pytest

from crossmodal import stages
from crossmodal.errors import CrossmodalError
from crossmodal.generation import Response
from crossmodal.generation import registry as generation_registry
from crossmodal.wca import describe
from crossmodal.wca.describe import DescribeSettings, article, clean, garbage_reason, questions

SETTINGS = {
    "prompts": ["Describe what {article} {} looks like", "How can you identify {article} {}?"],
    "n_per_prompt": 2,
    "max_tokens": 20,
    "temperature": 0.99,
    "min_words": 2,
    "seed": 7,
}
SPEC = {"backend": "transformers", "model": "org/llm", "revision": "r1", "dtype": "auto"}


class Scripted:
    """The LLM's stand-in: answers from the question it is asked, counts what it is sent."""

    def __init__(self, answers: dict[str, list[str]]):
        self.answers, self.sent = answers, []

    def generate(self, requests):
        out = []
        for r in requests:
            self.sent.append(r)
            question = r.messages[0].parts[0].value
            name = next(c for c in self.answers if c in question)
            out.append(Response(self.answers[name][r.seed - SETTINGS["seed"]]))
        return out

    def close(self):
        pass


def _job(tmp_path, classes: list[str]) -> stages.WcaDescribeClasses:
    (tmp_path / "classes.json").write_text(json.dumps(classes))
    return stages.WcaDescribeClasses(
        classes=tmp_path / "classes.json",
        descriptions=tmp_path / "out" / "descriptions.json",
        ledger=tmp_path / "out" / "ledger.json",
        llm=SPEC,
        settings=SETTINGS,
        journal=tmp_path / "journal",
        chunk=3,
    )


def _backend(monkeypatch, backend) -> None:
    monkeypatch.setattr(generation_registry, "build_generator", lambda spec: backend)


ANSWERS = {
    "Egyptian cat": [" A slender cat with large ears.\n\nIt is.", "A spotted coat. Then more"],
    "tiger shark": ["", "12 34!"],
}


def test_descriptions_in_cupl_format_with_garbage_counted_and_a_rerun_sending_nothing(
    tmp_path, monkeypatch
):
    answers = {**ANSWERS, "tiger shark": ["Stripes", "A grey shark with dark stripes"]}
    first = Scripted(answers)
    _backend(monkeypatch, first)
    job = _job(tmp_path, ["Egyptian_cat", "tiger shark"])
    ledger = describe.run_describe_classes(job)
    assert [r.messages[0].parts[0].value for r in first.sent[:3]] == [
        "Describe what an Egyptian cat looks like",
        "Describe what an Egyptian cat looks like",
        "How can you identify an Egyptian cat?",
    ]
    assert [r.seed for r in first.sent[:2]] == [7, 8] and first.sent[0].stop == (".",)
    result = json.loads(job.descriptions.read_text())
    assert result == {
        "Egyptian cat": ["A slender cat with large ears.", "A spotted coat."] * 2,
        "tiger shark": ["A grey shark with dark stripes."] * 2,
    }
    assert ledger["garbage_count"] == 2
    assert ledger["garbage_by_reason"] == {"fewer than 2 words": 2}
    assert {(g["class"], g["prompt"], g["sample"]) for g in ledger["garbage"]} == {
        ("tiger shark", 0, 0),
        ("tiger shark", 1, 0),
    }
    assert (ledger["sent"], ledger["requests"]) == (8, 8)
    assert json.loads(job.ledger.read_text())["garbage_count"] == 2

    class Refusing(Scripted):
        def generate(self, requests):
            raise AssertionError("a rerun must answer from the journal")

    _backend(monkeypatch, Refusing({}))
    job.descriptions.unlink()
    again = describe.run_describe_classes(job)
    assert (again["sent"], again["answered_from_journal"]) == (0, 8)
    assert json.loads(job.descriptions.read_text()) == result


def test_a_class_left_without_descriptions_is_an_error_naming_it(tmp_path, monkeypatch):
    _backend(monkeypatch, Scripted(ANSWERS))
    job = _job(tmp_path, ["Egyptian cat", "tiger shark"])
    with pytest.raises(CrossmodalError, match=r"1 class\(es\) got no usable description.*tiger"):
        describe.run_describe_classes(job)
    ledger = json.loads(job.ledger.read_text())
    assert ledger["classes_without_descriptions"] == ["tiger shark"]
    assert ledger["garbage_by_reason"] == {"empty": 2, "no letters": 2}
    assert not job.descriptions.exists()


def test_cupl_article_and_clean_up():
    settings = DescribeSettings.from_dict(SETTINGS)
    assert article("Egyptian Mau") == "an" and article("eft") == "a"  # CuPL: upper-case vowels
    assert questions("eft", settings)[1] == "How can you identify a eft?"
    assert clean("\n\nA red fruit. With a stem") == "A red fruit"
    assert garbage_reason("", 1) == "empty" and garbage_reason("--- 42", 1) == "no letters"
    assert garbage_reason("round", 2) == "fewer than 2 words"
    assert garbage_reason("a round shape", 2) is None
    with pytest.raises(CrossmodalError, match=r"missing keys \['seed'\]"):
        DescribeSettings.from_dict({k: v for k, v in SETTINGS.items() if k != "seed"})
    with pytest.raises(CrossmodalError, match="needs '{}'"):
        DescribeSettings.from_dict({**SETTINGS, "prompts": ["Describe a thing"]})
