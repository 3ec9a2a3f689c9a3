"""Build a generator from a config entry (``vlms:`` / ``llms:``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossmodal.errors import CrossmodalError


def _transformers(spec: dict[str, Any]):
    from crossmodal.generation.transformers_backend import TransformersGenerator

    return TransformersGenerator(
        spec["model"],
        device=spec.get("device", "auto"),
        dtype=spec.get("dtype", "auto"),
        revision=spec.get("revision"),
        batch_size=spec.get("batch_size", 1),
    )


def _openai(spec: dict[str, Any]):
    from crossmodal.generation.openai_backend import OpenAIGenerator

    return OpenAIGenerator(
        spec["model"],
        base_url=spec.get("base_url"),
        api_key_env=spec.get("api_key_env", "OPENAI_API_KEY"),
        max_in_flight=spec.get("max_in_flight", 32),
        timeout=spec.get("timeout", 120),
        max_retries=spec.get("max_retries", 5),
        vllm_extensions=spec.get("vllm_extensions", False),
    )


def _vllm(spec: dict[str, Any]):
    from crossmodal.generation.vllm_backend import VLLMGenerator

    return VLLMGenerator(
        spec["model"],
        base_url=spec.get("base_url"),
        server_command=spec.get("server_command"),
        server_args=spec.get("server_args", []),
        startup_timeout=spec.get("startup_timeout", 1200),
        max_in_flight=spec.get("max_in_flight", 64),
        timeout=spec.get("timeout", 300),
    )


def _anthropic(spec: dict[str, Any]):
    from crossmodal.generation.anthropic_backend import AnthropicGenerator

    return AnthropicGenerator(
        spec["model"],
        base_url=spec.get("base_url"),
        max_retries=spec.get("max_retries", 6),
        timeout=spec.get("timeout", 120),
        max_in_flight=spec.get("max_in_flight", 8),
    )


BACKENDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "transformers": _transformers,
    "openai": _openai,
    "vllm": _vllm,
    "anthropic": _anthropic,
}


def build_generator(spec: dict[str, Any]):
    """A generator with ``generate(requests)`` and ``close()`` for the config entry ``spec``."""
    backend = spec.get("backend")
    if backend not in BACKENDS:
        raise CrossmodalError(
            f"generation backend {backend!r} unknown; choose one of {sorted(BACKENDS)}"
        )
    return BACKENDS[backend](spec)
