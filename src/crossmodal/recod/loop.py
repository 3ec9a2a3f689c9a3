"""The ReCoD loop and the base ("without ReCoD") sampler.

Loop 0 is the base description. Each later loop, for every target at once: split the current
description (base plus every appended sentence) into sentences, retrieve the best image not yet
retrieved for the target, ask the VLM how the target differs from it (text-based: two of its
COCO captions; image-based: the image itself), strip boilerplate and append the new sentences.
The loop is the only dependency, so each loop is one batch of requests.

``base`` draws L independent descriptions per image with temperature and top_p uniform in
[0, 1) (as the reference does), so base and ReCoD compare at equal description counts.
Every request's seed derives from (seed, image, loop): a response depends only on its request,
which makes resumed runs identical to uninterrupted ones.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crossmodal.errors import CrossmodalError
from crossmodal.generation.types import (
    Message,
    Part,
    Request,
    Response,
    image,
    raise_for_failures,
    system,
    text,
    user,
)
from crossmodal.jobs import settings_from_dict
from crossmodal.recod import prompts
from crossmodal.recod.cleanup import keep_sentences, split_sentences, strip_opening

log = logging.getLogger(__name__)

METHODS = ("base", "recod", "recod_img")


@dataclass(frozen=True)
class DescribeSettings:
    """How one describe stage samples and loops (no defaults: the config schema has them)."""

    method: str  # base, recod or recod_img
    n_descriptions: int  # base + loops
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    system_prompt: str | None
    image_labels: bool  # Claude: "Image 1:" / image / "Image 2:" / image / prompt
    min_sentence_words: int  # Claude's loop keeps sentences of >= 5 words
    n_reference_captions: int
    reuse_first_references: bool  # the reference Claude text loop's bug, as a switch

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DescribeSettings:
        """Settings from a JSON block, naming any missing or unknown key."""
        return settings_from_dict(cls, values, "describe settings")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CrossmodalError(f"method {self.method!r} unknown; choose one of {METHODS}")


@dataclass
class DescriptionRow:
    image_id: int
    loop: int
    text: str
    retrieved_id: int | None = None
    score: float | None = None
    reference: list[str] = field(default_factory=list)


def request_seed(seed: int, image_id: int, loop: int) -> int:
    digest = hashlib.sha256(f"{seed}:{image_id}:{loop}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _request(
    s: DescribeSettings,
    image_id: int,
    loop: int,
    parts: Sequence[Part],
    prefill: str,
    temperature: float | None = None,
    top_p: float | None = None,
) -> Request:
    """A describe request: optional system prompt, one user turn, seed from (image, loop)."""
    messages: tuple[Message, ...] = (user(*parts),)
    if s.system_prompt:
        messages = (system(s.system_prompt), *messages)
    return Request(
        messages,
        max_tokens=s.max_tokens,
        temperature=s.temperature if temperature is None else temperature,
        top_p=s.top_p if top_p is None else top_p,
        seed=request_seed(s.seed, image_id, loop),
        prefill=prefill,
    )


def base_request(
    s: DescribeSettings, path: str, image_id: int, loop: int, temperature: float, top_p: float
) -> Request:
    parts = (image(path), text(prompts.BASE_PROMPT))
    return _request(s, image_id, loop, parts, prompts.BASE_PREFILL, temperature, top_p)


def text_reference_request(
    s: DescribeSettings, path: str, image_id: int, loop: int, references: Sequence[str]
) -> Request:
    prompt = prompts.TEXT_REFERENCE_PROMPT.format(references="\n".join(references))
    return _request(s, image_id, loop, (image(path), text(prompt)), prompts.BASE_PREFILL)


def image_reference_request(
    s: DescribeSettings, path: str, image_id: int, loop: int, reference_path: str
) -> Request:
    if s.image_labels:
        parts = (
            text("Image 1:"),
            image(path),
            text("Image 2:"),
            image(reference_path),
            text(prompts.IMAGE_REFERENCE_PROMPT),
        )
    else:
        parts = (image(path), image(reference_path), text(prompts.IMAGE_REFERENCE_PROMPT))
    return _request(s, image_id, loop, parts, prompts.IMAGE_REFERENCE_PREFILL)


Generate = Callable[[list[Request]], list[Response]]


def describe_base(
    s: DescribeSettings, targets: Sequence[tuple[int, str]], generate: Generate
) -> list[DescriptionRow]:
    """L independent base descriptions per target, temperature and top_p ~ U[0, 1)."""
    rows, requests = [], []
    for image_id, path in targets:
        rng = random.Random(request_seed(s.seed, image_id, -1))
        for loop in range(s.n_descriptions):
            t, p = rng.random(), rng.random()
            requests.append(((image_id, loop), base_request(s, path, image_id, loop, t, p)))
    responses = generate([r for _, r in requests])
    raise_for_failures(responses, [f"image {k[0]}" for k, _ in requests], "base")
    for ((image_id, loop), _), resp in zip(requests, responses, strict=True):
        rows.append(DescriptionRow(image_id, loop, resp.text))
    return rows


def describe_recod(
    s: DescribeSettings,
    targets: Sequence[tuple[int, str]],
    generate: Generate,
    retrieve: Callable[[list[list[str]], list[list[int]]], tuple[Sequence[int], Sequence[float]]],
    captions: dict[int, list[str]],
    reference_paths: dict[int, str],
) -> list[DescriptionRow]:
    """Base description, then ``n_descriptions - 1`` retrieve-compare loops, loop by loop."""
    ids = [i for i, _ in targets]
    base = generate([base_request(s, p, i, 0, s.temperature, s.top_p) for i, p in targets])
    raise_for_failures(base, [f"image {i}" for i in ids], "base")
    rows = [DescriptionRow(i, 0, r.text) for i, r in zip(ids, base, strict=True)]
    sentences = {i: split_sentences(r.text) for i, r in zip(ids, base, strict=True)}
    retrieved: dict[int, list[int]] = {i: [] for i in ids}
    first_refs: dict[int, list[str]] = {}
    for loop in range(1, s.n_descriptions):
        best, scores = retrieve(
            [list(sentences[i]) for i in ids], [[i, *retrieved[i]] for i in ids]
        )
        requests, refs = [], []
        for (image_id, path), ref_id in zip(targets, best, strict=True):
            ref_id = int(ref_id)
            if ref_id < 0:
                raise CrossmodalError(f"no image left to retrieve for target {image_id}")
            retrieved[image_id].append(ref_id)
            if s.method == "recod":
                pool = captions.get(ref_id, [])
                if not pool:
                    raise CrossmodalError(f"retrieved image {ref_id} has no captions")
                rng = random.Random(request_seed(s.seed, image_id, loop) ^ 0x5EED)
                chosen = rng.sample(pool, k=min(s.n_reference_captions, len(pool)))
                if s.reuse_first_references:
                    chosen = first_refs.setdefault(image_id, chosen)
                refs.append(chosen)
                requests.append(text_reference_request(s, path, image_id, loop, chosen))
            else:
                ref_path = reference_paths[ref_id]
                refs.append([ref_path])
                requests.append(image_reference_request(s, path, image_id, loop, ref_path))
        responses = generate(requests)
        raise_for_failures(responses, [f"image {i}" for i in ids], f"loop {loop}")
        for image_id, ref_id, score, ref, resp in zip(
            ids, best, scores, refs, responses, strict=True
        ):
            new = keep_sentences(strip_opening(resp.text), s.min_sentence_words)
            sentences[image_id].extend(new)
            rows.append(
                DescriptionRow(image_id, loop, ". ".join(new), int(ref_id), float(score), list(ref))
            )
        log.info("loop %d/%d done for %d targets", loop, s.n_descriptions - 1, len(ids))
    rows.sort(key=lambda r: (r.image_id, r.loop))
    return rows
