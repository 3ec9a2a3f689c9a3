"""The encoder object every backend returns."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image


def split_preprocess(preprocess) -> tuple[Callable, tuple[float, ...], tuple[float, ...]] | None:
    """Split a CLIP Compose into its PIL part and the (mean, std) of its final Normalize.

    Workers then run only the PIL part (decode, resize, crop) and send uint8 pixels, a quarter
    of the bytes of float32; the main process converts and normalises a whole batch in one
    vectorised step, with the same arithmetic as ToTensor + Normalize. ``None`` when the
    transform has another shape (then the full transform runs per image).
    """
    steps = list(getattr(preprocess, "transforms", []))
    names = [type(t).__name__ for t in steps]
    if len(steps) < 2 or names[-1] != "Normalize" or "ToTensor" not in names[-2]:
        return None

    def pil_part(img: Image.Image) -> Image.Image:
        for t in steps[:-2]:
            img = t(img)
        return img if img.mode == "RGB" else img.convert("RGB")

    norm = steps[-1]
    return pil_part, tuple(map(float, norm.mean)), tuple(map(float, norm.std))


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks the GPU when one is visible, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class ClipEncoder:
    """A CLIP-style dual encoder with its own preprocessing.

    ``encode_pixels`` takes an already preprocessed batch (what DataLoader workers produce);
    ``encode_images`` and ``encode_texts`` are the convenient whole-pipeline entry points.
    Outputs are always float32 and L2-normalised; fp16 autocast is used only on a GPU.
    """

    image_fn: Callable[[torch.Tensor], torch.Tensor]
    text_fn: Callable[[list[str]], torch.Tensor]
    preprocess: Callable[[Image.Image], torch.Tensor]
    image_size: int
    dim: int
    device: torch.device
    spec: dict[str, Any]
    precision: str = "fp32"  # "fp16" only takes effect on CUDA
    text_batch_size: int = 256
    extra_provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        split = split_preprocess(self.preprocess)
        self.pil_transform, mean, std = split if split else (None, (), ())
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)

    def normalise_uint8(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC batch -> normalised float NCHW, exactly as ToTensor + Normalize."""
        x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
        return x.sub_(self._mean).div_(self._std)

    def _autocast(self):
        if self.device.type == "cuda" and self.precision == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Encode a preprocessed float NCHW batch, or a uint8 NHWC batch of PIL-stage output."""
        if pixels.dtype == torch.uint8:
            pixels = self.normalise_uint8(pixels)
        with self._autocast():
            out = self.image_fn(pixels.to(self.device, non_blocking=True))
        return _normalise(out)

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        chunks = []
        for start in range(0, len(texts), self.text_batch_size):
            batch = list(texts[start : start + self.text_batch_size])
            with self._autocast():
                chunks.append(_normalise(self.text_fn(batch)))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks)

    def encode_images(self, paths: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Encode image files in order (no skipping: a bad file raises)."""
        chunks = []
        for start in range(0, len(paths), batch_size):
            batch = [self.preprocess(Image.open(p)) for p in paths[start : start + batch_size]]
            chunks.append(self.encode_pixels(torch.stack(batch)))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks)

    def provenance(self) -> dict[str, Any]:
        return {
            "encoder": self.spec,
            "preprocess": repr(self.preprocess),
            "precision": self.precision if self.device.type == "cuda" else "fp32",
            "torch_version": torch.__version__,
            **self.extra_provenance,
        }


def _normalise(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x.cpu().numpy().astype(np.float32, copy=False)
