"""Requests and responses shared by every backend."""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Part:
    """A text part, or an image part holding a file path."""

    kind: str  # "text" | "image"
    value: str


def text(value: str) -> Part:
    return Part("text", value)


def image(path: str | Path) -> Part:
    return Part("image", str(path))


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class Request:
    """One chat request. ``prefill`` starts the assistant's answer (e.g. "The image shows")."""

    messages: tuple[Message, ...]
    max_tokens: int = 40
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    prefill: str | None = None
    logprobs: bool = False
    stop: tuple[str, ...] = ()
    raw: bool = False  # completion-style: the user text is the whole prompt (no chat template)

    def answer(self, continuation: str) -> str:
        """The answer as readers see it: the prefill, then the model's continuation.

        An empty continuation gives the prefill alone (or ""), with no dangling space.
        """
        body = continuation.strip()
        if not self.prefill:
            return body
        return f"{self.prefill.rstrip()} {body}" if body else self.prefill.rstrip()

    def images(self) -> list[str]:
        return [p.value for m in self.messages for p in m.parts if p.kind == "image"]


RETIRED_FIELDS = frozenset({"extra"})


@dataclass
class Response:
    """Generated text (with the prefill in front), token counts, optional token logprobs.

    ``empty``: the model continued with nothing (see the package docstring: an empty answer is
    a valid, journalled answer, counted rather than failed).
    """

    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    logprobs: list[float] | None = None
    error: str | None = None  # set when the request failed for good: reported, never dropped
    empty: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_continuation(
        cls,
        req: Request,
        continuation: str,
        *,
        tokens_in: int = 0,
        tokens_out: int = 0,
        logprobs: list[float] | None = None,
    ) -> Response:
        """Every backend's answer: the one rule for joining the prefill and for empty answers.

        Chat answers are the prefill plus the stripped continuation; completion-style (``raw``)
        answers keep the continuation as generated (PICa cleans it). An empty continuation is
        not an error: requests are seeded, so resending would get the same empty answer.
        """
        text = continuation if req.raw else req.answer(continuation)
        return cls(
            text,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            logprobs=logprobs,
            empty=not continuation.strip(),
        )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Response:
        """A journalled response. ``extra``, a retired field that never carried data, is
        dropped from older journals; any other unknown key is an error."""
        return cls(**{k: v for k, v in record.items() if k not in RETIRED_FIELDS})


class Generator(Protocol):
    model: str

    def generate(self, requests: list[Request]) -> list[Response]: ...


def image_media_type(path: str) -> str:
    """The image's real media type from its magic bytes (APIs reject a mislabelled image)."""
    head = Path(path).read_bytes()[:12]
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    guess = mimetypes.guess_type(path)[0]
    return guess or "application/octet-stream"


def image_base64(path: str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def user(*parts: Part) -> Message:
    return Message("user", tuple(parts))


def system(content: str) -> Message:
    return Message("system", (text(content),))


def raise_for_failures(responses: Sequence[Response], owners: Sequence[Any], what: str) -> None:
    """Fail naming every request that failed for good (``owners[i]`` names ``responses[i]``).

    Finished requests are already in the journal, so the message tells the user that a rerun
    resends only the failed ones.
    """
    from crossmodal.errors import CrossmodalError

    failed = [(o, r.error) for o, r in zip(owners, responses, strict=True) if not r.ok]
    if failed:
        listed = "\n  ".join(f"{o}: {err}" for o, err in failed[:20])
        raise CrossmodalError(
            f"{len(failed)} of {len(responses)} {what} requests failed after retries (finished "
            f"ones are journalled; rerun to retry only these):\n  {listed}"
        )
