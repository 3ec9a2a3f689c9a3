"""Class descriptions from an LLM in CuPL's way, for any class list (``wca-describe-classes``).

CuPL (Pratt et al., ICCV 2023; sarahpratt/CuPL, ``generate_image_prompts.py``) asks GPT-3 a
few questions per class ("Describe what a(n) {} looks like", ...) with ``n`` samples each,
``temperature=0.99``, ``max_tokens=50``, ``stop="."``, and keeps each answer with
``"\\n\\n"`` removed and a full stop added. Here every question x sample is one seeded request
through the generation layer (:class:`crossmodal.generation.journal.JournaledGenerator`):
any configured LLM (API, vLLM, transformers, the demo's tiny model), journalled so a rerun
sends nothing already answered, with a ledger of tokens and cost.

Garbage is counted, listed and left out, never silently dropped: an answer that is empty,
has no letters, or has fewer than ``min_words`` words is listed in the ledger's ``garbage``
with its class, question, sample and reason. A class left with no description is an error
naming it (the zero-shot stage could not score it), with the fix.

The article follows CuPL's rule: "an" when the class name starts with an upper-case vowel
(``A E I O U``), else "a" (so "an Egyptian cat" but "a eft"), as its code has it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossmodal.errors import CrossmodalError, DataFormatError
from crossmodal.generation.journal import JournaledGenerator
from crossmodal.generation.types import Request, Response, raise_for_failures, text, user
from crossmodal.io import read_json, write_json
from crossmodal.wca.texts import wordify

log = logging.getLogger(__name__)

VOWELS = ("A", "E", "I", "O", "U")  # CuPL: vowel_list (upper case only)
SETTING_KEYS = ("prompts", "n_per_prompt", "max_tokens", "temperature", "min_words", "seed")
_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class DescribeSettings:
    """How the questions are asked and answers kept; every key comes from the config."""

    prompts: list[str]  # each with "{article}" and "{}" (the class name)
    n_per_prompt: int
    max_tokens: int
    temperature: float
    min_words: int
    seed: int

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DescribeSettings:
        missing = [k for k in SETTING_KEYS if k not in values]
        unknown = sorted(set(values) - set(SETTING_KEYS))
        if missing or unknown:
            raise CrossmodalError(
                f"class-description settings: missing keys {missing}, unknown keys {unknown} "
                "(the wca.describe block)"
            )
        settings = cls(**{k: values[k] for k in SETTING_KEYS})
        bad = [p for p in settings.prompts if "{}" not in p]
        if not settings.prompts or bad:
            raise CrossmodalError(
                f"wca.describe.prompts: every prompt needs '{{}}' for the class name; {bad[:3]}"
            )
        if settings.n_per_prompt < 1:
            raise CrossmodalError("wca.describe.n_per_prompt must be at least 1")
        return settings


def article(name: str) -> str:
    """CuPL's article: "an" only before an upper-case vowel."""
    return "an" if name[:1] in VOWELS else "a"


def questions(name: str, settings: DescribeSettings) -> list[str]:
    """The class's questions, CuPL's prompts filled with its article and name."""
    return [p.replace("{article}", article(name)).replace("{}", name) for p in settings.prompts]


def requests_for(classes: list[str], settings: DescribeSettings) -> list[tuple[int, int, int]]:
    """(class index, prompt index, sample) of every request, in class-major order."""
    return [
        (c, p, s)
        for c in range(len(classes))
        for p in range(len(settings.prompts))
        for s in range(settings.n_per_prompt)
    ]


def build_request(question: str, sample: int, settings: DescribeSettings) -> Request:
    """One sample of one question; the sample index varies the seed as CuPL's ``n`` does."""
    return Request(
        messages=(user(text(question)),),
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        seed=settings.seed + sample,
        stop=(".",),
    )


def clean(answer: str) -> str:
    """CuPL's clean-up: ``"\\n\\n"`` removed, cut at the first full stop (the stop string a
    backend may not honour), whitespace stripped."""
    body = answer.replace("\n\n", "").split(".")[0]
    return " ".join(body.split())


