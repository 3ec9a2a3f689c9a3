"""WCA scoring against brute-force loops; baseline class vectors from hand-written embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crossmodal.errors import CrossmodalError
from crossmodal.wca import scoring


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_views(rng, n, m, d):
    return unit(rng.normal(size=(n, 1 + m, d))).astype(np.float32)


def brute_force_logits(views, indices, texts_per_class, labels_per_class, s_img, s_txt):
    """The reference's arithmetic written as plain loops: a softmax over the drawn crop list
    (duplicates included), then a softmax over each class's descriptions."""
    n_runs, n = len(indices), len(views)
    z = []
    for texts, label in zip(texts_per_class, labels_per_class, strict=True):
        sims = [math.exp(s_txt) * float(t @ label) for t in texts]
        top = max(sims)
        ws = [math.exp(x - top) for x in sims]
        total = sum(ws)
        vec = sum((w / total) * t for w, t in zip(ws, texts, strict=True))
        z.append(vec / np.linalg.norm(vec))
    out = np.zeros((n_runs, n, len(z)))
    for r in range(n_runs):
        for i in range(n):
            full = views[i, 0]
            sims = [math.exp(s_img) * float(views[i, 1 + j] @ full) for j in indices[r]]
            top = max(sims)
            ws = [math.exp(x - top) for x in sims]
            total = sum(ws)
            u = sum((w / total) * views[i, 1 + j] for w, j in zip(ws, indices[r], strict=True))
            u = u / np.linalg.norm(u)
            for c, zc in enumerate(z):
                out[r, i, c] = float(u @ zc)
    return out


def test_wca_scores_equal_the_brute_force_double_loop():
    rng = np.random.default_rng(0)
    n, m, d, n_runs, n_sampled = 7, 9, 16, 4, 12
    views = random_views(rng, n, m, d)
    counts = np.array([3, 1, 5])  # the middle class has a single description
    texts = unit(rng.normal(size=(counts.sum(), d))).astype(np.float32)
    labels = unit(rng.normal(size=(3, d))).astype(np.float32)
    per_class = np.split(texts, np.cumsum(counts)[:-1])
    indices = scoring.draw_crop_indices(5, n_runs, m, n_sampled)
    assert any(len(set(row)) < n_sampled for row in indices), "some crop drawn twice"

    z = scoring.weighted_class_vectors(texts, counts, labels, 2.0)
    u = scoring.wca_image_vectors(views, scoring.index_counts(indices, m), 4.0)
    expected = brute_force_logits(views, indices, per_class, labels, 4.0, 2.0)
    np.testing.assert_allclose(u @ z.T, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(u, axis=-1), 1.0, atol=1e-6)

    y = rng.integers(0, 3, n)
    runs = scoring.wca_accuracies(views, y, z, indices, 4.0, chunk=3)
    assert runs == [float((expected[r].argmax(-1) == y).mean() * 100) for r in range(n_runs)]


def test_duplicate_draws_weigh_twice():
    views = unit(np.array([[[1.0, 0, 0], [1, 1, 0], [1, 0, 1]]])).astype(np.float32)
    once = scoring.wca_image_vectors(views, np.array([[1.0, 1.0]]), 0.0)
    twice = scoring.wca_image_vectors(views, np.array([[2.0, 1.0]]), 0.0)
    # scale e^0 = 1 and equal cosines: weights 1/2,1/2 versus 2/3,1/3
    crops = views[0, 1:]
    np.testing.assert_allclose(once[0, 0], unit(crops[0] + crops[1]), atol=1e-6)
    np.testing.assert_allclose(twice[0, 0], unit(2 * crops[0] + crops[1]), atol=1e-6)


def test_crop_weights_use_e_to_the_image_scale():
    # two crops with cosines 1 and 0 to the full view: weights e^(e^s) : 1
    views = np.array([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]], dtype=np.float32)
    u = scoring.wca_image_vectors(views, np.ones((1, 2)), 4.0)[0, 0]
    w = math.exp(math.exp(4.0))
    np.testing.assert_allclose(u, unit(np.array([w, 1.0])), rtol=1e-5)


