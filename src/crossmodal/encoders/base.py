"""The encoder object every backend returns."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image


def split_preprocess(preprocess) -> tuple[Callable, tuple[float, ...], tuple[float, ...]] | None:
    """Split a CLIP Compose into its PIL part and the (mean, std) of its final Normalize.

    Workers then run only the PIL part (decode, resize, crop) and send uint8 pixels, a quarter
    of the bytes of float32; the main process converts and normalises them with the same
    float32 arithmetic as ToTensor + Normalize, so the result is bit-identical to the reference
    transform. ``None`` when the transform has another shape (then the full transform runs per
    image).
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

    def __post_init__(self) -> None:
        split = split_preprocess(self.preprocess)
        self.pil_transform, self._mean, self._std = split if split else (None, (), ())
        self._mean_chw = np.asarray(self._mean, dtype=np.float32).reshape(-1, 1, 1)
        self._std_chw = np.asarray(self._std, dtype=np.float32).reshape(-1, 1, 1)
        self._scratch_buffer: np.ndarray | None = None

    def normalise_uint8(self, pixels: torch.Tensor, out: np.ndarray | None = None) -> torch.Tensor:
        """uint8 NCHW batch -> normalised float32 NCHW, bit-identical to ToTensor + Normalize.

        The same three float32 operations (``/255``, ``-mean``, ``/std``), but image by image
        so the operands stay in cache, with the uint8 cast folded into the first division:
        about 5x less main-process time per image than whole-batch torch arithmetic
        (benchmarks/RESULTS.md). That time competes with the decode workers for the cores.
        """
        src = pixels.numpy()
        out = np.empty(src.shape, dtype=np.float32) if out is None else out[: len(src)]
        for image, dst in zip(src, out, strict=True):
            np.divide(image, np.float32(255.0), out=dst, dtype=np.float32)
            np.subtract(dst, self._mean_chw, out=dst)
            np.divide(dst, self._std_chw, out=dst)
        return torch.from_numpy(out)

    def _scratch(self, shape: torch.Size) -> np.ndarray:
        """A float32 batch buffer reused across calls: a fresh one per batch costs page faults.

        This makes ``encode_pixels`` non-reentrant: one encoder must not encode uint8 batches
        from two threads at once.
        """
        buf = self._scratch_buffer
        if buf is None or buf.shape[1:] != tuple(shape[1:]) or len(buf) < shape[0]:
            self._scratch_buffer = buf = None  # free the old buffer before allocating
            self._scratch_buffer = buf = np.empty(tuple(shape), dtype=np.float32)
        return buf

    def _normalise_on_device(self, pixels: torch.Tensor) -> torch.Tensor:
        """On a GPU, send the uint8 bytes and normalise there with torchvision's arithmetic.

        The copy may be asynchronous from a pinned, reused batch buffer; ``encode_pixels``
        brings the embeddings back with ``.cpu()``, which waits for it, before the buffer is
        refilled.
        """
        x = pixels.to(self.device, non_blocking=True).float().div_(255.0)
        mean = torch.tensor(self._mean, dtype=torch.float32, device=self.device)
        std = torch.tensor(self._std, dtype=torch.float32, device=self.device)
        return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))

    def _autocast(self):
        if self.device.type == "cuda" and self.precision == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """Encode a preprocessed float NCHW batch, or a uint8 NCHW batch of PIL-stage output."""
        if pixels.dtype == torch.uint8 and self.device.type == "cuda":
            pixels = self._normalise_on_device(pixels)
        elif pixels.dtype == torch.uint8:
            pixels = self.normalise_uint8(pixels, self._scratch(pixels.shape))
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
        }


def _normalise(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x.cpu().numpy().astype(np.float32, copy=False)
