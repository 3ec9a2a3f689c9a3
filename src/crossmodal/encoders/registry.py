"""Build a :class:`ClipEncoder` from a config entry."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch

from crossmodal.encoders.base import ClipEncoder, resolve_device
from crossmodal.errors import CrossmodalError

TINY_MODEL = "crossmodal-tiny"


@dataclass
class TrainableClip:
    """The open_clip model behind an encoder entry, for fine-tuning (not in eval mode).

    ``preprocess`` is the model's evaluation transform (what CUSA's reference trains with);
    ``tokenizer`` maps texts to a ``[n, context_length]`` token tensor.
    """

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable[[list[str]], torch.Tensor]
    embed_dim: int
    image_size: int
    spec: dict[str, Any]


def _load_open_clip(model_name: str, pretrained: str | None, spec: dict, device: torch.device):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=pretrained, device=device
    )
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else int(size)
    return TrainableClip(
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(model_name),
        embed_dim=int(model.text_projection.shape[1]),
        image_size=size,
        spec=spec,
    )


def _open_clip_encoder(
    model_name: str, pretrained: str | None, spec: dict, device: torch.device, precision: str
) -> ClipEncoder:
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        model_name, pretrained=pretrained, device=device
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple | list) else int(size)

    def text_fn(texts: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(texts).to(device))

    dim = int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else None
    if dim is None:
        with torch.inference_mode():
            dim = int(text_fn(["a"]).shape[-1])
    return ClipEncoder(
        image_fn=model.encode_image,
        text_fn=text_fn,
        preprocess=preprocess,
        image_size=size,
        dim=dim,
        device=device,
        spec=spec,
        precision=precision,
    )


def build_open_clip(spec: dict, device: torch.device, precision: str) -> ClipEncoder:
    """``model`` (open_clip name) + ``pretrained`` (tag like ``openai`` or a checkpoint path)."""
    return _open_clip_encoder(spec["model"], spec["pretrained"], spec, device, precision)


@contextlib.contextmanager
def _tiny_model_seed(spec: dict):
    """Register the tiny config and seed its random weights, leaving the global RNG as it was."""
    import open_clip

    config = resources.files("crossmodal.encoders") / "configs" / f"{TINY_MODEL}.json"
    with resources.as_file(config) as path:
        open_clip.add_model_config(path)
    state = torch.random.get_rng_state()
    torch.manual_seed(int(spec["seed"]))
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def build_tiny(spec: dict, device: torch.device, precision: str) -> ClipEncoder:
    """A seeded random-weight open_clip model from the config shipped in the package."""
    with _tiny_model_seed(spec):
        return _open_clip_encoder(TINY_MODEL, None, spec, device, precision)


def _hf_preprocess(spec: dict) -> tuple[Callable, int]:
    """The folder's image processor as a torchvision transform, and its crop size."""
    from torchvision import transforms as T
    from transformers import CLIPImageProcessor

    proc = CLIPImageProcessor.from_pretrained(spec["model"], revision=spec["revision"])
    short = proc.size.get("shortest_edge", proc.size.get("height"))
    crop = proc.crop_size.get("height", short)
    preprocess = T.Compose(
        [
            T.Resize(short, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(crop),
            T.Lambda(lambda im: im.convert("RGB")),
            T.ToTensor(),
            T.Normalize(proc.image_mean, proc.image_std),
        ]
    )
    return preprocess, int(crop)


def _features(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class HfClipModule(torch.nn.Module):
    """A transformers ``CLIPModel`` with open_clip's ``encode_image`` / ``encode_text`` and
    ``logit_scale``, so the training stages fine-tune it like an open_clip model.

    ``encode_text`` takes token ids padded to a fixed length; its attention mask covers each
    text up to its first end-of-text token (the pad token may be that same token, as in
    OpenAI's CLIP tokenizer), which is what the tokenizer's own mask gives."""

    def __init__(self, model: torch.nn.Module, eos_token_id: int) -> None:
        super().__init__()
        self.model, self.eos_token_id = model, eos_token_id

    @property
    def logit_scale(self) -> torch.nn.Parameter:
        return self.model.logit_scale

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        first_eos = (ids == self.eos_token_id).int().argmax(dim=1)
        positions = torch.arange(ids.shape[1], device=ids.device)
        mask = (positions[None, :] <= first_eos[:, None]).long()
        return _features(self.model.get_text_features(input_ids=ids, attention_mask=mask))


def _load_hf(spec: dict, device: torch.device) -> TrainableClip:
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(spec["model"], revision=spec["revision"]).to(device)
    tok = AutoTokenizer.from_pretrained(spec["model"], revision=spec["revision"])
    length = model.config.text_config.max_position_embeddings
    preprocess, crop = _hf_preprocess(spec)

    def tokenizer(texts: list[str]) -> torch.Tensor:
        return tok(
            texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt"
        )["input_ids"]

    return TrainableClip(
        model=HfClipModule(model, tok.eos_token_id),
        preprocess=preprocess,
        tokenizer=tokenizer,
        embed_dim=int(model.config.projection_dim),
        image_size=crop,
        spec=spec,
    )


def build_hf(spec: dict, device: torch.device, precision: str) -> ClipEncoder:
    """A transformers CLIP (hub id or local folder) with its own image processor's settings."""
    from transformers import AutoTokenizer, CLIPModel

    model_id = spec["model"]
    model = CLIPModel.from_pretrained(model_id, revision=spec["revision"]).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_id, revision=spec["revision"])
    preprocess, crop = _hf_preprocess(spec)

    def image_fn(pixels: torch.Tensor) -> torch.Tensor:
        return _features(model.get_image_features(pixel_values=pixels))

    def text_fn(texts: list[str]) -> torch.Tensor:
        max_len = model.config.text_config.max_position_embeddings
        tok = tokenizer(
            texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        ).to(device)
        return _features(model.get_text_features(**tok))

    return ClipEncoder(
        image_fn=image_fn,
        text_fn=text_fn,
        preprocess=preprocess,
        image_size=int(crop),
        dim=int(model.config.projection_dim),
        device=device,
        spec=spec,
        precision=precision,
    )


BACKENDS: dict[str, Callable[[dict, torch.device, str], ClipEncoder]] = {
    "open_clip": build_open_clip,
    "hf": build_hf,
    "tiny": build_tiny,
}


def build_encoder(
    spec: dict[str, Any], device: str = "auto", precision: str = "auto"
) -> ClipEncoder:
    """Build the encoder a config entry describes; ``precision=auto`` is fp16 on GPU, else fp32."""
    backend = spec.get("backend")
    if backend not in BACKENDS:
        raise CrossmodalError(
            f"encoder backend {backend!r} unknown; choose one of {sorted(BACKENDS)}"
        )
    from crossmodal.config import with_backend_defaults

    spec = with_backend_defaults("encoders", spec)
    dev = resolve_device(device)
    if precision == "auto":
        precision = "fp16" if dev.type == "cuda" else "fp32"
    return BACKENDS[backend](spec, dev, precision)


def load_trainable_clip(spec: dict[str, Any], device: str = "cpu") -> TrainableClip:
    """The model of an encoder entry, to fine-tune (CUSA and the other training stages): the
    same weights :func:`build_encoder` loads for the entry, with ``encode_image``,
    ``encode_text`` and ``logit_scale`` (a transformers CLIP through :class:`HfClipModule`)."""
    from crossmodal.config import with_backend_defaults

    backend = spec.get("backend")
    if backend not in BACKENDS:
        raise CrossmodalError(
            f"encoder backend {backend!r} unknown; choose one of {sorted(BACKENDS)}"
        )
    spec = with_backend_defaults("encoders", spec)
    dev = resolve_device(device)
    if backend == "hf":
        return _load_hf(spec, dev)
    if backend == "tiny":
        with _tiny_model_seed(spec):
            return _load_open_clip(TINY_MODEL, None, spec, dev)
    return _load_open_clip(spec["model"], spec["pretrained"], spec, dev)


# --- image features beyond the CLIP embedding (CUSA's teachers) ---------------------------------

IMAGE_FEATURE_OUTPUTS = ("tokens", "pooled")


@dataclass
class ImageFeatureEncoder(ClipEncoder):
    """A :class:`ClipEncoder` whose image output is chosen: ``pooled`` is the L2-normalised
    embedding (exactly :meth:`ClipEncoder.encode_pixels`), ``tokens`` the patch tokens of the
    last layer, flattened to one row per image and left unnormalised, as Unicom's
    ``forward_features`` that CUSA's reference stores. Workers feed it like any encoder.

    ``image_fn`` returns ``[n, *token_shape]`` for tokens; ``dim`` is the flattened length.
    """

    output: str = "pooled"
    token_shape: tuple[int, ...] | None = None

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        if self.output == "pooled":
            return super().encode_pixels(pixels)
        if pixels.dtype == torch.uint8 and self.device.type == "cuda":
            pixels = self._normalise_on_device(pixels)
        elif pixels.dtype == torch.uint8:
            pixels = self.normalise_uint8(pixels, self._scratch(pixels.shape))
        with self._autocast():
            out = self.image_fn(pixels.to(self.device, non_blocking=True))
        return out.float().reshape(len(out), -1).cpu().numpy()

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "output": self.output, "token_shape": self.token_shape}


