"""In-process Hugging Face generation (LLaVA, Qwen2-VL, ... through their processors).

For machines without vLLM and for tests. Requests are generated one at a time with the torch
generator seeded from the request, so a response depends only on its request: a resumed run
(journal) gives the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from PIL import Image

from crossmodal.encoders.base import resolve_device
from crossmodal.generation.types import Request, Response, request_image


def generate_sampling(req: Request) -> dict[str, Any]:
    """``generate()`` arguments for exactly the request's sampling. What it leaves out is off,
    not the model's generation_config default (transformers would sample with top_k=50, say):
    the same rule as the vLLM server started with ``--generation-config vllm``."""
    sampling = req.sampling()
    kwargs: dict[str, Any] = {"repetition_penalty": sampling.get("repetition_penalty", 1.0)}
    if req.temperature <= 0:
        return {**kwargs, "do_sample": False}
    return {
        **kwargs,
        "do_sample": True,
        "temperature": sampling["temperature"],
        "top_p": sampling.get("top_p", 1.0),
        "top_k": sampling.get("top_k", 0),
    }


class TransformersGenerator:
    def __init__(
        self,
        model: str,
        device: str = "auto",
        dtype: str = "auto",
        revision: str | None = None,
        batch_size: int = 1,
    ):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.model = model  # the name ledgers and provenance use
        # generate() samples from torch's global RNG: one request at a time keeps seeds exact
        self._lock = threading.Lock()
        # batch_size > 1: requests with the same sampling settings are generated together
        # (left-padded). Faster, but a response then depends on its batch mates, so a resumed
        # run is no longer byte-identical: the same trade a vLLM server makes.
        self.batch_size = batch_size
        self.device = resolve_device(device)
        if dtype == "auto":
            dtype = "float16" if self.device.type == "cuda" else "float32"
        self.processor = AutoProcessor.from_pretrained(model, revision=revision)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if batch_size > 1 and tokenizer is not None:
            tokenizer.padding_side = "left"
        self.hf_model = (
            AutoModelForImageTextToText.from_pretrained(
                model, revision=revision, dtype=getattr(torch, dtype)
            )
            .to(self.device)
            .eval()
        )

    def _prompt(self, req: Request) -> tuple[str, list[Image.Image]]:
        if req.raw:
            return "".join(p.value for m in req.messages for p in m.parts if p.kind == "text"), []
        conversation = []
        images = []
        for m in req.messages:
            content = []
            for p in m.parts:
                if p.kind == "image":
                    content.append({"type": "image"})
                    images.append(request_image(p.value, req.pad_to_square))
                else:
                    content.append({"type": "text", "text": p.value})
            conversation.append({"role": m.role, "content": content})
        prompt = self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        if req.prefill:
            prompt = prompt + req.prefill if prompt[-1:].isspace() else f"{prompt} {req.prefill}"
        return prompt, images

    def _one(self, req: Request) -> Response:
        with self._lock:
            return self._one_locked(req)

    @torch.inference_mode()
    def _one_locked(self, req: Request) -> Response:
        prompt, images = self._prompt(req)
        inputs = self.processor(text=prompt, images=images or None, return_tensors="pt").to(
            self.device
        )
        kwargs = dict(
            max_new_tokens=req.max_tokens,
            output_scores=req.logprobs,
            return_dict_in_generate=True,
            **generate_sampling(req),
        )
        state = torch.random.get_rng_state()
        torch.manual_seed(req.seed)  # generate() samples from the global generator
        try:
            out = self.hf_model.generate(**inputs, **kwargs)
        finally:
            torch.random.set_rng_state(state)
        n_in = inputs["input_ids"].shape[1]
        new = out.sequences[0, n_in:]
        text = self._decode(inputs["input_ids"][0].tolist(), new.tolist(), req.stop)
        if req.stop:  # tokens (and logprobs) end before the first token holding a stop string
            for cut, tok in enumerate(new.tolist()):
                piece = self.processor.decode([tok], skip_special_tokens=False)
                if any(stop in piece for stop in req.stop):
                    new = new[:cut]
                    break
        logprobs = None
        if req.logprobs:
            logprobs = [
                float(torch.log_softmax(s[0].float(), -1)[t])
                for s, t in zip(out.scores, new, strict=False)
            ]
        return Response.from_continuation(
            req, text, tokens_in=int(n_in), tokens_out=int(len(new)), logprobs=logprobs
        )

    def _decode(self, prompt_ids: list[int], new: list[int], stop: tuple[str, ...]) -> str:
        """The generated text exactly as vLLM's server returns it, so backends agree.

        vLLM detokenizes incrementally (a ``tokenizers`` DecodeStream primed with the prompt)
        and holds back text that ends in an incomplete UTF-8 character; what is still held
        back when generation stops is dropped. A plain ``decode()`` would instead end in
        "\ufffd" wherever the token limit cuts a character. A stop string cuts the text
        where it starts (the stop string itself is not returned).
        """
        from tokenizers.decoders import DecodeStream

        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        backend = getattr(tokenizer, "_tokenizer", None)
        if backend is None:  # a slow (Python) tokenizer: no incremental decoder to mirror
            text = tokenizer.decode(new, skip_special_tokens=True).rstrip("\ufffd")
            return _cut_at_stop(text, stop)
        stream = DecodeStream(ids=prompt_ids, skip_special_tokens=True)
        text = ""
        for token in new:
            piece = stream.step(backend, token)
            if piece:
                text += piece
                cut = _cut_at_stop(text, stop)
                if len(cut) < len(text):
                    return cut
        return text

    def generate(self, requests: list[Request]) -> list[Response]:
        if self.batch_size > 1:
            return self._generate_batched(requests)
        return [self.generate_one(r) for r in requests]

    def _generate_batched(self, requests: list[Request]) -> list[Response]:
        def settings(r: Request):
            return (r.max_tokens, tuple(r.sampling().items()), r.logprobs, r.stop, r.raw)

        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(settings(r), []).append(i)
        out: list[Response | None] = [None] * len(requests)
        for idx in groups.values():
            for start in range(0, len(idx), self.batch_size):
                part = idx[start : start + self.batch_size]
                if len(part) == 1 or requests[part[0]].logprobs or requests[part[0]].stop:
                    for i in part:  # per-token bookkeeping stays on the exact path
                        out[i] = self.generate_one(requests[i])
                    continue
                try:
                    with self._lock:
                        answers = self._batch([requests[i] for i in part])
                except (RuntimeError, ValueError, OSError) as exc:
                    answers = [Response("", error=f"{type(exc).__name__}: {exc}")] * len(part)
                for i, resp in zip(part, answers, strict=True):
                    out[i] = resp
        return out  # type: ignore[return-value]

    def generate_one(self, req: Request) -> Response:
        """One request on the exact path; a failure becomes a reported error, not a crash."""
        try:
            return self._one(req)
        except (RuntimeError, ValueError, OSError) as exc:
            return Response("", error=f"{type(exc).__name__}: {exc}")

    @torch.inference_mode()
    def _batch(self, reqs: list[Request]) -> list[Response]:
        prompts, images = [], []
        for r in reqs:
            prompt, imgs = self._prompt(r)
            prompts.append(prompt)
            images.extend(imgs)
        inputs = self.processor(
            text=prompts, images=images or None, padding=True, return_tensors="pt"
        ).to(self.device)
        first = reqs[0]
        kwargs = dict(max_new_tokens=first.max_tokens, **generate_sampling(first))
        state = torch.random.get_rng_state()
        torch.manual_seed(first.seed)
        try:
            seqs = self.hf_model.generate(**inputs, **kwargs)
        finally:
            torch.random.set_rng_state(state)
        n_in = inputs["input_ids"].shape[1]
        pad = getattr(getattr(self.processor, "tokenizer", None), "pad_token_id", None)
        out = []
        for r, row, mask in zip(reqs, seqs, inputs["attention_mask"], strict=True):
            new = row[n_in:]
            if pad is not None:
                new = new[new != pad]
            prompt_ids = row[:n_in][mask.bool()].tolist()
            text = self._decode(prompt_ids, new.tolist(), ()).strip()
            out.append(
                Response.from_continuation(
                    r, text, tokens_in=int(mask.sum()), tokens_out=int(len(new))
                )
            )
        return out

    def close(self) -> None:
        pass


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to the earliest stop string (all of it when none occurs)."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(hits)] if hits else text
