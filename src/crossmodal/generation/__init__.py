"""One generation interface, ``generate(requests) -> responses``, over several transports.

Backends: ``transformers`` (in-process Hugging Face), ``openai`` (any OpenAI-compatible server),
``vllm`` (starts ``vllm serve`` on a free localhost port, then talks OpenAI to it) and
``anthropic`` (Claude Messages API). They differ only in transport: the request, the seed
handling and the response are the same everywhere.
"""

from crossmodal.generation.registry import BACKENDS, build_generator
from crossmodal.generation.types import Request, Response, image, text

__all__ = ["BACKENDS", "Request", "Response", "build_generator", "image", "text"]
