"""The crop feature cache: per image, the full image and M random square crops, encoded once.

The reference (``main.py:47-82``) decodes each image in a DataLoader worker, draws M crops
with ``random_crop`` and runs every view through CLIP's preprocessing; ``helper.py:251-273``
encodes the batch, L2-normalises, and caches the crops with their cosine to the full image.

Crop geometry, as in the reference (``main.py:58-62`` and torchvision's ``v2.RandomCrop``):

- side: ``int(U(alpha, 0.9) * min(width, height))`` (a uniform float, truncated);
- top: a uniform integer in ``[0, height - side]``, drawn only when ``height > side``
  (else 0); then left, likewise over the width.

Departures, for the config's departures table:

- Seeding. The reference draws the side from NumPy's global generator and the position from
  torch's, both seeded per DataLoader worker, so its crops depend on ``num_workers`` and the
  batch size. Here each image has its own generator, seeded from ``(seed, image_id)``
  (:func:`crop_rng`), drawing side, top, left per crop in that order: the crops depend only on
  the image, never on the worker count or the order images are loaded in.
- alpha. The reference's loader calls ``random_crop(img)`` without alpha (``main.py:80``), so
  its crops use the function's default ``alpha=0.1`` (``main.py:47``) whatever the config
  says (``cfgs/*.yaml``: 0.5; 0.7 for Places365); the configured alpha only names its cache
  file (``helper.py:218``). Here alpha is the value passed; 0.1 reproduces the reference.
- A side that truncates to 0 (a short side below ``1 / alpha`` pixels) becomes 1 pixel; the
  reference would fail on such an image.
- No JPEG draft decoding: crops are cut from the full-resolution image, as in the reference.

Unreadable images are skipped, listed with the reason in the sidecar JSON and counted against
``max_skip_fraction``; beyond it the stage fails naming them. Rows follow images.parquet's order
(skipped images have no row), so two runs give identical bytes.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from crossmodal import __version__
from crossmodal.encoders import ClipEncoder
from crossmodal.errors import CrossmodalError, DataFormatError
from crossmodal.features import _collate, _model_threads, _rebatched
from crossmodal.images import load_image
from crossmodal.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

MAX_SIDE_FRACTION = 0.9  # main.py:60: np.random.uniform(low=alpha, high=0.9)
SAMPLER = (
    "per image: numpy PCG64 seeded by SeedSequence([seed, image_id]); per crop, in order: "
    "side = int(uniform(alpha, 0.9) * min(width, height)) (at least 1), "
    "top = integers(0, height - side + 1) if height > side else 0, "
    "left = integers(0, width - side + 1) if width > side else 0"
)
# Images per hand-over from a decode worker (each 1 + n_crops views: ~15 MB at 101 views of
# 224 px); the main process regroups them into encoder batches of ``batch_size`` images in one
# reused buffer, so shared memory holds a few small chunks rather than whole batches.
WORKER_IMAGES = 2
# Image rows per chunk when the features are read back (bounds the float32 working copy).
READ_CHUNK = 1024


class TooManyCropSkipsError(CrossmodalError):
    """More images failed to load than ``max_skip_fraction`` allows."""


def crop_rng(seed: int, image_id: int) -> np.random.Generator:
    """The generator of one image's crops: a function of (seed, image id) alone."""
    if seed < 0 or image_id < 0:
        raise CrossmodalError(
            f"crop seeds need a non-negative seed and image id, got seed {seed}, image_id "
            f"{image_id}; give the collection non-negative image ids"
        )
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(image_id)]))


def sample_crop_boxes(
    width: int, height: int, n_crops: int, alpha: float, seed: int, image_id: int
) -> np.ndarray:
    """``n_crops`` square boxes ``(left, top, right, bottom)`` inside a ``width x height`` image.

    Pure: the same arguments give the same boxes in any process. Side and position are drawn
    as the reference draws them (``main.py:58-62``: a uniform side fraction in
    ``[alpha, 0.9)`` of the short side, truncated to an integer; then torchvision
    ``RandomCrop``'s top and left, each drawn only when there is room to move).
    """
    if not 0.0 < alpha <= MAX_SIDE_FRACTION:
        raise CrossmodalError(
            f"crop alpha {alpha} is outside (0, {MAX_SIDE_FRACTION}]: the crop side is drawn "
            f"from [alpha, {MAX_SIDE_FRACTION}) x the short side (wca.alpha)"
        )
    if n_crops < 1:
        raise CrossmodalError(f"n_crops must be at least 1, got {n_crops} (wca.n_crops)")
    if width < 1 or height < 1:
        raise CrossmodalError(f"image {image_id}: size {width}x{height} has no pixels")
    rng = crop_rng(seed, image_id)
    short = min(width, height)
    boxes = np.empty((n_crops, 4), dtype=np.int64)
    for k in range(n_crops):
        side = max(1, int(rng.uniform(alpha, MAX_SIDE_FRACTION) * short))
        top = int(rng.integers(0, height - side + 1)) if height > side else 0
        left = int(rng.integers(0, width - side + 1)) if width > side else 0
        boxes[k] = (left, top, left + side, top + side)
    return boxes


