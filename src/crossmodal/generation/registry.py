"""Build a generator from a config entry (``vlms:`` / ``llms:``), and what each backend can do.

Each backend declares its capabilities (:class:`Capabilities`); :func:`capability_problems`
checks a configuration's stages against them before any work, so a stage never finds out
half-way through a run that its backend cannot do what it asks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from crossmodal.errors import CrossmodalError


def _transformers(spec: dict[str, Any]):
    from crossmodal.generation.transformers_backend import TransformersGenerator

    return TransformersGenerator(
        spec["model"],
        device=spec["device"],
        dtype=spec["dtype"],
        revision=spec["revision"],
        batch_size=spec["batch_size"],
    )


def _openai(spec: dict[str, Any]):
    from crossmodal.generation.openai_backend import OpenAIGenerator

    return OpenAIGenerator(
        spec["model"],
        base_url=spec["base_url"],
        api_key_env=spec["api_key_env"],
        max_in_flight=spec["max_in_flight"],
        timeout=spec["timeout"],
        max_retries=spec["max_retries"],
        vllm_extensions=spec["vllm_extensions"],
        backoff=spec["backoff"],
    )


def _vllm(spec: dict[str, Any]):
    from crossmodal.generation.vllm_backend import VLLMGenerator

    return VLLMGenerator(
        spec["model"],
        base_url=spec["base_url"],
        server_command=spec["server_command"],
        server_args=spec["server_args"],
        dtype=spec["dtype"],
        gpus=spec["gpus"],
        revision=spec["revision"],
        startup_timeout=spec["startup_timeout"],
        max_in_flight=spec["max_in_flight"],
        timeout=spec["timeout"],
    )


def _anthropic(spec: dict[str, Any]):
    from crossmodal.generation.anthropic_backend import AnthropicGenerator

    return AnthropicGenerator(
        spec["model"],
        base_url=spec["base_url"],
        max_retries=spec["max_retries"],
        timeout=spec["timeout"],
        max_in_flight=spec["max_in_flight"],
        backoff=spec["backoff"],
    )


BACKENDS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "transformers": _transformers,
    "openai": _openai,
    "vllm": _vllm,
    "anthropic": _anthropic,
}


def build_generator(spec: dict[str, Any]):
    """A generator with ``generate(requests)`` and ``close()`` for the config entry ``spec``;
    keys it leaves out take the schema's defaults for its backend (the only defaults)."""
    from crossmodal.config import with_backend_defaults

    if spec.get("backend") not in BACKENDS:
        raise CrossmodalError(
            f"generation backend {spec.get('backend')!r} unknown; choose one of {sorted(BACKENDS)}"
        )
    return BACKENDS[spec["backend"]](with_backend_defaults("llms", spec))


class CapabilityError(CrossmodalError):
    """A request or a configured stage needs something its backend cannot do."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do with a request.

    seed: honours the request's seed (same request, same answer).
    logprobs: returns token log-probabilities.
    prefill: continues an assistant prefill (the answer starts with the prefill's words).
    raw_completion: a completion endpoint, the prompt sent as is, with no chat template.
    images: takes image parts.
    """

    seed: bool
    logprobs: bool
    prefill: bool
    raw_completion: bool
    images: bool


ALL = Capabilities(seed=True, logprobs=True, prefill=True, raw_completion=True, images=True)

CAPABILITIES: dict[str, Capabilities] = {
    "transformers": ALL,
    "vllm": ALL,
    # A plain OpenAI chat endpoint cannot continue an assistant message; vLLM's server can
    # (continue_final_message) and also serves the completion endpoint for any model.
    "openai": replace(ALL, prefill=False, raw_completion=False),
    # The Messages API continues a trailing assistant message but takes no seed, returns no
    # log-probabilities and has no completion endpoint.
    "anthropic": replace(ALL, seed=False, logprobs=False, raw_completion=False),
}


def capabilities(spec: dict[str, Any]) -> Capabilities:
    """The capabilities of the backend a config entry (``vlms.X`` / ``llms.X``) selects."""
    backend = spec.get("backend")
    if backend not in CAPABILITIES:
        raise CrossmodalError(
            f"generation backend {backend!r} unknown; choose one of {sorted(CAPABILITIES)}"
        )
    caps = CAPABILITIES[backend]
    if backend == "openai" and spec.get("vllm_extensions"):
        caps = replace(caps, prefill=True, raw_completion=True)
    return caps


def prefill_fix(backend: str) -> str:
    """How to make a prefill work, or do without it, on ``backend``."""
    if backend == "openai":
        return "set vllm_extensions: true for a vLLM server or remove the prefill"
    return "use a backend that continues a prefill (transformers, vllm, anthropic) or remove it"


def capability_problems(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(errors, notes) for the configured stages against their backends' capabilities.

    Describe (each of ``describe.vlms``) needs images, and prefill when the VLM sets a
    non-empty ``prefill``: neither has a fallback, so a backend without it is an error.
    PICa (each of ``pica.llms``) prefers log-probabilities and the completion endpoint; each
    has a documented fallback, so its absence is a note: the ensemble answer by majority vote,
    and the prompt sent as one user chat message.
    """
    errors: list[str] = []
    notes: list[str] = []
    for name in config.get("describe", {}).get("vlms", []):
        spec = config.get("vlms", {}).get(name)
        if spec is None:
            errors.append(f"describe.vlms: {name!r} is not configured under vlms; add it there")
            continue
        backend, caps = spec.get("backend"), capabilities(spec)
        if not caps.images:
            errors.append(
                f"vlms.{name}.backend: backend {backend!r} takes no images, which the describe "
                "stage sends; choose a backend that does"
            )
        for key in ("prefill", "compare_prefill"):
            if spec.get(key) and not caps.prefill:
                errors.append(
                    f"vlms.{name}.{key}: backend {backend!r} cannot continue an assistant "
                    f"prefill; {prefill_fix(backend)}"
                )
        if not caps.seed:
            notes.append(
                f"vlms.{name}: backend {backend!r} takes no seed, so its descriptions are not "
                "reproducible bit for bit"
            )
    for name in config.get("pica", {}).get("llms", []):
        spec = config.get("llms", {}).get(name)
        if spec is None:
            errors.append(f"pica.llms: {name!r} is not configured under llms; add it there")
            continue
        backend, caps = spec.get("backend"), capabilities(spec)
        if not caps.logprobs:
            notes.append(
                f"llms.{name}: backend {backend!r} returns no log-probabilities; PICa picks "
                "each ensemble's answer by majority vote instead of the highest summed "
                "log-probability"
            )
        if not caps.raw_completion:
            notes.append(
                f"llms.{name}: backend {backend!r} has no completion endpoint; PICa sends its "
                "prompt as one user chat message (the chat template applies)"
            )
    return errors, notes