def garbage_reason(cleaned: str, min_words: int) -> str | None:
    """Why a cleaned answer is not a description, or None when it is one."""
    if not cleaned:
        return "empty"
    if not _LETTER.search(cleaned):
        return "no letters"
    words = [w for w in cleaned.split() if _LETTER.search(w)]
    if len(words) < min_words:
        return f"fewer than {min_words} words"
    return None


def collect(
    classes: list[str],
    settings: DescribeSettings,
    owners: list[tuple[int, int, int]],
    responses: list[Response],
) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """CuPL's {class: [descriptions]} (kept answers, full stop added) and the garbage list."""
    kept: dict[str, list[str]] = {name: [] for name in classes}
    garbage: list[dict[str, Any]] = []
    for (c, p, s), resp in zip(owners, responses, strict=True):
        cleaned = clean(resp.text)
        reason = garbage_reason(cleaned, settings.min_words)
        if reason is None:
            kept[classes[c]].append(cleaned + ".")
        else:
            garbage.append(
                {"class": classes[c], "prompt": p, "sample": s, "text": resp.text, "reason": reason}
            )
    return kept, garbage


def describe_classes(
    classes: list[str],
    settings: DescribeSettings,
    generate,
) -> tuple[dict[str, list[str]], list[dict[str, Any]]]:
    """Ask every question of every class; return the descriptions and the garbage list.

    ``generate`` takes a list of requests and returns the responses in order (a
    JournaledGenerator). A failed request is an error naming the class and question.
    """
    owners = requests_for(classes, settings)
    asked = {c: questions(name, settings) for c, name in enumerate(classes)}
    reqs = [build_request(asked[c][p], s, settings) for c, p, s in owners]
    responses = generate(reqs)
    raise_for_failures(
        responses, [f"class {classes[c]!r}, question {p}" for c, p, _ in owners], "class text"
    )
    return collect(classes, settings, owners, responses)


def run_describe_classes(job) -> dict[str, Any]:
    """The ``wca-describe-classes`` stage (a :class:`crossmodal.stages.WcaDescribeClasses`)."""
    settings = DescribeSettings.from_dict(job.settings)
    raw = read_json(job.classes)
    if not isinstance(raw, list) or not raw or not all(isinstance(n, str) for n in raw):
        raise DataFormatError(f"{job.classes}: expected a non-empty JSON list of class names")
    classes = [wordify(n) for n in raw]  # the names the zero-shot stage looks texts up by
    dupes = sorted({n for n in classes if classes.count(n) > 1})
    if dupes:
        raise DataFormatError(f"{job.classes}: class names {dupes[:5]} appear twice")
    with JournaledGenerator(job.llm, job.journal, own="journal.jsonl", chunk=job.chunk) as gen:
        descriptions, garbage = describe_classes(classes, settings, gen)
        stats = gen.stats()
    empty = [name for name, texts in descriptions.items() if not texts]
    ledger = {
        **stats,
        "classes": len(classes),
        "descriptions": sum(len(t) for t in descriptions.values()),
        "garbage_count": len(garbage),
        "garbage_by_reason": _count(g["reason"] for g in garbage),
        "garbage": garbage,
        "classes_without_descriptions": empty,
        "settings": job.settings,
    }
    write_json(job.ledger, ledger)
    if empty:
        raise CrossmodalError(
            f"{len(empty)} class(es) got no usable description from {job.llm.get('model')}, "
            f"e.g. {empty[:5]} (every answer is listed under 'garbage' in {job.ledger}); "
            "raise wca.describe.n_per_prompt or max_tokens, lower min_words, or use a "
            "stronger LLM"
        )
    write_json(Path(job.descriptions), descriptions)
    log.info(
        "%d classes: %d descriptions kept, %d garbage answers listed in %s",
        len(classes),
        ledger["descriptions"],
        len(garbage),
        job.ledger,
    )
    return ledger


def _count(values) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts
