"""The ReCoD loop and the base ("without ReCoD") sampler, as gyjung975/ReCoD's scripts run them.

``base`` draws L independent descriptions per image, temperature (and top_p, where the VLM
sends one) uniform in [0, 1) per sample (llava_base.py, qwen_base.py, claude_base.py), so base
and ReCoD compare at equal description counts. Its first description is loop 0 of both ReCoD
methods (llava_recod.py reads ``new_captions[0]`` of the base run), so all three methods share
their k=1 context. Each later loop, for every target at once: split the description so far into
sentences, retrieve the best image not yet retrieved for the target, ask the VLM how the target
differs from it (text-based: two of that image's first five COCO captions; image-based: the
image itself), clean the answer and append its sentences. The loop is the only dependency, so
each loop is one batch of requests. Only the model's continuation is stored (a prefill, as
Claude's scripts use, is not part of the description).

Every request's seed derives from (seed, image, loop): a response depends only on its request,
which makes resumed runs identical to uninterrupted ones (the reference is unseeded).
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
from crossmodal.recod.cleanup import clean, keep_sentences, phrases_for, split_sentences

log = logging.getLogger(__name__)

METHODS = ("base", "recod", "recod_img")
# ReCoD draws the two reference captions from an image's first five (llava_recod.py).
CAPTION_POOL = 5


@dataclass(frozen=True)
class DescribeSettings:
    """How one describe stage samples, prompts and loops (no defaults: the schema has them)."""

    method: str  # base, recod or recod_img
    n_descriptions: int  # base + loops
    max_tokens: int
    temperature: float
    top_p: float | None  # None: not sent (Claude's scripts send temperature only)
    top_k: int  # -1: off
    repetition_penalty: float  # 1.0: off
    seed: int
    system_prompt: str | None
    base_prompt: str
    image_labels: bool  # Claude: "Image 1:" / image / "Image 2:" / image / prompt
    min_sentence_words: int  # Claude's loop queries retrieval with sentences of >= 5 words
    prefill: str | None  # one-image requests (base, text-based ReCoD)
    compare_prefill: str | None  # two-image requests (image-based ReCoD)
    cleanup: bool  # the reference's boilerplate removal (LLaVA, Qwen; never Claude)
    pad_to_square: bool
    n_reference_captions: int
    reuse_first_references: bool  # the reference Claude text loop's bug, as a switch

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DescribeSettings:
        """Settings from a JSON block, naming any missing or unknown key."""
        return settings_from_dict(cls, values, "describe settings")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CrossmodalError(f"method {self.method!r} unknown; choose one of {METHODS}")

    def tidy(self, answer: str) -> str:
        """A description as stored: cleaned as the reference cleans this model's outputs."""
        return clean(answer, phrases_for(self.method)) if self.cleanup else answer.strip()


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
    prefill: str | None,
    temperature: float | None = None,
    top_p: float | None = None,
) -> Request:
    """A describe request: optional system prompt, one user turn, seed from (image, loop), and
    exactly the configured sampling (off switches are not sent)."""
    messages: tuple[Message, ...] = (user(*parts),)
    if s.system_prompt:
        messages = (system(s.system_prompt), *messages)
    return Request(
        messages,
        max_tokens=s.max_tokens,
        temperature=s.temperature if temperature is None else temperature,
        top_p=s.top_p if top_p is None else top_p,
        top_k=None if s.top_k == -1 else s.top_k,
        repetition_penalty=None if s.repetition_penalty == 1.0 else s.repetition_penalty,
        seed=request_seed(s.seed, image_id, loop),
        prefill=prefill,
        pad_to_square=s.pad_to_square,
    )


def base_request(
    s: DescribeSettings,
    path: str,
    image_id: int,
    loop: int,
    temperature: float,
    top_p: float | None,
) -> Request:
    parts = (image(path), text(s.base_prompt))
    return _request(s, image_id, loop, parts, s.prefill, temperature, top_p)


def text_reference_request(
    s: DescribeSettings, path: str, image_id: int, loop: int, references: Sequence[str]
) -> Request:
    prompt = prompts.TEXT_REFERENCE_PROMPT.format(references="\n".join(references))
    return _request(s, image_id, loop, (image(path), text(prompt)), s.prefill)


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
    return _request(s, image_id, loop, parts, s.compare_prefill)


Generate = Callable[[list[Request]], list[Response]]


def _stored(s: DescribeSettings, req: Request, resp: Response) -> str:
    """The description a response gives: its continuation after the prefill, cleaned."""
    return s.tidy(req.continuation(resp.text))


def describe_base(
    s: DescribeSettings, targets: Sequence[tuple[int, str]], generate: Generate
) -> list[DescriptionRow]:
    """L independent base descriptions per target, temperature (and top_p) ~ U[0, 1)."""
    keyed = []
    for image_id, path in targets:
        rng = random.Random(request_seed(s.seed, image_id, -1))
        for loop in range(s.n_descriptions):
            t, p = rng.random(), rng.random()
            top_p = None if s.top_p is None else p
            keyed.append(((image_id, loop), base_request(s, path, image_id, loop, t, top_p)))
    requests = [r for _, r in keyed]
    responses = generate(requests)
    raise_for_failures(responses, [f"image {k[0]}" for k, _ in keyed], "base")
    return [
        DescriptionRow(image_id, loop, _stored(s, req, resp))
        for ((image_id, loop), req), resp in zip(keyed, responses, strict=True)
    ]


def describe_recod(
    s: DescribeSettings,
    targets: Sequence[tuple[int, str]],
    generate: Generate,
    retrieve: Callable[[list[list[str]], list[list[int]]], tuple[Sequence[int], Sequence[float]]],
    captions: dict[int, list[str]],
    reference_paths: dict[int, str],
    first_descriptions: dict[int, str],
) -> list[DescriptionRow]:
    """Loop 0 from the base run's first description, then ``n_descriptions - 1`` loops."""
    ids = [i for i, _ in targets]
    missing = [i for i in ids if i not in first_descriptions]
    if missing:
        raise CrossmodalError(
            f"the base descriptions have no loop 0 for {len(missing)} target(s), e.g. "
            f"{missing[:5]}: the base table is from another run; delete it and rerun"
        )
    rows = [DescriptionRow(i, 0, first_descriptions[i]) for i in ids]
    sentences = {i: split_sentences(first_descriptions[i]) for i in ids}
    retrieved: dict[int, list[int]] = {i: [] for i in ids}
    first_pair: list[str] | None = None  # the reference Claude loop's reused captions
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
                chosen = _reference_captions(s, captions, ref_id, image_id, loop)
                if s.reuse_first_references:
                    first_pair = first_pair or chosen
                    chosen = first_pair
                refs.append(chosen)
                requests.append(text_reference_request(s, path, image_id, loop, chosen))
            else:
                if ref_id not in reference_paths:
                    raise CrossmodalError(f"retrieved image {ref_id} is not in the collection")
                refs.append([reference_paths[ref_id]])
                requests.append(
                    image_reference_request(s, path, image_id, loop, reference_paths[ref_id])
                )
        responses = generate(requests)
        raise_for_failures(responses, [f"image {i}" for i in ids], f"loop {loop}")
        for image_id, ref_id, score, ref, req, resp in zip(
            ids, best, scores, refs, requests, responses, strict=True
        ):
            described = _stored(s, req, resp)
            sentences[image_id].extend(keep_sentences(described, s.min_sentence_words))
            rows.append(
                DescriptionRow(image_id, loop, described, int(ref_id), float(score), list(ref))
            )
        log.info("loop %d/%d done for %d targets", loop, s.n_descriptions - 1, len(ids))
    rows.sort(key=lambda r: (r.image_id, r.loop))
    return rows


def _reference_captions(
    s: DescribeSettings, captions: dict[int, list[str]], ref_id: int, image_id: int, loop: int
) -> list[str]:
    """``n_reference_captions`` of the retrieved image's first five captions, drawn afresh
    (seeded by target and loop) on every call."""
    pool = captions.get(ref_id, [])[:CAPTION_POOL]
    if len(pool) < s.n_reference_captions:
        raise CrossmodalError(
            f"retrieved image {ref_id} has {len(pool)} caption(s); the text-based prompt needs "
            f"{s.n_reference_captions} (describe.n_reference_captions)"
        )
    rng = random.Random(request_seed(s.seed, image_id, loop) ^ 0x5EED)
    return rng.sample(pool, k=s.n_reference_captions)
