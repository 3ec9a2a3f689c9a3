"""Dialogue descriptors: strict parsing, the one repair, the counted fallback, the CLIP text."""

from __future__ import annotations

import json

import pytest

from crossmodal.dialog.descriptor import (
    KEYS,
    DescriptorParseError,
    DescriptorSettings,
    describe_dialogues,
    descriptor_prompt,
    descriptor_text,
    dialogue_lines,
    fallback_text,
    parse_descriptor,
    truncate_tokens,
)
from crossmodal.errors import CrossmodalError
from crossmodal.generation.types import Response

VALUES = {
    "main subject": "a golden retriever",
    "prominent objects in the foreground": ["a red ball", "grass"],
    "background scene": "a park",
    "events": "None",
    "materials and attributes": "",
}
GOOD = json.dumps(VALUES)


def test_strict_json_with_the_five_keys_parses():
    values = parse_descriptor("\n" + GOOD + "\n")
    assert values["prominent objects in the foreground"] == "a red ball, grass"
    assert list(values) == list(KEYS)


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("Sure! Here is the JSON:\n" + GOOD, "text around the JSON object"),
        (GOOD + "\nI hope this helps.", "text around the JSON object"),
        (GOOD[:-1] + ",}", "a trailing comma"),
        ("The photo shows a dog in a park.", "not valid JSON"),
        (json.dumps({k: v for k, v in VALUES.items() if k != "events"}), "missing keys ['events']"),
        (json.dumps({**VALUES, "lighting": "dim"}), "unknown keys ['lighting']"),
        (json.dumps([VALUES]), "a JSON list, not an object"),
        (json.dumps({**VALUES, "events": 3}), 'key "events" has a int value'),
    ],
)
def test_malformed_answers_are_errors_naming_the_problem(answer, problem):
    with pytest.raises(DescriptorParseError) as info:
        parse_descriptor(answer)
    assert problem in str(info.value)


def test_text_format_lines_anonymised_empty_dropped():
    text = descriptor_text(
        {
            "main subject": "User 0 and user 1's dog",
            "prominent objects in the foreground": "a Ball",
            "background scene": "none",
            "events": "",
            "materials and attributes": "the user's red collar",
        }
    )
    assert text.split("\n") == [
        "the main subject of the photo is a person and a person's dog",
        "the prominent objects in the foreground of the photo is a ball",
        "the materials and attributes of the photo is the a person's red collar",
    ]


def test_text_is_truncated_to_77_clip_tokens_on_a_word_boundary():
    from open_clip.tokenizer import SimpleTokenizer

    long = " ".join(f"word{i}" for i in range(200))
    cut = truncate_tokens(long)
    n = len(SimpleTokenizer().encode(cut))
    assert n <= 75 < len(SimpleTokenizer().encode(long))
    assert long.startswith(cut) and long[len(cut)] == " "  # whole words
    nxt = long[: long.index(" ", len(cut) + 1)]
    assert len(SimpleTokenizer().encode(nxt)) > 75  # the longest prefix that fits
    assert truncate_tokens("a short one") == "a short one"


def test_dialogue_lines_stop_at_the_first_shared_photo_and_prompt_holds_them():
    turns = [
        {"message": "hi", "share_photo": False, "user_id": 1},
        {"message": "look at my dog", "share_photo": False, "user_id": 0},
        {"message": "", "share_photo": True, "user_id": 0},
        {"message": "cute!", "share_photo": False, "user_id": 1},
    ]
    lines = dialogue_lines(turns)
    assert lines == ["User 1: hi", "User 0: look at my dog"]
    prompt = descriptor_prompt(lines)
    assert (
        "<start of dialogue>\n\nUser 1: hi\nUser 0: look at my dog\n\n</end of dialogue>" in prompt
    )
    assert all(f"- {k}: " in prompt for k in KEYS) and prompt.endswith("Answers:")
    assert fallback_text(lines) == "a person: hi\na person: look at my dog"


class Scripted:
    """A generator answering from a script keyed by the last user message's first words."""

    def __init__(self, first: dict[str, str], repair: dict[str, str]):
        self.first, self.repair, self.calls = first, repair, []

    def __call__(self, requests):
        self.calls.append(requests)
        out = []
        for req in requests:
            prompt = req.messages[0].parts[0].value
            key = next(k for k in self.first if k in prompt)
            table = self.repair if len(req.messages) > 1 else self.first
            out.append(Response(table[key], tokens_in=10, tokens_out=5))
        return out


def test_one_repair_then_a_counted_listed_fallback():
    dialogues = [(7, ["User 0: alpha"]), (8, ["User 0: beta"]), (9, ["User 0: gamma"])]
    gen = Scripted(
        first={"alpha": GOOD, "beta": "Here: " + GOOD, "gamma": "no idea"},
        repair={"beta": GOOD, "gamma": GOOD[:-1] + ",}"},
    )
    out, report = describe_dialogues(dialogues, gen, DescriptorSettings())
    assert [d.status for d in out] == ["ok", "repaired", "fallback"]
    assert (report.ok, report.repaired, report.fallback) == (1, 1, 1)
    assert list(report.fallbacks) == ["9"] and "trailing comma" in report.fallbacks["9"]
    assert out[2].text == "a person: gamma"  # the raw dialogue, anonymised
    assert out[1].text == out[0].text and "golden retriever" in out[0].text
    # one batch of first requests, one batch of repairs (bounded: only the two malformed)
    assert [len(c) for c in gen.calls] == [3, 2]
    repair = gen.calls[1][0]
    assert [m.role for m in repair.messages] == ["user", "assistant", "user"]
    assert "text around the JSON object" in repair.messages[2].parts[0].value


def test_a_request_failed_for_good_is_an_error_not_a_fallback():
    def failing(requests):
        return [Response("", error="HTTP 500") for _ in requests]

    with pytest.raises(CrossmodalError, match="dialogue 4: HTTP 500"):
        describe_dialogues([(4, ["User 0: x"])], failing, DescriptorSettings())
