"""From embeddings to class vectors, image vectors and top-1 accuracy, vectorised.

Text side (``helper.py:336-354``), for class ``c`` with normalised text embeddings ``t_j``:

- every baseline: ``z_c = normalize(mean_j t_j)`` (:func:`mean_class_vectors`);
- WCA: ``v_j = softmax_j(e^text_scale * cos(t_j, l_c))`` with ``l_c`` the embedding of
  ``"a photo of a {c}."``, ``z_c = normalize(sum_j v_j t_j)`` (:func:`weighted_class_vectors`).

Image side (``main.py:146-166``): per run, ``n_sampled`` crop indices drawn with replacement,
the same for every image; ``w_i = softmax_i(e^image_scale * cos(k_i, f))`` over the drawn crops
``k_i`` of an image with full view ``f``; ``u = normalize(sum_i w_i k_i)``; the prediction is
``argmax_c u . z_c``. Baselines score the full view alone (``main.py:138``).

``image_scale`` and ``text_scale`` are the exponents of the reference configs
(``cfgs/*.yaml``: 4.0 and 2.0), used as ``e^value`` (``main.py:113-122``); they are not
CLIP's logit scale (``e^4.6052 = 100``). Accuracy is in percent (``helper.py:447-458``); runs are
summarised by their mean and population standard deviation (``np.std``, ``main.py:169-170``).

Drawing indices with replacement means a crop drawn twice weighs twice: the softmax over the
drawn list equals a softmax over all crops with ``log(count)`` added to each logit, which is how
:func:`wca_image_vectors` computes every run with one batched matrix product. The image side
runs in torch on the stage's device (a GPU when there is one), chunk by chunk over images.

Departures: the reference draws run indices with torch's global generator after the model
and data loading consumed it (``main.py:151``); here a NumPy generator seeded by the ``seed``
setting draws them. Weights are computed in float32 from the stored features (the reference
works in the fp16 of its GPU features).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from crossmodal.errors import CrossmodalError

# Image rows per chunk while scoring: bounds the float32 copy of the views and the
# runs x rows x classes logits.
SCORE_CHUNK = 512


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise the last axis (a zero vector stays zero)."""
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _segments(counts: np.ndarray, n_texts: int) -> np.ndarray:
    """Start offsets of consecutive per-class segments, checking the counts."""
    counts = np.asarray(counts, dtype=np.int64)
    if counts.ndim != 1 or (counts < 1).any():
        raise CrossmodalError("every class needs at least one text")
    if counts.sum() != n_texts:
        raise CrossmodalError(f"per-class counts add up to {counts.sum()}, not {n_texts} texts")
    return np.concatenate([[0], np.cumsum(counts)[:-1]])