def with_token_shape(encoder: ImageFeatureEncoder) -> ImageFeatureEncoder:
    """Fill ``dim`` and ``token_shape`` from one forward pass on a blank image: the token grid
    depends on the model's patch size and input size, which entries do not spell out."""
    size = encoder.image_size
    with torch.inference_mode(), encoder._autocast():
        out = encoder.image_fn(torch.zeros(1, 3, size, size, device=encoder.device))
    encoder.token_shape = tuple(int(s) for s in out.shape[1:])
    encoder.dim = int(out[0].numel())
    return encoder


def build_image_feature_encoder(
    spec: dict[str, Any], output: str, device: str = "auto", precision: str = "auto"
) -> ImageFeatureEncoder:
    """The image features ``output`` names from an encoder entry: ``pooled`` for any backend
    (the model :func:`build_encoder` builds), ``tokens`` for an open_clip or tiny ViT (the
    visual tower's ``output_tokens``: tokens after ``ln_post``, class token left out)."""
    import dataclasses

    if output not in IMAGE_FEATURE_OUTPUTS:
        raise CrossmodalError(
            f"image output {output!r}: choose one of {list(IMAGE_FEATURE_OUTPUTS)}"
        )
    dev = resolve_device(device)
    if precision == "auto":
        precision = "fp16" if dev.type == "cuda" else "fp32"
    if output == "pooled":
        clip = build_encoder(spec, str(dev), precision)
        fields = {f.name: getattr(clip, f.name) for f in dataclasses.fields(ClipEncoder)}
        return ImageFeatureEncoder(**fields, output="pooled")
    trainable = load_trainable_clip(spec, device=str(dev))
    model = trainable.model.eval()
    visual = model.visual
    if not hasattr(visual, "output_tokens"):
        raise CrossmodalError(
            f"encoder {spec.get('model', spec.get('backend'))!r} has no patch tokens (not a "
            "vision transformer): use a ViT model for output 'tokens', or output 'pooled'"
        )
    visual.output_tokens = True  # this instance only ever encodes tokens

    def tokens_fn(pixels: torch.Tensor) -> torch.Tensor:
        return visual(pixels)[1]

    def text_fn(texts: list[str]) -> torch.Tensor:
        return model.encode_text(trainable.tokenizer(texts).to(dev))

    encoder = ImageFeatureEncoder(
        image_fn=tokens_fn,
        text_fn=text_fn,
        preprocess=trainable.preprocess,
        image_size=trainable.image_size,
        dim=0,
        device=dev,
        spec=trainable.spec,
        precision=precision,
        output="tokens",
    )
    return with_token_shape(encoder)
