"""Visual descriptors of a dialogue: the LLM prompt, strict parsing, one repair, a counted fallback.

An LLM reads the turns before a photo is shared and describes the photo as JSON with five keys;
CLIP then matches the descriptor's text to photos. Reference: MiuLab/VisualDialog @ fdd4afb
("Visualizing Dialogues", Kao & Chen, ACL Findings 2024):

* the dialogue lines are ``User {user_id}: {message}`` for every turn before the first shared
  photo (utils/data/data_processor.py:109-115);
* the prompt is ``get_descriptor_prompt`` (utils/prompts.py:3-24): the dialogue between
  ``<start of dialogue>`` / ``</end of dialogue>``, the instruction to describe the photograph
  shared by user 0 as JSON, one ``- key: {...}`` line per key, then ``Answers:``;
* the CLIP text keeps five keys (utils/data/data_loader.py:67-68), one line
  ``the {key} of the photo is {value}`` each, lower-cased, speakers anonymised ("user 0",
  "user 1", "user" -> "a person") and "none" values dropped (data_loader.py:75-82), truncated
  to CLIP's 77 tokens (``clip.tokenize(..., truncate=True)``, data_loader.py:90).

Departures, and why:

1. The prompt lists the five keys the CLIP text uses, not eight: the reference asks for
   actions, atmosphere and lighting as well and then never uses them.
2. The prompt is one user chat message ending with ``Answers:``; the reference's completion
   prompt ends with an opening ``{`` that the model continues. Not every backend continues a
   prefill, and the parser needs the whole object.
3. Parsing is strict (the answer is exactly one JSON object with exactly the five keys, values
   strings, lists of strings or null). The reference patches common mistakes with string
   replacements (data_processor.py:168-210) and drops what still fails to parse from the data
   set (data_processor.py:152-163). Here a malformed answer gets one repair request (the
   answer, what is wrong with it, the keys again) through the same generation layer, and what
   the repair cannot fix falls back to the raw dialogue text: counted, listed with the reason,
   never dropped.
4. Truncation keeps whole words: the longest prefix of words whose CLIP tokens fit 75 (77 with
   the start and end tokens), so the stored text is what CLIP sees.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from crossmodal.errors import CrossmodalError
from crossmodal.generation.types import Message, Request, Response, raise_for_failures, text, user

KEYS = (
    "main subject",
    "prominent objects in the foreground",
    "background scene",
    "events",
    "materials and attributes",
)
# The value hint of each key, as the reference's prompt has it (utils/prompts.py:8-12).
HINTS = {
    "main subject": "{simply list the answer by ','}",
    "prominent objects in the foreground": "{simply list the answer by ','}",
    "background scene": "{one background scene}",
    "events": "{simply list the answer by ','}",
    "materials and attributes": "{simply list the answer by ','}",
}
CONTEXT_TOKENS = 77  # CLIP's text context, start and end tokens included
NONE_VALUES = frozenset({"", "none"})  # the reference's none_reply, plus empty values

Generate = Callable[[list[Request]], list[Response]]


class DescriptorParseError(CrossmodalError):
    """An LLM answer is not one JSON object with exactly the five descriptor keys."""


# --- dialogue and prompt -------------------------------------------------------------------------


def dialogue_lines(turns: Sequence[dict[str, Any]]) -> list[str]:
    """``User {user_id}: {message}`` for each turn before the first shared photo."""
    lines = []
    for turn in turns:
        if turn["share_photo"]:
            break
        lines.append(f"User {turn['user_id']}: {turn['message']}")
    return lines


def descriptor_prompt(lines: Sequence[str]) -> str:
    """The reference's descriptor prompt over the dialogue lines (five keys; see departures)."""
    keys = "\n".join(f"- {k}: {HINTS[k]}" for k in KEYS)
    return (
        "Please read the following dialogue context:\n\n<start of dialogue>\n\n"
        + "\n".join(lines)
        + "\n\n</end of dialogue>\n\n"
        "Based on the dialogue context, please describe the photograph shared by user 0. "
        'List the answer in JSON format ("key" (str): "value" (str))\n\n' + keys + "\n\nAnswers:"
    )


@dataclass(frozen=True)
class DescriptorSettings:
    """How descriptor requests are sampled (``dialog.descriptor`` in the config)."""

    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 0


def descriptor_request(lines: Sequence[str], settings: DescriptorSettings) -> Request:
    return Request(
        messages=(user(text(descriptor_prompt(lines))),),
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        seed=settings.seed,
    )


def repair_request(first: Request, answer: str, problem: str) -> Request:
    """The one repair attempt: the first exchange, what is wrong, and the keys again."""
    keys = ", ".join(f'"{k}"' for k in KEYS)
    instruction = (
        f"Your answer is not valid: {problem}. Reply with only one JSON object with exactly "
        f"these keys: {keys}; each value a string (an empty string if unknown). No other text."
    )
    messages = (*first.messages, Message("assistant", (text(answer),)), user(text(instruction)))
    return Request(
        messages=messages,
        max_tokens=first.max_tokens,
        temperature=first.temperature,
        seed=first.seed,
    )


# --- parsing -------------------------------------------------------------------------------------


