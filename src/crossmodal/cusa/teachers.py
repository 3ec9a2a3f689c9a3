"""CUSA's teacher features, computed once before training and read memory-mapped.

CUSA's soft labels are cosine similarities between *teacher* features of the pairs in a batch
(:func:`crossmodal.cusa.losses.teacher_similarity`). The reference (lerogo/aaai24_itr_cusa)
gets them two ways:

* image: Unicom ViT-B/32 ``forward_features`` (the 7x7 patch tokens of the last layer after
  its LayerNorm, flattened to 49 x 768 = 37,632 numbers), precomputed into
  ``{split}_unicom.npy``, a pickled dict ``image_id -> [1, 37632]`` loaded whole into RAM
  (the reference's author: about 15 GB for COCO, 5 GB for Flickr30k, issue #4);
* text: ``SentenceTransformer('all-mpnet-base-v2').encode(raw_captions)`` inside every training
  step, on the pre-processed caption (``pre_caption``), not normalised (the loss normalises).

Here both are stages that write one ``.npy`` matrix each plus a JSON sidecar:

* image rows: the *unique* training images in first-appearance order of pairs.parquet's train
  rows; text rows: every train row of pairs.parquet, in order. Training maps a pair to its
  image row through the sidecar's ``ids``.
* written batch by batch into ``np.lib.format.open_memmap`` (RAM stays flat whatever the
  size), atomically (a killed job leaves no file), float32 or float16;
* read with :func:`open_teacher` (``np.load(mmap_mode="r")``, shape, dtype and ids checked).

The text teacher is encoded once per *unique* text, not once per step: it is frozen and in
eval mode in the reference, so its output for a caption does not depend on when it is asked.
Every training image must be covered: an unreadable image is an error naming it (the loss needs
a teacher row for every pair, so skipping would silently change the training set).

The ``unicom`` teacher kind
---------------------------
Unicom is not on PyPI. A ``{"backend": "unicom", "path": FILE, "image_size": 224}`` entry loads
FILE, a model whose ``forward`` maps a normalised ``[n, 3, 224, 224]`` batch to Unicom's
``forward_features``: a ``torch.export`` program (``.pt2``), a TorchScript file, or a fully
pickled module that has ``forward_features``. To export it from a checkout of deepglint/unicom
(``pip install timm`` there; the checkpoint download is Unicom's own)::

    import torch, unicom
    model, _ = unicom.load("ViT-B/32")      # FP16-ViT-B-32.pt from the Unicom release
    model = model.float().eval()

    class Features(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.forward_features(x)

    x = torch.zeros(2, 3, 224, 224)
    program = torch.export.export(
        Features(model), (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}
    )
    torch.export.save(program, "unicom_vit_b32.pt2")
    # or, with torch versions before torch.export:
    # torch.jit.trace(Features(model), x).save("unicom_vit_b32.pt")

Export on the CPU: Unicom's blocks run under ``torch.cuda.amp.autocast``, which does nothing
there, so the exported model computes in float32 (on a GPU the stage applies the configured
precision). The preprocessing is Unicom's ``_transform``: bicubic resize of the short side,
centre crop, OpenAI CLIP's mean and std. Without the file, the stage stops and says so; the
configured alternative is an open_clip ViT's patch tokens (an encoder entry, ``output:
tokens``), a departure recorded in config/README.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import string
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from crossmodal.codehash import code_digest, package_root
from crossmodal.encoders.registry import (
    IMAGE_FEATURE_OUTPUTS,
    ImageFeatureEncoder,
    build_image_feature_encoder,
    with_token_shape,
)
from crossmodal.errors import CrossmodalError
from crossmodal.images import DEFAULT_MAX_PIXELS
from crossmodal.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

DTYPES = ("float32", "float16")
PAIRS_COLUMNS = ("image_id", "path", "text", "split")
TRAIN = "train"
# Unique texts per ``encode`` call: bounds the memory of one call, and the progress bar moves.
TEXT_CHUNK = 4096
# Unicom's ``_transform`` (deepglint/unicom, vision_transformer.py): OpenAI CLIP's statistics.
UNICOM_MEAN = (0.48145466, 0.4578275, 0.40821073)
UNICOM_STD = (0.26862954, 0.26130258, 0.27577711)


class TeacherError(CrossmodalError):
    """Teacher features cannot be computed or do not match what training expects."""


# --- the pairs table ----------------------------------------------------------------------------


def read_train_pairs(pairs: str | Path) -> dict[str, list[str]]:
    """The train rows of pairs.parquet, in file order: ``image_id``, ``path``, ``text``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = pq.read_schema(pairs)
    missing = [c for c in PAIRS_COLUMNS if c not in schema.names]
    if missing:
        raise TeacherError(
            f"{pairs}: columns {missing} missing (has {schema.names}); rebuild it with the "
            "prepare-itr stage"
        )
    table = pq.read_table(pairs, columns=list(PAIRS_COLUMNS))
    mask = pc.fill_null(pc.equal(table["split"], TRAIN), False)
    file_rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    if not len(file_rows):
        splits = sorted(str(s) for s in pc.unique(table["split"]).to_pylist())
        raise TeacherError(f"{pairs}: no {TRAIN!r} rows (splits present: {splits})")
    train = table.filter(mask)
    for column in ("image_id", "path", "text"):
        kind = train.schema.field(column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise TeacherError(f"{pairs}: column {column!r} is {kind}, not string")
        empty = pc.fill_null(pc.equal(pc.utf8_length(train[column]), 0), True)
        bad = file_rows[np.flatnonzero(empty.to_numpy(zero_copy_only=False))]
        if len(bad):
            raise TeacherError(
                f"{pairs}: empty or missing {column!r} in train rows {bad[:10].tolist()} (row "
                "numbers of the file); fix the split files and rebuild pairs.parquet"
            )
    return {c: train[c].to_pylist() for c in ("image_id", "path", "text")}


def unique_train_images(pairs: str | Path) -> tuple[list[str], list[str]]:
    """(image ids, paths) of the training images, each once, in first-appearance order."""
    rows = read_train_pairs(pairs)
    paths: dict[str, str] = {}
    for image_id, path in zip(rows["image_id"], rows["path"], strict=True):
        known = paths.setdefault(image_id, path)
        if known != path:
            raise TeacherError(
                f"{pairs}: train image {image_id!r} has two paths ({known!r}, {path!r}); "
                "one image id must name one file"
            )
    return list(paths), list(paths.values())


def ids_sha256(values: Sequence[str]) -> str:
    """sha256 of the JSON list of ``values`` (compact, UTF-8): the sidecar's ``ids_sha256``,
    image ids for the image teacher, texts for the text teacher."""
    text = json.dumps(list(values), ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- storage ------------------------------------------------------------------------------------


def _check_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise TeacherError(f"teacher dtype {dtype!r}: choose one of {list(DTYPES)}")
    return np.dtype(dtype)


@contextmanager
def npy_rows(out: str | Path, rows: int, dim: int, dtype: str) -> Iterator[np.memmap]:
    """A ``[rows, dim]`` .npy file opened as a writable memory map, moved onto ``out`` only
    when the block completes: the pages go to disk as they are written, not to RAM."""
    np_dtype = _check_dtype(dtype)
    with atomic_path(out) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np_dtype, shape=(rows, dim))
        yield array
        array.flush()
        del array


def _store(
    array: np.memmap, rows: np.ndarray | list[int], values: np.ndarray, names: Callable[[int], str]
) -> None:
    """Write ``values`` into ``rows``; a value the storage type cannot hold (float16 overflow,
    or a NaN from the model) is an error naming the rows, not a silent inf in the soft labels."""
    array[rows] = values
    stored = array[rows]
    if not np.isfinite(stored).all():
        bad = [
            names(int(r)) for r, ok in zip(rows, np.isfinite(stored).all(1), strict=True) if not ok
        ]
        raise TeacherError(
            f"teacher features of {bad[:5]} are not finite as {array.dtype} (largest magnitude "
            f"{float(np.nanmax(np.abs(values))):.4g}); store them as float32"
        )


def open_teacher(
    path: str | Path,
    meta_path: str | Path,
    *,
    expect_rows: int | None = None,
    expect_ids_sha256: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The teacher matrix, memory-mapped read-only, and its sidecar, checked against each other
    and against what the caller expects (rows, and the sha256 of the ids or texts)."""
    meta = read_json(meta_path)
    array = np.load(path, mmap_mode="r")
    found = (list(array.shape), str(array.dtype))
    if found != ([meta["rows"], meta["dim"]], meta["dtype"]):
        raise TeacherError(
            f"{path} holds {found[0]} {found[1]} but {meta_path} says "
            f"{[meta['rows'], meta['dim']]} {meta['dtype']}: rerun the teacher stage"
        )
    if expect_rows is not None and array.shape[0] != expect_rows:
        raise TeacherError(
            f"{path}: {array.shape[0]} rows, training expects {expect_rows}: the teacher was "
            "computed from another pairs.parquet; rerun the teacher stage"
        )
    if expect_ids_sha256 is not None and meta["ids_sha256"] != expect_ids_sha256:
        raise TeacherError(
            f"{path}: its rows were computed for other ids or texts (ids_sha256 "
            f"{meta['ids_sha256'][:12]}..., expected {expect_ids_sha256[:12]}...); rerun the "
            "teacher stage on this pairs.parquet"
        )
    return array, meta


def teacher_file_bytes(path: str | Path) -> int:
    """Bytes the teacher matrix takes on disk (the .npy file; the sidecar is a few KB,
    plus the image ids)."""
    return os.stat(path).st_size


def teacher_npy_bytes(rows: int, dim: int, dtype: str) -> int:
    """Size of a ``[rows, dim]`` teacher .npy file of ``dtype``, header included, without
    writing it: what a data set will need before it is computed."""
    import io

    header = {
        "descr": np.lib.format.dtype_to_descr(_check_dtype(dtype)),
        "fortran_order": False,
        "shape": (rows, dim),
    }
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.tell() + rows * dim * np.dtype(dtype).itemsize


def _provenance(stage: str, teacher: dict[str, Any], source: str | Path) -> dict[str, Any]:
    from crossmodal import __version__

    return {
        "stage": stage,
        "teacher": teacher,
        "code": code_digest(package_root(), __name__),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "source": str(source),
    }


# --- image teacher ------------------------------------------------------------------------------


def _unicom_transform(size: int):
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(size),
            T.Lambda(lambda im: im.convert("RGB")),
            T.ToTensor(),
            T.Normalize(UNICOM_MEAN, UNICOM_STD),
        ]
    )


def _load_module(path: Path, device: torch.device) -> torch.nn.Module:
    """A ``torch.export`` program (``.pt2``), a TorchScript file, or else a fully pickled
    ``nn.Module`` (its classes importable)."""
    if path.suffix == ".pt2":
        try:
            # an exported program runs as exported (it has no train/eval switch)
            return torch.export.load(str(path)).module().to(device)
        except Exception as exc:
            raise TeacherError(
                f"unicom teacher {path}: not a torch.export program ({exc})"
            ) from exc
    if _is_torchscript(path):
        return torch.jit.load(str(path), map_location=device).eval()
    try:
        obj = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:
        raise TeacherError(
            f"unicom teacher {path}: neither TorchScript nor a loadable pickled model ({exc}); "
            "export it as TorchScript (crossmodal.cusa.teachers explains how)"
        ) from exc
    if not isinstance(obj, torch.nn.Module):
        raise TeacherError(
            f"unicom teacher {path} holds a {type(obj).__name__} (a state dict?), not a model: "
            "export the model as TorchScript (crossmodal.cusa.teachers explains how)"
        )
    return obj.eval()


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold the model's code (``*/code/...``); ``torch.save`` ones don't."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def build_unicom_teacher(
    spec: dict[str, Any], device: str = "auto", precision: str = "auto"
) -> ImageFeatureEncoder:
    """Unicom's ``forward_features`` from an exported model file (``path``, ``image_size``)."""
    from crossmodal.encoders import resolve_device

    missing = [k for k in ("path", "image_size") if k not in spec]
    if missing:
        raise TeacherError(f"unicom teacher entry {spec}: keys {missing} missing")
    path = Path(spec["path"])
    if not path.is_file():
        raise TeacherError(
            f"unicom teacher: {path} not found. Export Unicom ViT-B/32's forward_features as "
            "TorchScript to that path (crossmodal.cusa.teachers explains how), or choose the "
            "open_clip image teacher (config/README.md, departures)"
        )
    dev = resolve_device(device)
    if precision == "auto":
        precision = "fp16" if dev.type == "cuda" else "fp32"
    module = _load_module(path, dev)
    features = getattr(module, "forward_features", module)

    def image_fn(pixels: torch.Tensor) -> torch.Tensor:
        return features(pixels)

    def text_fn(texts: list[str]) -> torch.Tensor:
        raise TeacherError("the unicom teacher encodes images only")

    size = int(spec["image_size"])
    encoder = ImageFeatureEncoder(
        image_fn=image_fn,
        text_fn=text_fn,
        preprocess=_unicom_transform(size),
        image_size=size,
        dim=0,
        device=dev,
        spec={**spec, "sha256": _file_sha256(path)},
        precision=precision,
        output="tokens",
    )
    return with_token_shape(encoder)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_image_teacher(
    teacher: dict[str, Any], output: str, device: str = "auto", precision: str = "auto"
) -> ImageFeatureEncoder:
    """The image teacher an entry names: ``unicom`` (tokens from an exported file) or any
    encoder-registry entry with ``output`` ``tokens`` (open_clip/tiny ViTs) or ``pooled``."""
    if teacher.get("backend") == "unicom":
        if output != "tokens":
            raise TeacherError(
                f"unicom teacher: output {output!r}; it gives 'tokens' (forward_features), "
                "what the reference stores"
            )
        return build_unicom_teacher(teacher, device, precision)
    if output not in IMAGE_FEATURE_OUTPUTS:
        raise TeacherError(f"image teacher output {output!r}: choose {list(IMAGE_FEATURE_OUTPUTS)}")
    return build_image_feature_encoder(teacher, output, device, precision)


def _image_loader(encoder: ImageFeatureEncoder, paths, batch_size, workers, max_pixels):
    """Decode workers exactly as image feature extraction uses them, without JPEG draft
    decoding (the reference decodes full images)."""
    from torch.utils.data import DataLoader

    from crossmodal.features import WORKER_CHUNK, _collate, _ImageFiles

    return DataLoader(
        _ImageFiles(paths, encoder.preprocess, None, encoder.pil_transform, max_pixels),
        batch_size=min(batch_size, WORKER_CHUNK),
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=encoder.device.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def extract_image_teacher(
    encoder: ImageFeatureEncoder,
    pairs: str | Path,
    out: str | Path,
    meta: str | Path,
    *,
    batch_size: int,
    workers: int,
    dtype: str,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row per unique training image, in first-appearance order; returns the sidecar.

    Every image must decode: after the first failure nothing more is encoded, the remaining
    images are still read so that the error lists every unreadable one, and no file is left.
    """
    from crossmodal.features import _model_threads, _rebatched

    _check_dtype(dtype)
    ids, paths = unique_train_images(pairs)
    failures: list[str] = []
    progress = tqdm(total=len(paths), desc=f"image teacher {Path(out).stem}", unit="img")

    def account(n_items: int, modes, errors) -> None:
        failures.extend(f"{ids[i]} ({paths[i]}): {reason}" for i, reason in errors)
        progress.update(n_items)

    loader = _image_loader(encoder, paths, batch_size, workers, max_pixels)
    batches = _rebatched(loader, batch_size, account, encoder.device.type == "cuda")
    written = 0
    with npy_rows(out, len(ids), encoder.dim, dtype) as array, progress:
        with _model_threads(encoder, workers):
            for idx, pixels in batches:
                if failures:
                    continue
                _store(array, idx, encoder.encode_pixels(pixels), lambda r: ids[r])
                written += len(idx)
        if failures:
            listed = "\n  ".join(failures[:20])
            more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
            raise TeacherError(
                f"{len(failures)} of {len(ids)} training images could not be read; the teacher "
                f"must cover every one (fix or replace them, then rerun):\n  {listed}{more}"
            )
        if written != len(ids):
            raise TeacherError(f"image teacher: {written} of {len(ids)} rows written")
    sidecar = {
        "kind": "image",
        "rows": len(ids),
        "dim": encoder.dim,
        "dtype": dtype,
        "output": encoder.output,
        "token_shape": list(encoder.token_shape) if encoder.token_shape else None,
        "ids": ids,
        "ids_sha256": ids_sha256(ids),
        "provenance": {
            **(provenance or {}),
            **encoder.provenance(),
            "jpeg_draft": False,
            "max_pixels": max_pixels,
        },
    }
    write_json(meta, sidecar)
    log.info("image teacher: %d images x %d -> %s", len(ids), encoder.dim, out)
    return sidecar


def run_image_teacher(job) -> dict[str, Any]:
    """The ``cusa-image-teacher`` stage (a :class:`crossmodal.stages.CusaImageTeacher` job)."""
    encoder = build_image_teacher(job.teacher, job.output, job.device, job.precision)
    return extract_image_teacher(
        encoder,
        job.pairs,
        job.features,
        job.meta,
        batch_size=job.batch_size,
        workers=job.workers,
        dtype=job.dtype,
        max_pixels=job.max_pixels,
        provenance={
            **_provenance("cusa-image-teacher", job.teacher, job.pairs),
            "output": job.output,
        },
    )


# --- text teacher -------------------------------------------------------------------------------


def load_sentence_transformer(spec: dict[str, Any], device: str = "auto", precision: str = "fp32"):
    """A sentence-transformers model from an entry: ``model`` (hub name or local folder) and
    ``revision`` (a hub commit, or None for a folder / the hub's current one)."""
    from sentence_transformers import SentenceTransformer

    from crossmodal.encoders import resolve_device

    missing = [k for k in ("model", "revision") if k not in spec]
    if missing:
        raise TeacherError(f"text teacher entry {spec}: keys {missing} missing")
    dev = resolve_device(device)
    model = SentenceTransformer(spec["model"], device=str(dev), revision=spec["revision"])
    if precision == "auto":
        precision = "fp16" if dev.type == "cuda" else "fp32"
    if precision == "fp16" and dev.type == "cuda":
        model = model.half()
    return model.eval()


def _unique_in_order(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(each text once, in first-appearance order; for every row, its text's index)."""
    index: dict[str, int] = {}
    inverse = np.fromiter((index.setdefault(t, len(index)) for t in texts), np.int64, len(texts))
    return list(index), inverse


def extract_text_teacher(
    model,
    pairs: str | Path,
    out: str | Path,
    meta: str | Path,
    *,
    batch_size: int,
    dtype: str,
    provenance: dict[str, Any] | None = None,
    chunk: int = TEXT_CHUNK,
) -> dict[str, Any]:
    """One row per train pair of pairs.parquet (its ``text``), each distinct text encoded once
    (``model.encode(..., normalize_embeddings=False)``) and written to every row that has it."""
    _check_dtype(dtype)
    texts = read_train_pairs(pairs)["text"]
    unique, inverse = _unique_in_order(texts)
    dim = int(model.get_embedding_dimension())
    order = np.argsort(inverse, kind="stable")  # rows grouped by their unique text
    bounds = np.searchsorted(inverse[order], np.arange(len(unique) + 1))
    with npy_rows(out, len(texts), dim, dtype) as array:
        for start in tqdm(range(0, len(unique), chunk), desc="text teacher", unit="chunk"):
            stop = min(start + chunk, len(unique))
            emb = model.encode(
                unique[start:stop],
                batch_size=batch_size,
                normalize_embeddings=False,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            emb = np.asarray(emb, dtype=np.float32)
            if emb.shape != (stop - start, dim):
                raise TeacherError(f"text teacher returned {emb.shape}, not {(stop - start, dim)}")
            rows = order[bounds[start] : bounds[stop]]
            _store(array, rows, emb[inverse[rows] - start], lambda r: texts[r])
    sidecar = {
        "kind": "text",
        "rows": len(texts),
        "dim": dim,
        "dtype": dtype,
        "unique_texts": len(unique),
        "ids_sha256": ids_sha256(texts),
        "provenance": {**(provenance or {}), "normalize_embeddings": False},
    }
    write_json(meta, sidecar)
    log.info("text teacher: %d rows (%d distinct) x %d -> %s", len(texts), len(unique), dim, out)
    return sidecar


def run_text_teacher(job) -> dict[str, Any]:
    """The ``cusa-text-teacher`` stage (a :class:`crossmodal.stages.CusaTextTeacher` job)."""
    model = load_sentence_transformer(job.teacher, job.device, job.precision)
    return extract_text_teacher(
        model,
        job.pairs,
        job.features,
        job.meta,
        batch_size=job.batch_size,
        dtype=job.dtype,
        provenance={
            **_provenance("cusa-text-teacher", job.teacher, job.pairs),
            "device": str(model.device),
            "precision": str(next(model.parameters()).dtype),
        },
    )


# --- a tiny sentence transformer (tests, the demo) ----------------------------------------------

# Whole words of the demo world's captions, on top of single characters (any lower-case ASCII
# text tokenizes: a word not listed splits into characters).
_TINY_WORDS = (
    "a an the of on in with and is are to at by its next left right above below near small "
    "large big tiny red green blue yellow orange purple white black grey gray brown pink circle "
    "square triangle star shape shapes picture image photo background there two three one"
)


def _wordpiece_vocab() -> dict[str, int]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["##" + c for c in string.ascii_lowercase + string.digits]
    words = [w for w in dict.fromkeys(_TINY_WORDS.split()) if w not in chars]
    return {token: i for i, token in enumerate(specials + chars + pieces + words)}


def build_tiny_sentence_transformer(folder: str | Path, seed: int = 0) -> Path:
    """Write a random-weight sentence-transformers model (2-layer BERT, width 32, mean pooling,
    a WordPiece vocabulary made here) to ``folder``; ``SentenceTransformer(folder)`` loads it
    offline. Its embeddings are noise: it proves plumbing, like the tiny VLMs."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizer

    folder = Path(folder)
    vocab = _wordpiece_vocab()
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=64)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        bert = BertModel(config).eval()  # with its (unused) pooler, so loading finds every weight
    finally:
        torch.random.set_rng_state(state)
    with tempfile.TemporaryDirectory() as staging:
        bert.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        transformer = Transformer(staging, max_seq_length=64)
        pooling = Pooling(transformer.get_embedding_dimension(), "mean")
        SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder))
    return folder


def run_make_tiny_st(job) -> Path:
    """The ``make-tiny-st`` stage (a :class:`crossmodal.stages.MakeTinySt` job)."""
    return build_tiny_sentence_transformer(Path(job.modules).parent, seed=job.seed)


@dataclass(frozen=True)
class TeacherSize:
    """Bytes of one teacher matrix on disk at each storage type."""

    rows: int
    dim: int
    float32: int
    float16: int


def teacher_sizes(rows: int, dim: int) -> TeacherSize:
    """What a ``[rows, dim]`` teacher takes at float32 and at float16 (.npy, header included)."""
    return TeacherSize(
        rows, dim, teacher_npy_bytes(rows, dim, "float32"), teacher_npy_bytes(rows, dim, "float16")
    )
