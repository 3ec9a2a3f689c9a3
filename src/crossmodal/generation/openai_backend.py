"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM's server, others).

Images travel as base64 data URLs with their real media type. Many requests are kept in flight
on a thread pool; the client's own bounded retries handle 429/5xx/timeouts, and a request that
still fails comes back with ``error`` set (reported by the stage, never dropped). With
``vllm_extensions`` the assistant prefill is continued (``continue_final_message``), as vLLM
supports; plain OpenAI endpoints do not continue a prefill, so it is sent as guidance only.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from crossmodal.errors import CrossmodalError
from crossmodal.generation.types import Request, Response, image_base64, image_media_type


def chat_messages(req: Request) -> list[dict[str, Any]]:
    """OpenAI chat format: text parts and data-URL image parts."""
    out = []
    for m in req.messages:
        if all(p.kind == "text" for p in m.parts) and m.role == "system":
            out.append({"role": "system", "content": "".join(p.value for p in m.parts)})
            continue
        content = []
        for p in m.parts:
            if p.kind == "image":
                url = f"data:{image_media_type(p.value)};base64,{image_base64(p.value)}"
                content.append({"type": "image_url", "image_url": {"url": url}})
            else:
                content.append({"type": "text", "text": p.value})
        out.append({"role": m.role, "content": content})
    if req.prefill:
        out.append({"role": "assistant", "content": req.prefill})
    return out


class OpenAIGenerator:
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
    ):
        import openai

        key = os.environ.get(api_key_env)
        if not key:
            if base_url is None:
                raise CrossmodalError(
                    f"{api_key_env} is not set: export it (the key is read from the environment "
                    "only), or point the model's base_url at a local server"
                )
            key = "EMPTY"  # local servers (vLLM) accept any key
        self.model = model
        self.vllm_extensions = vllm_extensions
        self.max_in_flight = max_in_flight
        self.client = openai.OpenAI(
            base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries
        )

    def _completion(self, req: Request) -> Response:
        """Completion endpoint for raw prompts (PICa, as the reference used GPT-3's)."""
        import openai

        prompt = "".join(p.value for m in req.messages for p in m.parts if p.kind == "text")
        try:
            resp = self.client.completions.create(
                model=self.model,
                prompt=prompt,
                max_tokens=req.max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                seed=req.seed,
                logprobs=1 if req.logprobs else None,
                stop=list(req.stop) or None,
            )
        except openai.OpenAIError as exc:
            return Response("", error=f"{type(exc).__name__}: {exc}")
        choice = resp.choices[0]
        logprobs = None
        if req.logprobs and choice.logprobs and choice.logprobs.token_logprobs is not None:
            logprobs = []
            for tok, lp in zip(
                choice.logprobs.tokens, choice.logprobs.token_logprobs, strict=False
            ):
                if "\n" in tok:
                    break
                logprobs.append(lp)
        usage = resp.usage
        return Response(
            choice.text,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            logprobs=logprobs,
        )

    def _one(self, req: Request) -> Response:
        import openai

        if req.raw and self.vllm_extensions:
            return self._completion(req)
        extra: dict[str, Any] = {}
        if req.prefill and self.vllm_extensions:
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        try:
            resp = self.client.chat.completions.create(
                model=self.model,
                messages=chat_messages(req),
                max_tokens=req.max_tokens,
                temperature=req.temperature,
                top_p=req.top_p,
                seed=req.seed,
                logprobs=req.logprobs or None,
                stop=list(req.stop) or None,
                extra_body=extra or None,
            )
        except openai.OpenAIError as exc:
            return Response("", error=f"{type(exc).__name__}: {exc}")
        choice = resp.choices[0]
        body = (choice.message.content or "").strip()
        if not body:
            return Response("", error="empty completion")
        logprobs = None
        if req.logprobs and choice.logprobs and choice.logprobs.content:
            logprobs = [t.logprob for t in choice.logprobs.content]
        text = req.answer(body)
        usage = resp.usage
        return Response(
            text,
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
            logprobs=logprobs,
        )

    def generate(self, requests: list[Request]) -> list[Response]:
        with ThreadPoolExecutor(max_workers=self.max_in_flight) as pool:
            return list(pool.map(self._one, requests))

    def close(self) -> None:
        self.client.close()
