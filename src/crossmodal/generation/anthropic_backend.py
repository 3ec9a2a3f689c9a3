"""Claude through the Anthropic Messages API.

The key is read from ``ANTHROPIC_API_KEY`` only, and a missing key fails at construction, before
any work. Images go as base64 with the media type read from their bytes. The SDK retries
429/529/5xx/timeouts with exponential backoff, bounded by ``max_retries``; a request that still
fails is returned with ``error`` set, reported by the stage and retried by the next run.
The API takes no seed, so Claude outputs are not reproducible bit for bit.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from crossmodal.errors import CrossmodalError
from crossmodal.generation.types import Request, Response, image_base64, image_media_type


def anthropic_payload(req: Request) -> dict[str, Any]:
    system = " ".join(p.value for m in req.messages if m.role == "system" for p in m.parts)
    messages = []
    for m in req.messages:
        if m.role == "system":
            continue
        content = []
        for p in m.parts:
            if p.kind == "image":
                content.append(
                    {
                        "type": "image",
                        "source": {
                            "type": "base64",
                            "media_type": image_media_type(p.value),
                            "data": image_base64(p.value),
                        },
                    }
                )
            else:
                content.append({"type": "text", "text": p.value})
        messages.append({"role": m.role, "content": content})
    if req.prefill:
        messages.append({"role": "assistant", "content": req.prefill.rstrip()})
    # Sampling settings travel in the body itself: newer SDKs no longer type them, while the
    # models the reference used (claude-3-haiku) still honour them.
    payload: dict[str, Any] = {
        "messages": messages,
        "max_tokens": req.max_tokens,
        "extra_body": {"temperature": req.temperature, "top_p": req.top_p},
    }
    if system:
        payload["system"] = system
    if req.stop:
        payload["stop_sequences"] = list(req.stop)
    return payload


class AnthropicGenerator:
    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        max_retries: int = 6,
        timeout: float = 120,
        max_in_flight: int = 8,
    ):
        import anthropic

        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise CrossmodalError(
                "ANTHROPIC_API_KEY is not set: export it before running a Claude stage "
                "(the key is read from the environment only and never written anywhere)"
            )
        self.model = model
        self.max_in_flight = max_in_flight
        self.client = anthropic.Anthropic(
            api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout
        )

    def _one(self, req: Request) -> Response:
        import anthropic

        try:
            msg = self.client.messages.create(model=self.model, **anthropic_payload(req))
        except anthropic.APIError as exc:
            status = getattr(exc, "status_code", None)
            return Response("", error=f"{type(exc).__name__} (status {status}): {exc}")
        body = "".join(b.text for b in msg.content if getattr(b, "type", "") == "text").strip()
        if not body:
            return Response("", error="empty completion")
        text = req.answer(body)
        return Response(text, tokens_in=msg.usage.input_tokens, tokens_out=msg.usage.output_tokens)

    def generate(self, requests: list[Request]) -> list[Response]:
        with ThreadPoolExecutor(max_workers=self.max_in_flight) as pool:
            return list(pool.map(self._one, requests))

    def close(self) -> None:
        self.client.close()
