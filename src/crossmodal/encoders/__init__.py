"""One encoder registry: ``open_clip``, ``hf`` (transformers CLIP) and ``tiny`` (random weights).

Every backend yields a :class:`ClipEncoder`: a PIL preprocessing transform, batched image and
text encoding, L2-normalised float32 output, and a provenance record. The config names encoders
(``encoders: {vitl14: {backend: open_clip, model: ViT-L-14, pretrained: openai}}``) and paths use
the config name.
"""

from crossmodal.encoders.base import ClipEncoder, resolve_device
from crossmodal.encoders.registry import BACKENDS, build_encoder

__all__ = ["BACKENDS", "ClipEncoder", "build_encoder", "resolve_device"]
