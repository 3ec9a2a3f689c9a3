"""Dialogue-to-photo retrieval metrics over plain files: the ``dialog-eval`` command.

Inputs: ``scores.npy`` (dialogues x candidate photos, higher is better), the photo id of each
column (JSON list), the photo id of each row's dialogue (JSON list) and the dialogues left out
(JSON object ``dialogue_id -> reason``, e.g. their photo link is dead). Output: R@1/5/10 and
hit@30 as fractions in [0, 1], with their denominator spelled out.

PhotoChat (Zang et al., ACL 2021) ranks the test split's photos for each test dialogue and
reports R@1/5/10: the share of dialogues whose own photo is among the first k. hit@30 (the
course solution's metric) is the same count at k = 30; with one relevant photo per dialogue,
recall@k and hit@k coincide.

Tie rule, fixed and order-free: a tie never helps. The 0-based rank of a dialogue's photo is the
number of *other* candidates scoring at least as high, ``#{j != t: s_j >= s_t}``: the photo is
placed after every candidate it ties with, whatever the column order (a model that scores every
photo alike gets recall 0 at k < n, not a lucky column-order hit). How many ground-truth scores
tie with another candidate is reported (``tied_truths``), since another rule would move them.

Denominator: every dialogue whose photo could be had. The dialogues left out (their photo is
dead, so they cannot be scored at all) are counted and listed beside the metrics
(``n_excluded``, ``excluded``), and ``n_total`` = evaluated + excluded, so a reader can rescale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.cusa.itr_eval import load_scores
from crossmodal.errors import DataFormatError
from crossmodal.io import read_json, write_json

log = logging.getLogger(__name__)

TIE_RULE = "pessimistic: the true photo ranks after every candidate with an equal score"
CHUNK_ELEMENTS = 1 << 22


def truth_columns(
    scores: np.ndarray,
    candidate_ids: Sequence[str],
    truth: Sequence[str],
    files: tuple[Any, Any, Any] = ("scores", "candidate_ids", "truth"),
) -> np.ndarray:
    """The column of each row's photo, after checking the three inputs against each other."""
    scores_file, cand_file, truth_file = files
    if scores.shape != (len(truth), len(candidate_ids)):
        raise DataFormatError(
            f"{scores_file}: shape {scores.shape} does not match {len(truth)} dialogues "
            f"({truth_file}) x {len(candidate_ids)} candidates ({cand_file})"
        )
    column: dict[str, int] = {}
    for j, photo in enumerate(candidate_ids):
        if photo in column:
            raise DataFormatError(
                f"{cand_file}: photo {photo!r} is candidate {column[photo]} and {j}"
            )
        column[photo] = j
    missing = [(i, p) for i, p in enumerate(truth) if p not in column]
    if missing:
        raise DataFormatError(
            f"{truth_file}: {len(missing)} dialogues' photos are not candidates (e.g. row "
            f"{missing[0][0]} -> {missing[0][1]!r}); leave such dialogues out and list them in "
            "the excluded file"
        )
    if not np.isfinite(scores).all():
        raise DataFormatError(f"{scores_file}: scores that are not finite; recompute them")
    return np.fromiter((column[p] for p in truth), dtype=np.int64, count=len(truth))


def ranks(scores: np.ndarray, truth_col: np.ndarray) -> tuple[np.ndarray, int]:
    """0-based rank of each row's true photo under the pessimistic tie rule, and how many
    true scores tie with another candidate."""
    n, m = scores.shape
    out = np.empty(n, dtype=np.int64)
    tied = 0
    chunk = max(1, CHUNK_ELEMENTS // max(m, 1))
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        block = scores[rows]
        true = block[np.arange(len(rows)), truth_col[rows]][:, None]
        out[rows] = (block >= true).sum(1) - 1  # minus the photo itself
        tied += int(((block == true).sum(1) > 1).sum())
    return out, tied


def metrics(
    scores: np.ndarray,
    candidate_ids: Sequence[str],
    truth: Sequence[str],
    excluded: dict[str, str],
    ks: Sequence[int] = (1, 5, 10),
    hit_k: int = 30,
    files: tuple[Any, Any, Any] = ("scores", "candidate_ids", "truth"),
) -> dict[str, Any]:
    """R@k for each k, hit@hit_k, and the denominator: evaluated, excluded (listed), total."""
    if not len(truth):
        raise DataFormatError(f"{files[2]}: no dialogue to evaluate (all excluded?)")
    r, tied = ranks(scores, truth_columns(scores, candidate_ids, truth, files))
    result: dict[str, Any] = {f"r{k}": float((r < k).mean()) for k in ks}
    result[f"hit{hit_k}"] = float((r < hit_k).mean())
    result.update(
        n_evaluated=len(truth),
        n_excluded=len(excluded),
        n_total=len(truth) + len(excluded),
        n_candidates=len(candidate_ids),
        excluded=dict(sorted(excluded.items())),
        tied_truths=tied,
        tie_rule=TIE_RULE,
        denominator=(
            f"{len(truth)} dialogues with an available photo; {len(excluded)} excluded "
            "(listed in 'excluded') are not counted"
        ),
    )
    if tied:
        log.warning("%d true photos tie with another candidate (ranked after them)", tied)
    return result


def run_dialog_eval(job) -> dict[str, Any]:
    """The ``dialog-eval`` command: read the four files, write the metrics JSON."""
    candidates = read_json(job.candidate_ids)
    truth = read_json(job.truth)
    excluded = read_json(job.excluded)
    for path, value, kind in ((job.candidate_ids, candidates, list), (job.truth, truth, list)):
        if not isinstance(value, kind) or not all(isinstance(v, str) for v in value):
            raise DataFormatError(f"{path}: expected a JSON list of photo ids (strings)")
    if not isinstance(excluded, dict):
        raise DataFormatError(f"{job.excluded}: expected a JSON object dialogue_id -> reason")
    scores = load_scores(Path(job.scores))
    files = (job.scores, job.candidate_ids, job.truth)
    result = metrics(scores, candidates, truth, excluded, job.ks, job.hit_k, files)
    write_json(job.out, result)
    log.info(
        "%d dialogues (%d excluded), %d candidates: R@1 %.4f R@10 %.4f hit@%d %.4f",
        result["n_evaluated"],
        result["n_excluded"],
        result["n_candidates"],
        result["r1"],
        result.get("r10", float("nan")),
        job.hit_k,
        result[f"hit{job.hit_k}"],
    )
    return result
