"""Dialogue retrieval metrics against brute force, with ties and excluded dialogues."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crossmodal import stages
from crossmodal.dialog.metrics import metrics, ranks
from crossmodal.errors import DataFormatError
from crossmodal.io import read_json


def brute_force_rank(row: np.ndarray, t: int) -> int:
    """Sort the candidates by score, descending; the true photo goes after its equals."""
    order = sorted(range(len(row)), key=lambda j: (-row[j], j == t))
    return order.index(t)


def test_ranks_match_brute_force_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(60, 40)).astype(np.float32)  # ties everywhere
    truth = rng.integers(0, 40, size=60)
    r, tied = ranks(scores, truth)
    expected = [brute_force_rank(scores[i], int(truth[i])) for i in range(60)]
    assert r.tolist() == expected
    assert tied == sum(int((scores[i] == scores[i, truth[i]]).sum() > 1) for i in range(60))


def test_recall_and_hit_by_hand_with_a_tie_and_an_exclusion():
    # 3 dialogues, 4 candidates; row 1's photo ties with another candidate at the top
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # photo a: rank 0
            [0.5, 0.5, 0.1, 0.0],  # photo b ties with a: rank 1 (a tie never helps)
            [0.9, 0.8, 0.7, 0.1],  # photo d: rank 3
        ]
    )
    out = metrics(scores, ["a", "b", "c", "d"], ["a", "b", "d"], {"9": "dead link"}, (1, 2), 3)
    assert out["r1"] == pytest.approx(1 / 3)
    assert out["r2"] == pytest.approx(2 / 3)
    assert out["hit3"] == pytest.approx(2 / 3)
    assert (out["n_evaluated"], out["n_excluded"], out["n_total"]) == (3, 1, 4)
    assert out["excluded"] == {"9": "dead link"} and out["tied_truths"] == 1
    # with every score equal, nothing is found before k = n
    flat = metrics(np.zeros((2, 3)), ["a", "b", "c"], ["a", "c"], {}, (1, 2), 3)
    assert (flat["r1"], flat["r2"], flat["hit3"]) == (0.0, 0.0, 1.0)


def test_inputs_that_do_not_match_are_errors():
    with pytest.raises(DataFormatError, match="not candidates"):
        metrics(np.zeros((1, 2)), ["a", "b"], ["z"], {})
    with pytest.raises(DataFormatError, match="does not match"):
        metrics(np.zeros((2, 2)), ["a", "b"], ["a"], {})
    with pytest.raises(DataFormatError, match="candidate 0 and 1"):
        metrics(np.zeros((1, 2)), ["a", "a"], ["a"], {})


def test_cli_job_over_plain_files(tmp_path):
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(20, 35)).astype(np.float32)
    ids = [f"p{j}" for j in range(35)]
    truth_cols = rng.permutation(35)[:20]
    np.save(tmp_path / "s.npy", scores)
    (tmp_path / "c.json").write_text(json.dumps(ids))
    (tmp_path / "t.json").write_text(json.dumps([ids[j] for j in truth_cols]))
    (tmp_path / "x.json").write_text(json.dumps({"5": "photo p99 unavailable: HTTP 404"}))
    job = stages.DialogEval(
        scores=tmp_path / "s.npy",
        candidate_ids=tmp_path / "c.json",
        truth=tmp_path / "t.json",
        excluded=tmp_path / "x.json",
        out=tmp_path / "m.json",
        ks=[1, 5, 10],
        hit_k=30,
    )
    job.run()
    out = read_json(tmp_path / "m.json")
    ranks_bf = [brute_force_rank(scores[i], int(truth_cols[i])) for i in range(20)]
    for k in (1, 5, 10):
        assert out[f"r{k}"] == pytest.approx(np.mean([r < k for r in ranks_bf]))
    assert out["hit30"] == pytest.approx(np.mean([r < 30 for r in ranks_bf]))
    assert out["n_excluded"] == 1 and "1 excluded" in out["denominator"]