class _CropViews(Dataset):
    """Decode one image in a worker; return its full view and crops, preprocessed.

    With a splittable transform the views leave the worker as uint8 NCHW (the encoder
    normalises them, bit-identically to its own transform); otherwise as float tensors.
    """

    def __init__(
        self,
        ids: list[int],
        paths: list[str],
        encoder: ClipEncoder,
        n_crops: int,
        alpha: float,
        seed: int,
        max_pixels: int | None,
    ):
        self.ids, self.paths = ids, paths
        self.preprocess, self.pil_transform = encoder.preprocess, encoder.pil_transform
        self.n_crops, self.alpha, self.seed, self.max_pixels = n_crops, alpha, seed, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        res = load_image(self.paths[i], None, self.max_pixels)
        if res.error is not None:
            return i, None, res.original_mode, res.error
        image = res.image
        boxes = sample_crop_boxes(
            image.width, image.height, self.n_crops, self.alpha, self.seed, self.ids[i]
        )
        views = [image] + [image.crop(tuple(int(v) for v in box)) for box in boxes]
        if self.pil_transform is not None:
            hwc = np.stack([np.asarray(self.pil_transform(v), dtype=np.uint8) for v in views])
            pixels = torch.from_numpy(np.ascontiguousarray(hwc.transpose(0, 3, 1, 2)))
        else:
            pixels = torch.stack([self.preprocess(v) for v in views])
        return i, pixels, res.original_mode, None


def _read_images(images_parquet: str | Path) -> tuple[list[int], list[str]]:
    table = pq.read_table(images_parquet, columns=["image_id", "path"])
    ids = [int(v) for v in table.column("image_id").to_pylist()]
    paths = table.column("path").to_pylist()
    dupes = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dupes:
        raise DataFormatError(
            f"{images_parquet}: image_id {dupes[:5]} listed more than once; crops are keyed "
            "by image id, so each image must appear once"
        )
    return ids, paths


def extract_crop_features(
    encoder: ClipEncoder,
    images_parquet: str | Path,
    out: str | Path,
    meta_path: str | Path,
    *,
    n_crops: int,
    alpha: float,
    seed: int,
    batch_size: int,
    workers: int,
    dtype: str,
    max_skip_fraction: float,
    max_pixels: int | None,
) -> dict[str, Any]:
    """Encode the full image and ``n_crops`` crops of every image of images.parquet.

    Writes ``out`` (``.npy``, shape ``[n_images, 1 + n_crops, dim]``: view 0 the full image,
    views 1.. the crops, each L2-normalised) and ``meta_path`` (row ids, settings, skipped
    images, provenance). ``batch_size`` counts images: one forward encodes
    ``batch_size * (1 + n_crops)`` views, as the reference's batches of 32 images do.
    """
    if dtype not in ("float16", "float32"):
        raise CrossmodalError(f"dtype must be float16 or float32, got {dtype!r}")
    ids, paths = _read_images(images_parquet)
    n_views = 1 + n_crops
    dataset = _CropViews(ids, paths, encoder, n_crops, alpha, seed, max_pixels)
    sample_crop_boxes(1, 1, n_crops, alpha, seed, 0)  # settings errors before any worker starts
    loader = DataLoader(
        dataset,
        batch_size=min(batch_size, WORKER_IMAGES),
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=2 if workers else None,
    )
    rows: list[int] = []
    skipped: list[dict[str, Any]] = []
    modes: Counter[str] = Counter()
    out = Path(out)
    bar = tqdm(total=len(ids), desc=f"crops {out.stem}", unit="img", leave=False)

    def account(n_items: int, chunk_modes: list[str], errors: list[tuple[int, str]]) -> None:
        for i, err in errors:
            skipped.append({"image_id": ids[i], "path": paths[i], "reason": err})
        modes.update(m for m in chunk_modes if m != "RGB")
        bar.update(n_items)

    on_gpu = encoder.device.type == "cuda"
    with atomic_path(out) as tmp, _model_threads(encoder, workers), bar:
        array = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=np.dtype(dtype), shape=(len(ids), n_views, encoder.dim)
        )
        for idx, pixels in _rebatched(loader, batch_size, account, on_gpu):
            emb = encoder.encode_pixels(pixels.flatten(0, 1))
            array[len(rows) : len(rows) + len(idx)] = emb.reshape(len(idx), n_views, -1)
            rows.extend(idx)
        array.flush()
        del array
        _check_skips(skipped, len(ids), max_skip_fraction)
        if len(rows) < len(ids):
            _truncate_rows(tmp, len(rows))
    meta = {
        "stage": "wca-crops",
        "package_version": __version__,
        "source": str(images_parquet),
        "image_ids": [ids[i] for i in rows],
        "n_images": len(rows),
        "n_crops": n_crops,
        "alpha": alpha,
        "seed": seed,
        "dtype": dtype,
        "shape": [len(rows), n_views, encoder.dim],
        "layout": "row r is image_ids[r]; view 0 is the full image, views 1..n_crops its crops",
        "sampler": SAMPLER,
        "max_pixels": max_pixels,
        "total": len(ids),
        "skipped_count": len(skipped),
        "skipped": skipped,
        "converted_modes": dict(sorted(modes.items())),
        **encoder.provenance(),
    }
    write_json(meta_path, meta)
    log.info(
        "%d/%d images x %d views encoded, %d skipped", len(rows), len(ids), n_views, len(skipped)
    )
    return meta


