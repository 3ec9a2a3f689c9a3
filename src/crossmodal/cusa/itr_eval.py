"""Image-text retrieval recall over plain files: the ``itr-eval`` command.

Inputs: ``S`` (images x texts similarity, ``.npy``), the image id of each row (JSON list) and
the image id of each text column (JSON list). Output: R@1/5/10 image->text and text->image,
in percent and unrounded, and ``rsum``, their sum.

Reference: lerogo/aaai24_itr_cusa at 58e8721, evaluation.py:58-104 (``itm_eval``), which is
the usual ALBEF/UNITER evaluator:

* i2t (evaluation.py:60-75): each image row is sorted with ``np.argsort(score)[::-1]``; its rank
  is the best (smallest, 0-based) position among the columns of its own captions; R@K is
  ``100.0 * count(rank < K) / n_images``.
* t2i (evaluation.py:77-87): each text's row of ``S.T`` (retrieval.py calls it with
  ``score_matrix_t2i = score_matrix_i2t.t()``, evaluation.py:40-43 with
  unire/model.py:175-176) is sorted the same way; the rank is the position of its own image.
* Which image a text belongs to, and which texts an image owns, come from ``txt2img`` /
  ``img2txt`` built by the dataset (dataset/cross_coco_dataset.py:87-108); here they are built
  from the two id lists, so any ordering of rows and columns works.

Ties, explicitly. ``np.argsort`` with its default ``kind="quicksort"`` makes no promise about the
order of equal scores: in NumPy it is an introsort (insertion sort only below 17 elements) or, in
NumPy >= 1.25 on CPUs with AVX-512/AVX2, a SIMD sort. On this machine (NumPy 2.4) the default
order of ties differs from a stable sort already for 6 elements, so the reference's result on a
tie depends on the NumPy build and the CPU. This module fixes the rule that the reference's
expression gives with a stable sort, ``np.argsort(score, kind="stable")[::-1]``: scores in
descending order and, among equal scores, the *later* column (or row, for t2i) first, because
the reversal turns the stable ascending index order around. The 0-based rank of candidate ``j``
in a row is therefore ``#{k: s_k > s_j} + #{k > j: s_k == s_j}``. With real-valued similarities
ties are rare; when a ground-truth score ties with a candidate of another image, a warning says
how many pairs that concerns, since another tie rule could move them.

Departures, and why:

1. Unrounded percentages (the reference rounds to two decimals) and ``rsum`` (the sum of the six
   recalls, as papers report it) instead of the reference's ``*_r_mean`` averages.
2. A fixed tie rule (above) instead of one that varies with the NumPy build.
3. Inputs are checked before anything is computed; the reference trusts them. A shape mismatch,
   a text whose image is not a row, an image without any text (its i2t rank would be the
   reference's sentinel 1e20, a silent miss), duplicate row ids, ids that are not strings or
   integers, and non-finite scores (NaN makes argsort's order meaningless) are each an error
   that names the file and the problem.
4. Ranks are computed by counting, in chunks, not by a full sort of every row: the same ranks
   (same rule), without an O(n log n) sort per query and without holding sorted copies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal import stages
from crossmodal.errors import DataFormatError
from crossmodal.io import read_json, write_json

log = logging.getLogger(__name__)

RECALL_AT = (1, 5, 10)
KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
CHUNK_ELEMENTS = 1 << 22  # comparisons held in memory at once (a few tens of MB)


@dataclass(frozen=True)
class Ranks:
    """0-based ranks: of each image's best caption (i2t) and of each text's image (t2i)."""

    i2t: np.ndarray  # [n_images]
    t2i: np.ndarray  # [n_texts]
    tied_i2t: int  # (image, own caption) scores equal to a score of another image's caption
    tied_t2i: int  # (text, own image) scores equal to the text's score with another image


# --- inputs -------------------------------------------------------------------------------------


def _check_ids(ids: Any, path: Path, what: str) -> list[str | int]:
    if not isinstance(ids, list) or not ids:
        raise DataFormatError(f"{path}: expected a non-empty JSON list of {what}")
    for pos, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise DataFormatError(
                f"{path}: entry {pos} is {value!r}; image ids must be strings or integers"
            )
    return ids


def load_scores(path: Path) -> np.ndarray:
    """The similarity matrix, as stored (its dtype is kept: ties stay exactly as they are)."""
    try:
        scores = np.load(path, allow_pickle=False)
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path}: file not found") from exc
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy array ({exc})") from exc
    if not isinstance(scores, np.ndarray):
        raise DataFormatError(f"{path}: expected one .npy array, found a {type(scores).__name__}")
    if scores.ndim != 2:
        raise DataFormatError(
            f"{path}: expected a 2-D images x texts matrix, got shape {scores.shape}"
        )
    if not (np.issubdtype(scores.dtype, np.floating) or np.issubdtype(scores.dtype, np.integer)):
        raise DataFormatError(f"{path}: scores must be real numbers, got dtype {scores.dtype}")
    return scores


def text_rows(
    scores: np.ndarray,
    img_ids: Sequence[str | int],
    txt_img: Sequence[str | int],
    files: tuple[Path | str, Path | str, Path | str] = ("scores", "img_ids", "txt_img"),
) -> np.ndarray:
    """Check the inputs against each other; return the row of each text's image."""
    scores_file, img_file, txt_file = files
    if scores.shape != (len(img_ids), len(txt_img)):
        raise DataFormatError(
            f"{scores_file}: shape {scores.shape} does not match {len(img_ids)} image ids "
            f"({img_file}) x {len(txt_img)} texts ({txt_file}); rows are images, columns texts"
        )
    row_of: dict[str | int, int] = {}
    for row, image_id in enumerate(img_ids):
        if image_id in row_of:
            raise DataFormatError(
                f"{img_file}: image id {image_id!r} is on rows {row_of[image_id]} and {row}; "
                "each row must be a different image"
            )
        row_of[image_id] = row
    unknown = [(t, i) for t, i in enumerate(txt_img) if i not in row_of]
    if unknown:
        shown = ", ".join(f"text {t} -> {i!r}" for t, i in unknown[:5])
        raise DataFormatError(
            f"{txt_file}: {len(unknown)} texts name an image that is not a row of {img_file} "
            f"({shown}); ids must match exactly, including string vs integer"
        )
    rows = np.fromiter((row_of[i] for i in txt_img), dtype=np.int64, count=len(txt_img))
    captions = np.bincount(rows, minlength=len(img_ids))
    if (captions == 0).any():
        missing = [img_ids[r] for r in np.flatnonzero(captions == 0)[:5]]
        raise DataFormatError(
            f"{txt_file}: {int((captions == 0).sum())} images of {img_file} have no text "
            f"(e.g. {missing}); their image->text recall is undefined: drop their rows from "
            f"{scores_file} and {img_file}, or add their captions"
        )
    finite = np.isfinite(scores)
    if not finite.all():
        r, c = np.argwhere(~finite)[0]
        raise DataFormatError(
            f"{scores_file}: {int((~finite).sum())} scores are not finite (first at row {r}, "
            f"column {c}: {scores[r, c]}); rankings are undefined, recompute the similarities"
        )
    return rows


