"""Image and text features into Parquet, streaming, deterministic, with skip accounting.

``extract_image_features`` reads images.parquet, decodes and preprocesses in DataLoader workers,
encodes batch by batch and appends each batch to a Parquet row group as it goes, so memory does
not grow with the collection. Images that cannot be decoded are skipped and listed in a sidecar
report (``*.skips.json``); beyond a configurable ceiling the stage fails naming the files.
Output order is the input order, so two runs give identical bytes.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from crossmodal.encoders import ClipEncoder
from crossmodal.errors import CrossmodalError
from crossmodal.images import DEFAULT_MAX_PIXELS, load_image
from crossmodal.io import atomic_path, with_provenance, write_json

log = logging.getLogger(__name__)


# Images per hand-over from a decode worker; the encoder batch is assembled from these.
WORKER_CHUNK = 32


class TooManySkipsError(CrossmodalError):
    """More images failed to load than the configured ceiling allows."""


def embedding_schema(id_field: str, id_type: pa.DataType, dim: int, dtype: str) -> pa.Schema:
    value = pa.float16() if dtype == "float16" else pa.float32()
    return pa.schema([(id_field, id_type), ("embedding", pa.list_(value, dim))])


def embeddings_to_array(emb: np.ndarray, dtype: str) -> pa.FixedSizeListArray:
    np_type = np.float16 if dtype == "float16" else np.float32
    flat = np.ascontiguousarray(emb, dtype=np_type).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat), emb.shape[1])


def read_embeddings(path: str | Path, id_field: str = "image_id") -> tuple[np.ndarray, np.ndarray]:
    """(ids, float32 matrix) from a features Parquet file."""
    table = pq.read_table(path)
    col = table.column("embedding").combine_chunks()
    dim = col.type.list_size
    flat = col.values.to_numpy(zero_copy_only=False)
    return (
        table.column(id_field).to_numpy(),
        flat.reshape(-1, dim).astype(np.float32, copy=False),
    )


class _ImageFiles(Dataset):
    """Decode + PIL preprocessing in workers; uint8 CHW out when the transform splits."""

    def __init__(
        self,
        paths: list[str],
        preprocess,
        draft_size: int | None,
        pil_transform=None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        self.paths, self.preprocess, self.draft_size = paths, preprocess, draft_size
        self.pil_transform, self.max_pixels = pil_transform, max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        res = load_image(self.paths[i], self.draft_size, self.max_pixels)
        if res.error is not None:
            return i, None, res.original_mode, res.error
        if self.pil_transform is not None:
            hwc = np.asarray(self.pil_transform(res.image), dtype=np.uint8)
            pixels = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)))
            return i, pixels, res.original_mode, None
        return i, self.preprocess(res.image), res.original_mode, None


def _collate(items):
    ok = [(i, t) for i, t, _, err in items if err is None]
    idx = [i for i, _ in ok]
    pixels = torch.stack([t for _, t in ok]) if ok else None
    modes = [m for _, _, m, err in items if err is None]
    errors = [(i, err) for i, _, _, err in items if err is not None]
    return idx, pixels, modes, errors


@dataclass
class ExtractReport:
    total: int
    encoded: int
    skipped: list[dict[str, Any]]
    converted_modes: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "encoded": self.encoded,
            "skipped_count": len(self.skipped),
            "skipped": self.skipped,
            "converted_modes": self.converted_modes,
        }


def extract_image_features(
    encoder: ClipEncoder,
    images_parquet: str | Path,
    out: str | Path,
    *,
    batch_size: int = 256,
    workers: int = 2,
    draft: bool = True,
    dtype: str = "float32",
    max_skip_fraction: float = 0.0,
    rows_per_group: int = 4096,
    report_path: str | Path | None = None,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> ExtractReport:
    """Encode every image listed in images.parquet; write features and the skip report.

    Images whose header declares more than ``max_pixels`` pixels are skipped undecoded, with
    the reason, and count against ``max_skip_fraction`` like any unreadable image.
    """
    out = Path(out)
    report_path = Path(report_path) if report_path else out.with_suffix(".skips.json")
    images = pq.read_table(images_parquet, columns=["image_id", "path"])
    ids = images.column("image_id").to_numpy()
    paths = images.column("path").to_pylist()
    draft_size = encoder.image_size if draft else None
    loader = DataLoader(
        _ImageFiles(paths, encoder.preprocess, draft_size, encoder.pil_transform, max_pixels),
        batch_size=min(batch_size, WORKER_CHUNK),
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=encoder.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    schema = with_provenance(
        embedding_schema("image_id", pa.int64(), encoder.dim, dtype),
        {
            "stage": "extract-features",
            **encoder.provenance(),
            "jpeg_draft": draft,
            "max_pixels": max_pixels,
            "dtype": dtype,
            "source": str(images_parquet),
        },
    )
    skipped: list[dict[str, Any]] = []
    modes: Counter[str] = Counter()
    progress = tqdm(total=len(paths), desc=f"features {out.stem}", unit="img", leave=False)

    def account(n_items, chunk_modes, errors):
        for i, err in errors:
            skipped.append({"image_id": int(ids[i]), "path": paths[i], "reason": err})
        modes.update(m for m in chunk_modes if m != "RGB")
        progress.update(n_items)

    def finish(encoded: int) -> ExtractReport:
        report = ExtractReport(len(paths), encoded, skipped, dict(sorted(modes.items())))
        write_json(report_path, report.as_dict())
        _check_ceiling(report, max_skip_fraction, report_path)
        return report

    batches = _rebatched(loader, batch_size, account, encoder.device.type == "cuda")
    with progress, _model_threads(encoder, workers):
        report = _write_features(encoder, batches, ids, schema, dtype, out, rows_per_group, finish)
    log.info("%d/%d images encoded, %d skipped", report.encoded, len(paths), len(skipped))
    return report


@contextmanager
def _model_threads(encoder: ClipEncoder, workers: int):
    """On the CPU, leave the cores to the decode workers: one intra-op thread for the model
    avoids oversubscription (measured in benchmarks/RESULTS.md)."""
    before = torch.get_num_threads()
    if encoder.device.type == "cpu" and workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _rebatched(chunks, batch_size: int, on_chunk, pin_memory: bool = False):
    """Regroup the workers' small chunks into encoder batches of exactly ``batch_size`` images.

    Workers hand over small chunks so the first batch is ready after a few images instead of a
    whole batch per worker, and no worker idles at the end while the last big batch encodes;
    the encoder still sees full batches (the last one may be short). Chunks are copied into one
    reused buffer: a fresh batch-sized allocation per batch costs measurable page faults. The
    yielded tensor is a view of that buffer, valid until the next batch is requested.
    ``on_chunk`` sees every chunk's modes and errors, including chunks with nothing decodable.
    """
    buffer: torch.Tensor | None = None
    idx_buf: list[int] = []
    for idx, pixels, modes, errors in chunks:
        on_chunk(len(idx) + len(errors), modes, errors)
        if pixels is None:
            continue
        if buffer is None:
            buffer = torch.empty((batch_size, *pixels.shape[1:]), dtype=pixels.dtype)
            buffer = buffer.pin_memory() if pin_memory else buffer
        start = 0
        while start < len(idx):
            take = min(len(idx) - start, batch_size - len(idx_buf))
            buffer[len(idx_buf) : len(idx_buf) + take].copy_(pixels[start : start + take])
            idx_buf.extend(idx[start : start + take])
            start += take
            if len(idx_buf) == batch_size:
                yield idx_buf, buffer
                idx_buf = []
    if idx_buf:
        yield idx_buf, buffer[: len(idx_buf)]


def _write_features(
    encoder, batches, ids, schema, dtype, out: Path, rows_per_group: int, finish
) -> ExtractReport:
    """Encode each batch and append it to the Parquet file, a row group per ``rows_per_group``
    rows. ``finish(encoded)`` writes the skip report and may raise (too many skips) before the
    file is moved into place, so a failed extraction leaves no features file behind."""
    encoded = 0
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for idx, pixels in batches:
            emb = encoder.encode_pixels(pixels)
            pending.append(
                pa.record_batch(
                    [pa.array(ids[idx], pa.int64()), embeddings_to_array(emb, dtype)],
                    schema=schema,
                )
            )
            pending_rows += len(idx)
            encoded += len(idx)
            if pending_rows >= rows_per_group:
                writer.write_table(pa.Table.from_batches(pending), row_group_size=pending_rows)
                pending, pending_rows = [], 0
        if pending:
            writer.write_table(pa.Table.from_batches(pending), row_group_size=pending_rows)
        return finish(encoded)


def _check_ceiling(report: ExtractReport, max_fraction: float, report_path: Path) -> None:
    allowed = int(max_fraction * report.total)
    if len(report.skipped) > allowed:
        listed = "\n  ".join(f"{s['path']}: {s['reason']}" for s in report.skipped[:20])
        more = len(report.skipped) - 20
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise TooManySkipsError(
            f"{len(report.skipped)} of {report.total} images could not be read (ceiling "
            f"{allowed}, features.max_skip_fraction={max_fraction}); full list in "
            f"{report_path}:\n  {listed}{tail}"
        )


def extract_text_features(
    encoder: ClipEncoder,
    table_path: str | Path,
    out: str | Path,
    *,
    id_column: str,
    text_column: str,
    dtype: str = "float32",
    chunk: int = 8192,
) -> int:
    """Encode one text column of a Parquet table (questions, captions) in row order."""
    table = pq.read_table(table_path, columns=[id_column, text_column])
    id_type = table.schema.field(id_column).type
    schema = with_provenance(
        embedding_schema(id_column, id_type, encoder.dim, dtype),
        {
            "stage": "extract-text-features",
            **encoder.provenance(),
            "dtype": dtype,
            "source": str(table_path),
            "text_column": text_column,
        },
    )
    texts = table.column(text_column).to_pylist()
    ids = table.column(id_column)
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for start in tqdm(range(0, len(texts), chunk), desc="text features", leave=False):
            emb = encoder.encode_texts(texts[start : start + chunk])
            part = pa.table(
                [ids.slice(start, len(emb)), embeddings_to_array(emb, dtype)], schema=schema
            )
            writer.write_table(part)
    return len(texts)


def run_extract_features(job) -> ExtractReport:
    """The ``extract-features`` stage (a :class:`crossmodal.stages.ExtractFeatures` job)."""
    from crossmodal.encoders import build_encoder

    log.info("CUDA_VISIBLE_DEVICES=%s", os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    encoder = build_encoder(job.encoder, device=job.device, precision=job.precision)
    return extract_image_features(
        encoder,
        job.images,
        job.features,
        batch_size=job.batch_size,
        workers=job.workers,
        draft=job.draft,
        dtype=job.dtype,
        max_skip_fraction=job.max_skip_fraction,
        report_path=job.skips,
        max_pixels=job.max_pixels,
    )


def run_extract_text_features(job) -> int:
    """The ``extract-text-features`` stage (a :class:`crossmodal.stages.ExtractTextFeatures`)."""
    from crossmodal.encoders import build_encoder

    encoder = build_encoder(job.encoder, device=job.device, precision=job.precision)
    n = extract_text_features(
        encoder,
        job.table,
        job.features,
        id_column=job.id_column,
        text_column=job.text_column,
        dtype=job.dtype,
    )
    log.info("%d texts encoded -> %s", n, job.features)
    return n