def _check_skips(skipped: list[dict[str, Any]], total: int, max_fraction: float) -> None:
    allowed = int(max_fraction * total)
    if len(skipped) > allowed:
        listed = "\n  ".join(f"{s['path']}: {s['reason']}" for s in skipped[:20])
        more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        raise TooManyCropSkipsError(
            f"{len(skipped)} of {total} images could not be read (ceiling {allowed}, "
            f"max_skip_fraction={max_fraction}); fix or remove them, or allow more skips:"
            f"\n  {listed}{more}"
        )


def _truncate_rows(path: Path, n_rows: int) -> None:
    """Rewrite a ``.npy`` file keeping its first ``n_rows`` rows (after skipped images)."""
    full = np.load(path, mmap_mode="r")
    kept = path.with_name(path.name + ".kept")
    try:
        out = np.lib.format.open_memmap(
            kept, mode="w+", dtype=full.dtype, shape=(n_rows, *full.shape[1:])
        )
        for start in range(0, n_rows, READ_CHUNK):
            end = min(start + READ_CHUNK, n_rows)
            out[start:end] = full[start:end]
        out.flush()
        del out, full
        kept.replace(path)
    finally:
        kept.unlink(missing_ok=True)


def read_crop_features(crops: str | Path, meta: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The cached views (a read-only memmap, ``[n_images, 1 + n_crops, dim]``) and their
    sidecar, checked against each other."""
    info = read_json(meta)
    missing = [k for k in ("shape", "image_ids") if k not in info]
    if missing:
        raise DataFormatError(f"{meta}: no {missing} (not a wca-crops sidecar?): rerun wca-crops")
    array = np.load(crops, mmap_mode="r")
    expected = tuple(info["shape"])
    if array.ndim != 3 or array.shape != expected or len(info["image_ids"]) != array.shape[0]:
        raise DataFormatError(
            f"{crops}: shape {array.shape} does not match its sidecar {meta} (shape "
            f"{list(expected)}, {len(info['image_ids'])} image ids); the two come from "
            "different runs: delete both and rerun wca-crops"
        )
    return array, info


def run_wca_crops(job) -> dict[str, Any]:
    """The ``wca-crops`` stage (a :class:`crossmodal.stages.WcaCrops` job)."""
    from crossmodal.encoders import build_encoder

    encoder = build_encoder(job.encoder, device=job.device, precision=job.precision)
    return extract_crop_features(
        encoder,
        job.images,
        job.crops,
        job.meta,
        n_crops=job.n_crops,
        alpha=job.alpha,
        seed=job.seed,
        batch_size=job.batch_size,
        workers=job.workers,
        dtype=job.dtype,
        max_skip_fraction=job.max_skip_fraction,
        max_pixels=job.max_pixels,
    )