# --- ranks --------------------------------------------------------------------------------------


def _rank_within(
    candidates: np.ndarray, truth_pos: np.ndarray, owner: np.ndarray, truth_owner: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``candidates``: the 0-based rank of the entry at ``truth_pos`` under the
    stable-argsort-reversed rule, and whether it ties with a candidate of another image
    (``owner``: the image of each candidate; a tie between two captions of one image cannot
    change that image's rank)."""
    n_rows, n_cols = candidates.shape
    truth = candidates[np.arange(n_rows), truth_pos][:, None]
    equal = candidates == truth
    later = np.arange(n_cols)[None, :] > truth_pos[:, None]
    rank = (candidates > truth).sum(1) + (equal & later).sum(1)
    tied = (equal & (owner[None, :] != truth_owner[:, None])).any(1)
    return rank, tied


def ranks(scores: np.ndarray, rows: np.ndarray) -> Ranks:
    """i2t and t2i ranks of a similarity matrix whose text ``t`` belongs to row ``rows[t]``."""
    n_images, n_texts = scores.shape
    caption_rank = np.empty(n_texts, dtype=np.int64)
    t2i = np.empty(n_texts, dtype=np.int64)
    tied_i2t = tied_t2i = 0
    image_rows = np.arange(n_images)
    chunk = max(1, CHUNK_ELEMENTS // max(n_images, n_texts))
    for start in range(0, n_texts, chunk):
        texts = np.arange(start, min(start + chunk, n_texts))
        # i2t: the caption's position in its image's row (the image's row, once per caption)
        rank, tied = _rank_within(scores[rows[texts]], texts, rows, rows[texts])
        caption_rank[texts], tied_i2t = rank, tied_i2t + int(tied.sum())
        # t2i: the image's position in the text's column
        rank, tied = _rank_within(scores[:, texts].T, rows[texts], image_rows, rows[texts])
        t2i[texts], tied_t2i = rank, tied_t2i + int(tied.sum())
    i2t = np.full(n_images, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(i2t, rows, caption_rank)  # an image's rank: its best caption's
    return Ranks(i2t=i2t, t2i=t2i, tied_i2t=tied_i2t, tied_t2i=tied_t2i)


def recalls(r: Ranks) -> dict[str, float]:
    """R@K in percent with the reference's arithmetic (``100.0 * hits / n``), and their sum."""
    result: dict[str, float] = {}
    for direction, values in (("i2t", r.i2t), ("t2i", r.t2i)):
        for k in RECALL_AT:
            result[f"{direction}_r{k}"] = 100.0 * int((values < k).sum()) / len(values)
    result["rsum"] = sum(result[k] for k in KEYS[:-1])
    return result


def evaluate(
    scores: np.ndarray,
    img_ids: Sequence[str | int],
    txt_img: Sequence[str | int],
    files: tuple[Path | str, Path | str, Path | str] = ("scores", "img_ids", "txt_img"),
) -> dict[str, float]:
    """Check the inputs, rank, and return the seven metrics."""
    rows = text_rows(scores, img_ids, txt_img, files)
    r = ranks(scores, rows)
    if r.tied_i2t or r.tied_t2i:
        log.warning(
            "%d image->text and %d text->image ground-truth scores tie with another image's; "
            "ties rank the later column (row) first, as a stable argsort reversed",
            r.tied_i2t,
            r.tied_t2i,
        )
    return recalls(r)


def run_itr_eval(job: stages.ItrEval) -> dict[str, float]:
    """The ``itr-eval`` command: read the three files, write the metrics JSON."""
    img_ids = _check_ids(read_json(job.img_ids), job.img_ids, "image ids, one per row")
    txt_img = _check_ids(read_json(job.txt_img), job.txt_img, "image ids, one per text")
    scores = load_scores(job.scores)
    result = evaluate(scores, img_ids, txt_img, (job.scores, job.img_ids, job.txt_img))
    write_json(job.out, result)
    log.info(
        "%d images, %d texts: i2t R@1 %.2f, t2i R@1 %.2f, rsum %.2f",
        len(img_ids),
        len(txt_img),
        result["i2t_r1"],
        result["t2i_r1"],
        result["rsum"],
    )
    return result
