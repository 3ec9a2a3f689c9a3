"""Dialogue retrieval stages: descriptors through the journal, embeddings, FAISS search, export."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from helpers.dialog import make_world

from crossmodal import stages
from crossmodal.dialog.descriptor import KEYS
from crossmodal.dialog.stage import ranked, score_matrix
from crossmodal.io import read_json, read_provenance

TINY = {"backend": "tiny", "seed": 0}


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_faiss_ranking_matches_the_exact_scores(metric):
    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(7, 5)) * 3, rng.normal(size=(40, 5)) * 3
    _, rows = ranked(q.astype(np.float32), c.astype(np.float32), metric, 10)
    exact = score_matrix(q, c, metric)
    assert rows.tolist() == np.argsort(-exact, axis=1, kind="stable")[:, :10].tolist()
    if metric == "ip":  # cosine: scale does not matter
        np.testing.assert_allclose(exact, score_matrix(q * 5, c, metric), rtol=1e-6)


def _embed_search_eval(tmp_path, world, model=None, metric="ip", name="run"):
    out = tmp_path / name
    embed = stages.DialogEmbed(
        dialogues=world["dialogues"],
        descriptors=world["descriptors"],
        photos=world["photos"],
        queries=out / "queries.parquet",
        candidates=out / "candidates.parquet",
        encoder=TINY,
        batch_size=4,
        device="cpu",
        model=model,
    )
    embed.run()
    search = stages.DialogSearch(
        queries=embed.queries,
        candidates=embed.candidates,
        index=out / "index.faiss",
        scores=out / "scores.npy",
        candidate_ids=out / "candidate_ids.json",
        truth=out / "truth.json",
        excluded=out / "excluded.json",
        predictions=out / "predictions.csv",
        metric=metric,
        top=30,
    )
    search.run()
    ev = stages.DialogEval(
        scores=search.scores,
        candidate_ids=search.candidate_ids,
        truth=search.truth,
        excluded=search.excluded,
        out=out / "metrics.json",
        ks=[1, 5, 10],
        hit_k=30,
    )
    ev.run()
    return search, read_json(ev.out)


def test_dead_photo_dialogue_is_excluded_with_a_count_through_to_the_metric(tmp_path):
    world = make_world(tmp_path / "w", dead=("grey",), left_out={"99": "no turn shares the photo"})
    search, metrics = _embed_search_eval(tmp_path, world)
    assert read_json(search.candidate_ids) == sorted(
        ["red", "green", "blue", "yellow", "purple", "cyan", "orange"]
    )
    assert (metrics["n_evaluated"], metrics["n_excluded"], metrics["n_total"]) == (7, 2, 9)
    assert metrics["excluded"] == {
        "7": "photo grey unavailable: HTTP 404",
        "99": "not scored: no turn shares the photo",
    }
    with search.predictions.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0][:3] == ["dialogue_id", "rank_1", "rank_2"] and len(rows[0]) == 1 + 7
    assert [r[0] for r in rows[1:]] == [str(i) for i in range(7)]
    scores = np.load(search.scores)
    cands = read_json(search.candidate_ids)
    for r, row in zip(rows[1:], scores, strict=True):  # predictions agree with the scores
        assert r[1] == cands[int(np.argmax(row))]
    assert metrics["hit30"] == 1.0  # 7 candidates: every photo is within 30


def test_fine_tuning_beats_zero_shot_on_the_small_world(tmp_path):
    world = make_world(tmp_path / "w")
    train = stages.DialogTrain(
        dialogues=world["dialogues"],
        descriptors=world["descriptors"],
        photos=world["photos"],
        model=tmp_path / "model.pt",
        history=tmp_path / "train.json",
        student=TINY,
        loss="infonce",
        tau=0.5,
        epochs=8,
        batch_size=8,
        lr=5e-4,
        weight_decay=0.0,
        seed=0,
        device="cpu",
        workers=0,
        checkpoints=tmp_path / "ckpt",
        checkpoint_every=0,
    )
    train.run()
    _, zero = _embed_search_eval(tmp_path, world, name="zero")
    _, tuned = _embed_search_eval(tmp_path, world, model=train.model, name="tuned")
    print("zero-shot", zero["r1"], zero["r5"], "fine-tuned", tuned["r1"], tuned["r5"])
    assert tuned["r1"] > zero["r1"]
    _, l2 = _embed_search_eval(tmp_path, world, model=train.model, metric="l2", name="l2")
    assert 0.0 <= l2["r1"] <= 1.0


def test_describe_stage_journals_and_counts_fallbacks(tmp_path, monkeypatch):
    """The stage through JournaledGenerator: a rerun answers from the journal, sends nothing."""
    from crossmodal.generation.types import Response

    world = make_world(tmp_path / "w")
    good = json.dumps(dict.fromkeys(KEYS, "a thing"))
    sent = []

    class Backend:
        def generate(self, requests):
            sent.extend(requests)
            out = []
            for r in requests:
                prompt = r.messages[0].parts[0].value
                bad = "red thing" in prompt  # dialogue 0 never answers properly
                out.append(Response("I cannot say." if bad else good, tokens_in=100, tokens_out=20))
            return out

        def close(self):
            pass

    monkeypatch.setattr("crossmodal.generation.registry.build_generator", lambda spec: Backend())
    spec = {
        "backend": "openai",
        "model": "m",
        "base_url": "http://127.0.0.1:9",
        "price": {"input": 1.0, "output": 2.0},
    }
    job = stages.DialogDescribe(
        dialogues=world["dialogues"],
        descriptors=tmp_path / "d.parquet",
        ledger=tmp_path / "d.ledger.json",
        llm=spec,
        settings={"max_tokens": 64, "temperature": 0.0, "seed": 0},
        journal=tmp_path / "journal",
        chunk=4,
    )
    job.run()
    assert len(sent) == 8 + 1  # one repair, for dialogue 0
    ledger = read_json(job.ledger)
    assert (ledger["ok"], ledger["repaired"], ledger["fallback"]) == (7, 0, 1)
    assert list(ledger["fallbacks"]) == ["0"] and ledger["tokens_in"] == 900
    assert read_provenance(job.descriptors)["fallback"] == 1
    sent.clear()
    job.run()
    assert sent == [] and read_json(job.ledger)["answered_from_journal"] == 9
