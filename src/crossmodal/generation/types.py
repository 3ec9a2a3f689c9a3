"""Requests and responses shared by every backend."""

from __future__ import annotations

import base64
import io
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image


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
    top_p: float | None = None  # None: not sent (the server's neutral value, 1.0)
    seed: int = 0
    prefill: str | None = None
    logprobs: bool = False
    stop: tuple[str, ...] = ()
    raw: bool = False  # completion-style: the user text is the whole prompt (no chat template)
    top_k: int | None = None  # None: not sent (off)
    repetition_penalty: float | None = None  # None: not sent (off)
    pad_to_square: bool = False  # images padded to a square with CLIP's mean colour first

    def sampling(self) -> dict[str, float | int]:
        """The sampling fields this request sets, and only those: a backend sends exactly
        these, so nothing the configuration did not ask for reaches the model."""
        fields = {"temperature": self.temperature, "top_p": self.top_p}
        fields.update(top_k=self.top_k, repetition_penalty=self.repetition_penalty)
        return {k: v for k, v in fields.items() if v is not None}

    def continuation(self, answer: str) -> str:
        """What the model wrote after the prefill (the inverse of :meth:`answer`)."""
        if self.prefill and answer.startswith(self.prefill.rstrip()):
            return answer[len(self.prefill.rstrip()) :].strip()
        return answer.strip()

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


# LLaVA-1.5 pads with its CLIP image processor's mean colour: int(255 * mean) per channel.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
PAD_COLOUR = tuple(int(255 * m) for m in CLIP_MEAN)  # (122, 116, 104)


def pad_to_square(img: Image.Image, colour: tuple[int, ...] = PAD_COLOUR) -> Image.Image:
    """LLaVA's ``expand2square``: the image centred on a square of ``colour`` (the longer
    side), so a processor's centre crop no longer cuts the edges of a non-square image."""
    width, height = img.size
    if width == height:
        return img
    side = max(width, height)
    square = Image.new(img.mode, (side, side), colour)
    square.paste(img, ((side - width) // 2, (side - height) // 2))
    return square


def request_image(path: str, pad: bool) -> Image.Image:
    """An image of a request as the model must see it: RGB, padded to a square if asked."""
    with Image.open(path) as im:
        img = im.convert("RGB")
    return pad_to_square(img) if pad else img


def image_payload(path: str, pad: bool) -> tuple[str, str]:
    """(media type, base64 data) of a request image for an HTTP API. A padded image is sent
    as PNG (lossless: the pixels sent are exactly the padded ones); others as their own bytes."""
    if not pad:
        return image_media_type(path), image_base64(path)
    buffer = io.BytesIO()
    request_image(path, True).save(buffer, format="PNG")
    return "image/png", base64.b64encode(buffer.getvalue()).decode("ascii")


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
