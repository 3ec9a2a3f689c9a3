"""Claude through the Anthropic Messages API: a payload adapter on the shared client loop
(:mod:`crossmodal.generation.http_client`: in flight, retries, errors).

The key is read from ``ANTHROPIC_API_KEY`` only, and a missing key fails at construction, before
any work. Images go as base64 with the media type read from their bytes; a prefill is sent as a
trailing assistant message, which Claude continues. The API takes no seed and returns no
log-probabilities, so Claude outputs are not reproducible bit for bit and PICa falls back to a
majority vote; a raw (completion-style) prompt is sent as one user message.
"""

from __future__ import annotations

import os
from typing import Any

from crossmodal.generation.http_client import HTTPGenerator, missing_key
from crossmodal.generation.registry import CAPABILITIES
from crossmodal.generation.types import Request, Response, image_payload


def anthropic_payload(req: Request) -> dict[str, Any]:
    system = " ".join(p.value for m in req.messages if m.role == "system" for p in m.parts)
    messages = []
    for m in req.messages:
        if m.role == "system":
            continue
        content = []
        for p in m.parts:
            if p.kind == "image":
                media_type, data = image_payload(p.value, req.pad_to_square)
                source = {"type": "base64", "media_type": media_type, "data": data}
                content.append({"type": "image", "source": source})
            else:
                content.append({"type": "text", "text": p.value})
        messages.append({"role": m.role, "content": content})
    if req.prefill:
        messages.append({"role": "assistant", "content": req.prefill.rstrip()})
    # Sampling settings travel in the body itself: newer SDKs no longer type them, while the
    # models the reference used (claude-3-haiku) still honour them. Only what the request sets
    # is sent: the reference's Claude scripts send temperature alone.
    payload: dict[str, Any] = {
        "messages": messages,
        "max_tokens": req.max_tokens,
        "extra_body": req.sampling(),
    }
    if system:
        payload["system"] = system
    if req.stop:
        payload["stop_sequences"] = list(req.stop)
    return payload


def anthropic_response(req: Request, msg: Any) -> Response:
    continuation = "".join(b.text for b in msg.content if getattr(b, "type", "") == "text")
    return Response.from_continuation(
        req,
        continuation,
        tokens_in=msg.usage.input_tokens,
        tokens_out=msg.usage.output_tokens,
    )


class AnthropicGenerator(HTTPGenerator):
    backend = "anthropic"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        max_retries: int = 6,
        timeout: float = 120,
        max_in_flight: int = 8,
        backoff: float = 1.0,
    ):
        import anthropic

        key = os.environ.get(api_key_env) or None
        if key is None:
            raise missing_key(api_key_env, " before running a Claude stage")
        client = anthropic.Anthropic(
            api_key=key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,  # the shared loop is the one retry policy
        )
        super().__init__(
            model,
            sdk=anthropic,
            client=client,
            capabilities=CAPABILITIES["anthropic"],
            key_env=api_key_env,
            key=key,
            base_url=base_url,
            timeout=timeout,
            max_in_flight=max_in_flight,
            max_retries=max_retries,
            backoff=backoff,
        )

    def _send(self, req: Request) -> Response:
        msg = self.client.messages.create(model=self.model, **anthropic_payload(req))
        return anthropic_response(req, msg)