def test_text_weights_are_a_softmax_within_each_class():
    texts = unit(np.array([[1.0, 0], [0, 1], [1, 1], [1, -1]])).astype(np.float32)
    labels = np.array([[1.0, 0], [0, 1]], dtype=np.float32)
    v = scoring.text_weights(texts, np.array([2, 2]), labels, 2.0)
    e2 = math.exp(2.0)
    a = math.exp(e2 * 1.0) / (math.exp(e2 * 1.0) + math.exp(0.0))
    b = math.exp(e2 * 0.5**0.5) / (math.exp(e2 * 0.5**0.5) + math.exp(-e2 * 0.5**0.5))
    np.testing.assert_allclose(v, [a, 1 - a, b, 1 - b], rtol=1e-6)


def test_a_class_with_one_description_is_that_description():
    t = unit(np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])).astype(np.float32)
    labels = unit(np.array([[1.0, 1.0], [0.3, 1.0]])).astype(np.float32)
    z = scoring.weighted_class_vectors(t, np.array([1, 2]), labels, 2.0)
    np.testing.assert_allclose(z[0], [0.6, 0.8], atol=1e-7)
    np.testing.assert_allclose(scoring.mean_class_vectors(t, np.array([1, 2]))[0], [0.6, 0.8])


def test_baseline_class_vectors_from_hand_written_embeddings():
    # clip: one text per class is its own class vector
    one = unit(np.array([[1.0, 2.0], [0.0, -1.0]]))
    np.testing.assert_allclose(scoring.mean_class_vectors(one, np.array([1, 1])), one)
    # clip-e / clip-d / waffle / cupl: the normalised mean of normalised embeddings
    t = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1], [0, 1, 0]])
    z = scoring.mean_class_vectors(t, np.array([2, 3]))
    np.testing.assert_allclose(z[0], [0.5**0.5, 0.5**0.5, 0.0])
    np.testing.assert_allclose(z[1], [0.0, 1.0, 0.0])  # (0,0,1)+(0,0,-1) cancel


def test_empty_class_and_bad_counts_are_refused():
    t = np.eye(3, dtype=np.float32)
    with pytest.raises(CrossmodalError, match="at least one text"):
        scoring.mean_class_vectors(t, np.array([3, 0]))
    with pytest.raises(CrossmodalError, match="add up to 2"):
        scoring.mean_class_vectors(t, np.array([1, 1]))


def test_baselines_score_the_full_view():
    views = np.zeros((3, 3, 2), dtype=np.float32)
    views[:, 0] = [[1, 0], [0, 1], [1, 0]]
    views[:, 1:] = [0.6, 0.8]  # crops that would point elsewhere
    z = np.eye(2, dtype=np.float32)
    assert scoring.full_view_accuracy(views, np.array([0, 1, 1]), z, chunk=2) == 2 / 3 * 100


def test_twenty_runs_mean_and_population_std():
    runs = [float(x) for x in range(20)]
    mean, std = scoring.mean_std(runs)
    assert mean == 9.5
    assert std == pytest.approx(math.sqrt(sum((x - 9.5) ** 2 for x in runs) / 20))
    assert std != pytest.approx(math.sqrt(sum((x - 9.5) ** 2 for x in runs) / 19))


def test_run_indices_are_seeded_shared_and_with_replacement():
    a = scoring.draw_crop_indices(42, 20, 100, 60)
    assert a.shape == (20, 60) and a.min() >= 0 and a.max() < 100
    np.testing.assert_array_equal(a, scoring.draw_crop_indices(42, 20, 100, 60))
    assert not np.array_equal(a, scoring.draw_crop_indices(43, 20, 100, 60))
    assert scoring.draw_crop_indices(0, 1, 3, 60).shape == (1, 60)  # more draws than crops
    counts = scoring.index_counts(a, 100)
    assert (counts.sum(axis=1) == 60).all()
