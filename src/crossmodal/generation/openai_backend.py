"""Any OpenAI-compatible endpoint (OpenAI, vLLM's server, others): a payload adapter on the
shared client loop (:mod:`crossmodal.generation.http_client`: in flight, retries, errors).

Images travel as base64 data URLs with their real media type. With ``vllm_extensions`` (a vLLM
server) the assistant prefill is continued (``continue_final_message``) and raw prompts go to
the completion endpoint. A plain OpenAI endpoint does neither: a request with a prefill is
refused (the config check says so first), and a raw prompt is sent as one user chat message,
the documented fallback.
"""

from __future__ import annotations

import os
from typing import Any

from crossmodal.generation.http_client import HTTPGenerator, missing_key
from crossmodal.generation.registry import capabilities
from crossmodal.generation.types import Request, Response, image_payload


def chat_messages(req: Request) -> list[dict[str, Any]]:
    """OpenAI chat format: text parts and data-URL image parts; the prefill goes last."""
    out = []
    for m in req.messages:
        if all(p.kind == "text" for p in m.parts) and m.role == "system":
            out.append({"role": "system", "content": "".join(p.value for p in m.parts)})
            continue
        content = []
        for p in m.parts:
            if p.kind == "image":
                media_type, data = image_payload(p.value, req.pad_to_square)
                url = f"data:{media_type};base64,{data}"
                content.append({"type": "image_url", "image_url": {"url": url}})
            else:
                content.append({"type": "text", "text": p.value})
        out.append({"role": m.role, "content": content})
    if req.prefill:
        out.append({"role": "assistant", "content": req.prefill})
    return out


def raw_prompt(req: Request) -> str:
    """A completion-style request's prompt: its text parts, joined."""
    return "".join(p.value for m in req.messages for p in m.parts if p.kind == "text")


def chat_kwargs(model: str, req: Request, *, continue_prefill: bool) -> dict[str, Any]:
    """``chat.completions.create`` arguments for ``req``."""
    if req.raw:  # no completion endpoint: the prompt as one user message
        messages: list[dict[str, Any]] = [{"role": "user", "content": raw_prompt(req)}]
    else:
        messages = chat_messages(req)
    kwargs: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": req.max_tokens,
        "seed": req.seed,
        "logprobs": req.logprobs or None,
        "stop": list(req.stop) or None,
        **_standard_sampling(req),
    }
    extra = _vllm_sampling(req)
    if req.prefill and continue_prefill:
        extra.update(continue_final_message=True, add_generation_prompt=False)
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


def _standard_sampling(req: Request) -> dict[str, Any]:
    """The OpenAI API's own sampling fields the request sets (top_p only when configured)."""
    return {k: v for k, v in req.sampling().items() if k in ("temperature", "top_p")}


def _vllm_sampling(req: Request) -> dict[str, Any]:
    """vLLM's extra sampling fields the request sets (the config check allows them only with
    vllm_extensions)."""
    return {k: v for k, v in req.sampling().items() if k in ("top_k", "repetition_penalty")}


def chat_response(req: Request, resp: Any) -> Response:
    choice = resp.choices[0]
    logprobs = None
    if req.logprobs and choice.logprobs and choice.logprobs.content:
        logprobs = [t.logprob for t in choice.logprobs.content]
    usage = resp.usage
    return Response.from_continuation(
        req,
        choice.message.content or "",
        tokens_in=usage.prompt_tokens if usage else 0,
        tokens_out=usage.completion_tokens if usage else 0,
        logprobs=logprobs,
    )


def completion_kwargs(model: str, req: Request) -> dict[str, Any]:
    """``completions.create`` arguments: raw prompts (PICa, as the reference used GPT-3's)."""
    kwargs: dict[str, Any] = {
        "model": model,
        "prompt": raw_prompt(req),
        "max_tokens": req.max_tokens,
        "seed": req.seed,
        "logprobs": 1 if req.logprobs else None,
        "stop": list(req.stop) or None,
        **_standard_sampling(req),
    }
    if extra := _vllm_sampling(req):
        kwargs["extra_body"] = extra
    return kwargs


def completion_response(req: Request, resp: Any) -> Response:
    """The continuation and, up to the first newline, its tokens' log-probabilities."""
    choice = resp.choices[0]
    logprobs = None
    if req.logprobs and choice.logprobs and choice.logprobs.token_logprobs is not None:
        logprobs = []
        for tok, lp in zip(choice.logprobs.tokens, choice.logprobs.token_logprobs, strict=False):
            if "\n" in tok:
                break
            logprobs.append(lp)
    usage = resp.usage
    return Response.from_continuation(
        req,
        choice.text or "",
        tokens_in=usage.prompt_tokens if usage else 0,
        tokens_out=usage.completion_tokens if usage else 0,
        logprobs=logprobs,
    )


class OpenAIGenerator(HTTPGenerator):
    backend = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_in_flight: int = 32,
        timeout: float = 120,
        max_retries: int = 5,
        vllm_extensions: bool = False,
        backoff: float = 1.0,
    ):
        import openai

        key = os.environ.get(api_key_env) or None
        if key is None and base_url is None:
            raise missing_key(api_key_env, ", or point the model's base_url at a local server")
        client = openai.OpenAI(
            base_url=base_url,
            api_key=key or "EMPTY",  # local servers (vLLM) accept any key
            timeout=timeout,
            max_retries=0,  # the shared loop is the one retry policy
        )
        super().__init__(
            model,
            sdk=openai,
            client=client,
            capabilities=capabilities({"backend": "openai", "vllm_extensions": vllm_extensions}),
            key_env=api_key_env,
            key=key,
            base_url=base_url,
            timeout=timeout,
            max_in_flight=max_in_flight,
            max_retries=max_retries,
            backoff=backoff,
        )
        self.vllm_extensions = vllm_extensions

    def _send(self, req: Request) -> Response:
        if req.raw and self.capabilities.raw_completion:
            resp = self.client.completions.create(**completion_kwargs(self.model, req))
            return completion_response(req, resp)
        kwargs = chat_kwargs(self.model, req, continue_prefill=self.capabilities.prefill)
        return chat_response(req, self.client.chat.completions.create(**kwargs))
