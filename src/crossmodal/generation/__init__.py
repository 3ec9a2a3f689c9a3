"""One generation interface, ``generate(requests) -> responses``, over several transports.

Backends: ``transformers`` (in-process Hugging Face), ``openai`` (any OpenAI-compatible server),
``vllm`` (starts ``vllm serve`` on a free localhost port, then talks OpenAI to it) and
``anthropic`` (Claude Messages API). They differ only in transport: the request, the seed
handling and the response are the same everywhere. The HTTP backends share one client loop
(:mod:`~crossmodal.generation.http_client`: requests in flight, one retry policy, one error
mapping) and are small payload adapters on it.

Capabilities: each backend declares what it can do (seed, logprobs, prefill, raw_completion,
images; :func:`~crossmodal.generation.registry.capabilities`), and
:func:`~crossmodal.generation.registry.capability_problems` checks the configured stages
against them before any work. What a stage needs with no fallback (images; a prefill the VLM
sets) is an error; what has a documented fallback is a note (PICa without log-probabilities:
majority vote; without a completion endpoint: the prompt as one user chat message). A backend
never drops a prefill silently: a request carrying one where it cannot be continued is refused.

Empty answers, one rule for every backend: a model that continues with nothing has answered.
Requests are seeded, so resending would get the same empty answer and a run could never get
past it; the response is therefore a normal one (``ok``, journalled) whose text is the prefill
alone (or ""), with ``Response.empty`` set so ledgers and reports can count such answers.
``error`` is kept for requests that failed for good (after retries), which a rerun resends.
"""

from crossmodal.generation.registry import (
    BACKENDS,
    Capabilities,
    build_generator,
    capabilities,
    capability_problems,
)
from crossmodal.generation.types import Request, Response, image, text

__all__ = [
    "BACKENDS",
    "Capabilities",
    "Request",
    "Response",
    "build_generator",
    "capabilities",
    "capability_problems",
    "image",
    "text",
]
