"""Caption clean-up: boilerplate openings, sentence splitting, the short-sentence filter."""

from __future__ import annotations

import re

# Openings a model uses to restate the task rather than describe; stripped from loop outputs.
BOILERPLATE = (
    "the first image shows",
    "the first image depicts",
    "the first image features",
    "in the first image,",
    "the image shows",
    "the image depicts",
    "the image features",
    "this image shows",
    "in the image,",
    "in this image,",
)
_OPENING = re.compile(
    r"^\s*(?:" + "|".join(re.escape(b) for b in BOILERPLATE) + r")\s*", re.IGNORECASE
)


def strip_opening(text: str) -> str:
    """Remove one boilerplate opening; capitalise what remains."""
    rest = _OPENING.sub("", text, count=1).strip()
    return rest[:1].upper() + rest[1:] if rest else rest


def split_sentences(text: str) -> list[str]:
    """Split on ". " as the reference does; drop empty pieces."""
    return [s.strip() for s in text.split(". ") if s.strip()]


def keep_sentences(text: str, min_words: int = 0) -> list[str]:
    """Sentences of a loop output worth appending (Claude's loop keeps >= 5 words)."""
    return [s for s in split_sentences(text) if len(s.split()) >= min_words]
