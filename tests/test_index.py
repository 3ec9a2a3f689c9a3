"""FAISS indexes: exact search equals numpy, exclusion is honoured, approximate kinds recall."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossmodal.cli import main
from crossmodal.features import embeddings_to_array
from crossmodal.index import IndexParams, build_index, load_index, search


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_search_equals_numpy_argmax():
    rng = np.random.default_rng(1)
    x, q = unit(rng, 2000, 48), unit(rng, 64, 48)
    ids = rng.permutation(10_000)[:2000].astype(np.int64)
    got_ids, got_scores = search(build_index(x, ids, IndexParams("flat")), q, k=5)
    sims = q @ x.T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(got_ids[:, 0], ids[sims.argmax(axis=1)])
    np.testing.assert_array_equal(got_ids, ids[order])
    np.testing.assert_allclose(got_scores, np.take_along_axis(sims, order, 1), rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 8), n_ex=st.integers(0, 30))
def test_exclusion_never_returns_an_excluded_id(seed, k, n_ex):
    rng = np.random.default_rng(seed)
    x, q = unit(rng, 60, 8), unit(rng, 6, 8)
    ids = np.arange(60, dtype=np.int64) * 10
    index = build_index(x, ids, IndexParams("flat"))
    # exclude exactly the best candidates, the hardest case for an over-fetching search
    best = np.argsort(-(q @ x.T), axis=1)[:, :n_ex]
    exclude = [ids[b].tolist() for b in best]
    got, _ = search(index, q, k, exclude)
    for row, ex in zip(got, exclude, strict=True):
        assert not set(row.tolist()) & set(ex)
        valid = row[row >= 0]
        assert len(valid) == min(k, 60 - len(ex))  # still fills k when enough remain
    # and the result equals brute force over the remaining ids
    sims = q @ x.T
    for r in range(len(q)):
        allowed = [i for i in range(60) if ids[i] not in exclude[r]]
        expect = ids[sorted(allowed, key=lambda i: -sims[r, i])[:k]]
        np.testing.assert_array_equal(got[r, : len(expect)], expect)


def test_too_few_candidates_pads_with_minus_one():
    rng = np.random.default_rng(0)
    x = unit(rng, 3, 4)
    got, scores = search(build_index(x, np.array([5, 6, 7]), IndexParams()), x[:1], 3, [[5, 6]])
    assert got[0].tolist() == [7, -1, -1] and np.isneginf(scores[0, 1:]).all()


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_recall_and_exclusion(kind):
    rng = np.random.default_rng(2)
    x = unit(rng, 4000, 32)
    q = x[:100] + 0.05 * unit(rng, 100, 32)
    ids = np.arange(4000, dtype=np.int64)
    index = build_index(x, ids, IndexParams(kind, nlist=32, nprobe=8))
    got, _ = search(index, q, 10)
    exact, _ = search(build_index(x, ids, IndexParams("flat")), q, 10)
    recall1 = np.mean(got[:, 0] == exact[:, 0])
    assert recall1 >= 0.9
    excl, _ = search(index, q, 5, [[i] for i in range(100)])
    assert all(i not in row for i, row in enumerate(excl))


def test_build_index_cli_round_trip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    x = unit(rng, 300, 16)
    ids = np.arange(1000, 1300, dtype=np.int64)
    pq.write_table(
        pa.table({"image_id": ids, "embedding": embeddings_to_array(x, "float16")}),
        tmp_path / "f.parquet",
    )
    out = tmp_path / "i.faiss"
    params = '{"kind": "hnsw", "hnsw_m": 8}'
    assert (
        main(
            [
                "build-index",
                "--features",
                str(tmp_path / "f.parquet"),
                "--index",
                str(out),
                "--meta",
                str(tmp_path / "i.json"),
                "--params",
                params,
            ]
        )
        == 0
    )
    index = load_index(out, use_gpu=False)
    got, _ = search(index, x[:5], 1)
    assert got[:, 0].tolist() == ids[:5].tolist()
    meta = json.loads((tmp_path / "i.json").read_text())
    assert meta["ntotal"] == 300 and meta["params"]["kind"] == "hnsw"


def test_index_params_defaults_are_the_schema_defaults():
    """Settings have one source of defaults: the dataclass may not disagree with the schema."""
    from dataclasses import asdict

    from helpers.jobs import demo_config

    assert asdict(IndexParams()) == demo_config(index={})["index"] | {"kind": "flat"}