def _value(key: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(v.strip() for v in value)  # the reference joins lists the same way
    raise DescriptorParseError(f'key "{key}" has a {type(value).__name__} value, not a string')


def _json_problem(body: str, exc: json.JSONDecodeError) -> str:
    """What is wrong with an answer that is not JSON, in words the repair request can quote."""
    start, end = body.find("{"), body.rfind("}")
    if start > 0 or (start >= 0 and end < len(body) - 1):
        return "text around the JSON object"
    if re.search(r",\s*[}\]]", body):
        return "a trailing comma"
    return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"


def parse_descriptor(answer: str) -> dict[str, str]:
    """The five values of an answer that is exactly one JSON object with exactly the five keys.

    Anything else (prose around the object, a trailing comma, a missing or unknown key, a
    non-string value, no JSON at all) raises :class:`DescriptorParseError` naming the problem,
    which the repair request quotes back to the model.
    """
    body = answer.strip()
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as exc:
        raise DescriptorParseError(_json_problem(body, exc)) from None
    if not isinstance(obj, dict):
        raise DescriptorParseError(f"a JSON {type(obj).__name__}, not an object")
    missing = [k for k in KEYS if k not in obj]
    unknown = [k for k in obj if k not in KEYS]
    if missing or unknown:
        parts = ([f"missing keys {missing}"] if missing else []) + (
            [f"unknown keys {unknown}"] if unknown else []
        )
        raise DescriptorParseError("; ".join(parts))
    return {k: _value(k, obj[k]) for k in KEYS}


# --- CLIP text -----------------------------------------------------------------------------------


def anonymise(line: str) -> str:
    """Lower-case; "user 0", "user 1", then any "user" become "a person" (data_loader.py:78)."""
    lowered = line.lower()
    return (
        lowered.replace("user 0", "a person")
        .replace("user 1", "a person")
        .replace("user", "a person")
    )


@lru_cache(maxsize=1)
def _clip_bpe():
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


def truncate_tokens(sentence: str, context: int = CONTEXT_TOKENS) -> str:
    """The longest whole-word prefix of ``sentence`` whose CLIP tokens fit ``context`` (start
    and end tokens included). A first word longer than the context on its own is cut by the
    tokenizer later; it is kept rather than leaving the text empty."""
    budget = context - 2
    encode = _clip_bpe().encode
    if len(encode(sentence)) <= budget:
        return sentence
    ends = [m.end() for m in re.finditer(r"\S+", sentence)]
    lo, hi = 1, len(ends)  # the answer is the largest n with encode(prefix_n) <= budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encode(sentence[: ends[mid - 1]])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return sentence[: ends[lo - 1]]


def descriptor_text(values: dict[str, str], context: int = CONTEXT_TOKENS) -> str:
    """VisualDialog's CLIP text: ``the {key} of the photo is {value}`` per non-empty value."""
    lines = [
        anonymise(f"the {k} of the photo is {values[k]}")
        for k in KEYS
        if values[k].strip().lower() not in NONE_VALUES
    ]
    return truncate_tokens("\n".join(lines), context)


def fallback_text(lines: Sequence[str], context: int = CONTEXT_TOKENS) -> str:
    """The raw dialogue (speakers anonymised, truncated), for an answer that could not be
    parsed: the reference's dialogue-only text (data_loader.py:39-40)."""
    return truncate_tokens("\n".join(anonymise(line) for line in lines), context)


# --- a batch of dialogues ------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    """One dialogue's descriptor: the parsed values (empty for a fallback) and the CLIP text."""

    dialogue_id: int
    status: str  # ok | repaired | fallback
    values: dict[str, str]
    text: str
    answer: str  # the last answer received
    problem: str = ""  # why the first answer (and, for a fallback, the repair) failed


@dataclass
class DescriptorReport:
    ok: int = 0
    repaired: int = 0
    fallback: int = 0
    fallbacks: dict[str, str] = field(default_factory=dict)  # dialogue_id -> problem

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def describe_dialogues(
    dialogues: Sequence[tuple[int, Sequence[str]]],
    generate: Generate,
    settings: DescriptorSettings,
) -> tuple[list[Descriptor], DescriptorReport]:
    """Descriptors of ``(dialogue_id, lines)``: one request each, one repair request for each
    malformed answer (in one batch), then the raw-dialogue fallback, counted and listed.

    A request that failed for good (after the backend's retries) is an error naming it:
    answered requests are journalled, so a rerun resends only the failed ones.
    """
    ids = [d for d, _ in dialogues]
    firsts = [descriptor_request(lines, settings) for _, lines in dialogues]
    answers = generate(firsts)
    raise_for_failures(answers, [f"dialogue {d}" for d in ids], "descriptor")
    parsed: dict[int, dict[str, str]] = {}
    problems: dict[int, str] = {}
    for i, resp in enumerate(answers):
        try:
            parsed[i] = parse_descriptor(resp.text)
        except DescriptorParseError as exc:
            problems[i] = str(exc)
    todo = sorted(problems)
    repairs = [repair_request(firsts[i], answers[i].text, problems[i]) for i in todo]
    repaired = generate(repairs) if repairs else []
    raise_for_failures(repaired, [f"dialogue {ids[i]} (repair)" for i in todo], "descriptor")
    last = {i: r.text for i, r in zip(todo, repaired, strict=True)}
    report = DescriptorReport()
    out: list[Descriptor] = []
    for i, (dialogue_id, lines) in enumerate(dialogues):
        if i in parsed:
            report.ok += 1
            values = parsed[i]
            out.append(
                Descriptor(dialogue_id, "ok", values, descriptor_text(values), answers[i].text)
            )
            continue
        try:
            values = parse_descriptor(last[i])
        except DescriptorParseError as exc:
            problem = f"first answer: {problems[i]}; repair: {exc}"
            report.fallback += 1
            report.fallbacks[str(dialogue_id)] = problem
            empty = dict.fromkeys(KEYS, "")
            out.append(
                Descriptor(dialogue_id, "fallback", empty, fallback_text(lines), last[i], problem)
            )
            continue
        report.repaired += 1
        out.append(
            Descriptor(
                dialogue_id, "repaired", values, descriptor_text(values), last[i], problems[i]
            )
        )
    return out, report
