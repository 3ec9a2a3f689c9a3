"""Query arithmetic against a hand computation, metrics against brute force, the sampler."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from crossmodal.cir.compose import (
    REFERENCE_COMPOSE,
    ComposeSettings,
    OneQueryPerTargetSampler,
    compose_queries,
    edit_sums,
    retrieval_metrics,
    retrieve,
    unique_targets,
)
from crossmodal.errors import CrossmodalError


def test_composition_by_hand() -> None:
    image = torch.tensor([[3.0, 0.0, 0.0]])
    texts = {
        "a photo of a dog.": torch.tensor([0.0, 2.0, 0.0]),
        "a photo of a hat.": torch.tensor([0.0, 0.0, 1.0]),
        "a photo of a cat.": torch.tensor([1.0, 0.0, 0.0]),
    }
    add, remove = edit_sums(
        [["a photo of a dog.", "a photo of a hat."]], [["a photo of a cat."]], texts, 3
    )
    assert add.tolist() == [[0.0, 2.0, 1.0]] and remove.tolist() == [[1.0, 0.0, 0.0]]
    # raw sum: (3,0,0) + (0,2,0) + (0,0,1) - (1,0,0) = (2,2,1), norm 3: text not normalised
    query = compose_queries(image, add, remove, REFERENCE_COMPOSE)
    assert query[0].tolist() == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    weighted = ComposeSettings(add_weight=0.5, remove_weight=2.0, normalise=False)
    # (3,0,0) + 0.5 (0,2,1) - 2 (1,0,0) = (1, 1, 0.5)
    assert compose_queries(image, add, remove, weighted).tolist() == [[1.0, 1.0, 0.5]]


def test_a_query_without_edits_is_its_image() -> None:
    add, remove = edit_sums([[]], [[]], {}, 2)
    query = compose_queries(torch.tensor([[3.0, 4.0]]), add, remove, REFERENCE_COMPOSE)
    assert query[0].tolist() == pytest.approx([0.6, 0.8])
    with pytest.raises(CrossmodalError, match="no text embedding"):
        edit_sums([["a photo of a cat."]], [[]], {}, 2)


def test_top1_and_r5_against_brute_force() -> None:
    rng = np.random.default_rng(0)
    database = rng.normal(size=(40, 16)).astype(np.float32)
    ids = np.arange(100, 140)
    targets = rng.choice(ids, size=60)
    # queries near their target, some pushed away so that not every one is a hit
    queries = database[targets - 100] + rng.normal(scale=1.4, size=(60, 16)).astype(np.float32)
    ranked, scores = retrieve(queries, database, ids, k=5)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    d = database / np.linalg.norm(database, axis=1, keepdims=True)
    cos = q @ d.T
    brute = ids[np.argsort(-cos, axis=1)[:, :5]]
    assert (ranked == brute).all()
    assert scores == pytest.approx(np.sort(cos, axis=1)[:, ::-1][:, :5], abs=1e-5)
    metrics = retrieval_metrics(ranked, targets)
    assert metrics["top1"] == pytest.approx(np.mean(ids[cos.argmax(axis=1)] == targets))
    hits = [t in row for t, row in zip(targets, brute, strict=True)]
    assert metrics["r5"] == pytest.approx(np.mean(hits))
    assert 0 < metrics["top1"] < metrics["r5"] < 1  # the case is not trivial


def test_metrics_by_hand_and_the_database_of_unique_targets() -> None:
    ranked = np.array([[7, 1, 2, 3, 4], [1, 2, 3, 4, 5], [9, 9, 9, 9, 9]])
    m = retrieval_metrics(ranked, [7, 5, 8])
    assert m["top1"] == pytest.approx(1 / 3) and m["r5"] == pytest.approx(2 / 3)
    assert unique_targets(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]


def _targets() -> list[int]:
    # 30 targets with 1 to 9 queries each: several passes, uneven queues
    rng = np.random.default_rng(1)
    return [t for t in range(30) for _ in range(int(rng.integers(1, 10)))]


@pytest.mark.parametrize("batch_size", [4, 16, 64])
def test_sampler_never_repeats_a_target_in_a_batch_and_uses_every_query(batch_size: int) -> None:
    targets = _targets()
    sampler = OneQueryPerTargetSampler(targets, batch_size, seed=0)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(targets)))
        for b in batches:
            assert 0 < len(b) <= batch_size
            assert len({targets[i] for i in b}) == len(b)
        # batches are full except where no other target is left
        assert sum(len(b) < batch_size for b in batches[:-1]) <= 9


def test_sampler_is_seeded_per_epoch() -> None:
    targets = _targets()
    a = OneQueryPerTargetSampler(targets, 16, seed=3)
    b = OneQueryPerTargetSampler(targets, 16, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(OneQueryPerTargetSampler(targets, 16, seed=4)) != list(b)


def test_the_reference_order_can_repeat_a_target_across_a_pass_boundary() -> None:
    # two targets with many queries: the reference fills a batch of 3 across passes
    targets = [0] * 5 + [1] * 5
    repeats = 0
    for seed in range(5):
        for b in OneQueryPerTargetSampler(targets, 3, seed=seed, mode="reference"):
            repeats += len({targets[i] for i in b}) < len(b)
    assert repeats > 0
    for b in OneQueryPerTargetSampler(targets, 3, seed=0):
        assert len({targets[i] for i in b}) == len(b)


def test_sampler_without_shuffle_is_round_robin_in_order() -> None:
    targets = ["a", "a", "b", "c", "c"]
    batches = list(OneQueryPerTargetSampler(targets, 2, seed=0, shuffle=False))
    # queues a:[0,1] b:[2] c:[3,4], popped from the end, one per target per pass; pass 2
    # offers a before c (c is in the open batch [4]), and c's last query starts a new batch
    assert batches == [[1, 2], [4, 0], [3]]
    assert Counter(i for b in batches for i in b) == Counter(range(5))