def mean_class_vectors(texts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[C, d]``: the normalised mean of each class's normalised text embeddings.

    ``texts`` holds the classes' embeddings one class after another, ``counts[c]`` of class c
    (``helper.py:352-353``: mean, then normalise)."""
    starts = _segments(counts, len(texts))
    sums = np.add.reduceat(texts.astype(np.float32), starts, axis=0)
    return normalize(sums / np.asarray(counts, dtype=np.float32)[:, None])


def text_weights(
    texts: np.ndarray, counts: np.ndarray, labels: np.ndarray, text_scale: float
) -> np.ndarray:
    """``[T]``: each text's softmax weight within its class, ``softmax_j(e^s * t_j . l_c)``
    (``helper.py:347-348``)."""
    starts = _segments(counts, len(texts))
    owner = np.repeat(np.arange(len(counts)), counts)
    logits = np.exp(text_scale) * np.einsum("td,td->t", texts, labels[owner])
    logits = logits - np.maximum.reduceat(logits, starts)[owner]
    e = np.exp(logits)
    return e / np.add.reduceat(e, starts)[owner]


def weighted_class_vectors(
    texts: np.ndarray, counts: np.ndarray, labels: np.ndarray, text_scale: float
) -> np.ndarray:
    """``[C, d]``: WCA's class vectors, ``normalize(sum_j v_j t_j)`` (``helper.py:346-350``).

    ``labels[c]`` is the normalised embedding of ``"a photo of a {c}."``."""
    if labels.shape != (len(counts), texts.shape[1]):
        raise CrossmodalError(f"{labels.shape[0]} label embeddings for {len(counts)} classes")
    v = text_weights(texts, counts, labels, text_scale)
    starts = _segments(counts, len(texts))
    return normalize(np.add.reduceat(texts * v[:, None], starts, axis=0))


def draw_crop_indices(seed: int, n_runs: int, n_crops: int, n_sampled: int) -> np.ndarray:
    """``[n_runs, n_sampled]`` crop indices in ``[0, n_crops)``, with replacement, one row per
    run, shared by every image (``main.py:151``)."""
    if n_runs < 1 or n_sampled < 1 or n_crops < 1:
        raise CrossmodalError(
            f"n_runs ({n_runs}), n_sampled ({n_sampled}) and n_crops ({n_crops}) must be >= 1"
        )
    return np.random.default_rng(seed).integers(0, n_crops, size=(n_runs, n_sampled))


def index_counts(indices: np.ndarray, n_crops: int) -> np.ndarray:
    """``[n_runs, n_crops]``: how often each crop was drawn in each run."""
    counts = np.zeros((len(indices), n_crops), dtype=np.float32)
    for run, idx in enumerate(indices):
        counts[run] = np.bincount(idx, minlength=n_crops)
    return counts


def _wca_vectors(views: torch.Tensor, log_counts: torch.Tensor, image_scale: float) -> torch.Tensor:
    """Torch core of :func:`wca_image_vectors`: float32 views ``[n, 1 + M, d]`` and
    ``log(counts)`` ``[R, M]`` on one device -> normalised ``[R, n, d]``."""
    full, crops = views[:, 0], views[:, 1:]
    cos = torch.matmul(crops, full.unsqueeze(-1)).squeeze(-1)  # [n, M]
    logits = math.exp(image_scale) * cos.unsqueeze(0) + log_counts.unsqueeze(1)  # [R, n, M]
    w = torch.softmax(logits, dim=-1)  # a crop not drawn has logit -inf: weight 0
    u = torch.matmul(w.transpose(0, 1), crops)  # [n, R, M] @ [n, M, d] -> [n, R, d]
    return torch.nn.functional.normalize(u.transpose(0, 1), dim=-1, eps=1e-12)


def wca_image_vectors(
    views: np.ndarray, counts: np.ndarray, image_scale: float, device: str = "cpu"
) -> np.ndarray:
    """``[n_runs, n, d]``: WCA's image vectors ``normalize(sum_i w_i k_i)`` for every run.

    ``views``: ``[n, 1 + M, d]`` (full view, then M crops, normalised). ``counts``:
    ``[n_runs, M]`` draws per crop. The crop weights are the softmax of
    ``e^image_scale * cos(crop, full)`` over the drawn crops, a crop drawn twice counted twice
    (``main.py:151-161``)."""
    dev = torch.device(device)
    u = _wca_vectors(_float32(views, dev), _log_counts(counts, dev), image_scale)
    return u.cpu().numpy()


def _float32(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A chunk of (memory-mapped, float16 or float32) features as float32 on ``device``: read
    into memory in its stored type (a read-only memmap cannot back a tensor), cast there
    (NumPy's float16 conversion is several times slower than torch's)."""
    return torch.from_numpy(np.array(array, order="C")).to(device).float()


def _log_counts(counts: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.asarray(counts, dtype=np.float32)).to(device).log()


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent (``helper.py:447-458``; ties go to the first class)."""
    return float((logits.argmax(axis=-1) == labels).mean() * 100.0)


@torch.inference_mode()
def wca_accuracies(
    views: np.ndarray,
    labels: np.ndarray,
    class_vectors: np.ndarray,
    indices: np.ndarray,
    image_scale: float,
    chunk: int = SCORE_CHUNK,
    device: str = "cpu",
) -> list[float]:
    """Top-1 accuracy of every run (a row of ``indices``), streaming over image chunks.

    Per chunk, every run's image vectors come from one batched matrix product and its class
    scores from one more (runs x images stacked), on ``device``."""
    dev = torch.device(device)
    n_runs, n_crops = len(indices), views.shape[1] - 1
    log_counts = _log_counts(index_counts(indices, n_crops), dev)
    z = torch.from_numpy(np.asarray(class_vectors, dtype=np.float32)).to(dev)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(dev)
    correct = torch.zeros(n_runs, dtype=torch.int64, device=dev)
    for start in range(0, len(views), chunk):
        u = _wca_vectors(_float32(views[start : start + chunk], dev), log_counts, image_scale)
        pred = (u.reshape(-1, u.shape[-1]) @ z.T).argmax(-1).view(n_runs, -1)  # [R, n]
        correct += (pred == y[start : start + chunk].unsqueeze(0)).sum(dim=1)
    return [float(c / len(views) * 100.0) for c in correct.cpu().tolist()]


@torch.inference_mode()
def full_view_accuracy(
    views: np.ndarray,
    labels: np.ndarray,
    class_vectors: np.ndarray,
    chunk: int = SCORE_CHUNK,
    device: str = "cpu",
) -> float:
    """Top-1 accuracy of the full views alone (every baseline, ``main.py:138-141``)."""
    dev = torch.device(device)
    z = torch.from_numpy(np.asarray(class_vectors, dtype=np.float32)).to(dev)
    correct = 0
    for start in range(0, len(views), chunk):
        full = _float32(views[start : start + chunk, 0], dev)
        pred = (full @ z.T).argmax(-1).cpu().numpy()
        correct += int((pred == labels[start : start + chunk]).sum())
    return correct / len(views) * 100.0


def mean_std(runs: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (``np.std``, ddof 0: ``main.py:169-170``)."""
    return float(np.mean(runs)), float(np.std(runs))
