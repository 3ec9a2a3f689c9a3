"""The edit tagger: phrase merging, prompts, F1 by hand, loading, and a tiny model that learns."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from crossmodal.cir.tagger import (
    REFERENCE_TRAIN_SETTINGS,
    build_tiny_tagger,
    init_tagger,
    load_tagger,
    merge_phrases,
    parse_edits,
    phrase_scores,
    predict_word_labels,
    prompts,
    query_words,
    tagger_scores,
    token_scores,
    train_tagger,
)
from crossmodal.cir.tagger_data import ADD, HELDOUT, OTHER, REMOVE, TRAIN, split_heldout, synthesise
from crossmodal.errors import CrossmodalError

A, R, N = ADD, REMOVE, OTHER  # N: neither


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small models run fastest on one thread; the machine's cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_merge_two_adds_one_remove_with_multiword_objects_and_punctuation() -> None:
    words = query_words("Please add a Watering Can and a t-shirt, then remove the old lamp!")
    assert words == [
        "please", "add", "a", "watering", "can", "and", "a", "t", "-", "shirt", ",",
        "then", "remove", "the", "old", "lamp", "!",
    ]  # fmt: skip
    labels = [N, N, N, A, A, N, N, A, A, A, N, N, N, N, R, R, N]
    adds, removes = merge_phrases(words, labels)
    assert adds == ["watering can", "t - shirt"]
    assert removes == ["old lamp"]
    assert prompts(adds) == ["a photo of a watering can.", "a photo of a t - shirt."]


def test_merge_splits_on_label_change_and_on_other() -> None:
    words = ["x", "y", "z", "w", "v"]
    assert merge_phrases(words, [A, R, A, N, A]) == (["x", "z", "v"], ["y"])
    assert merge_phrases(words, [A, A, R, R, N]) == (["x y"], ["z w"])
    assert merge_phrases([], []) == ([], [])
    with pytest.raises(ValueError):
        merge_phrases(words, [A])


def test_token_and_phrase_scores_by_hand() -> None:
    words = [["add", "a", "watering", "can", "remove", "lamp"]]
    gold = [[N, N, A, A, N, R]]
    pred = [[N, A, A, A, N, N]]
    s = token_scores(gold, pred)
    # add: tp 2 (watering, can), fp 1 (a); remove: fn 1 (lamp)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["token_f1"] == pytest.approx(2 / 3)
    assert s["add_f1"] == pytest.approx(2 * 1.0 * (2 / 3) / (1 + 2 / 3))
    assert s["remove_f1"] == 0.0
    assert s["accuracy"] == pytest.approx(4 / 6)
    p = phrase_scores(words, gold, pred)
    # gold phrases {add: watering can, remove: lamp}, predicted {add: a watering can}: no match
    assert p["phrase_f1"] == 0.0 and p["phrase_precision"] == 0.0
    perfect = phrase_scores(words, gold, gold)
    assert perfect["phrase_f1"] == 1.0


ADD_VERBS = ["add", "insert", "put in", "include", "place"]
REMOVE_VERBS = ["remove", "delete", "drop", "take away", "get rid of"]


def _toy_sentences():
    """Templates in the reference's format: every add verb with every remove verb in two orders,
    and each verb alone. Held-out templates are new combinations of known verbs."""
    templates = [f"{v} a <positive_object>." for v in ADD_VERBS]
    templates += [f"{v} the <negative_object>!" for v in REMOVE_VERBS]
    for va in ADD_VERBS:
        for vr in REMOVE_VERBS:
            templates.append(f"{va} a <positive_object> and {vr} the <negative_object>.")
            templates.append(f"{vr} the <negative_object>, then {va} a <positive_object>.")
    objects = [
        "lamp", "chair", "watering can", "red umbrella", "t-shirt", "dog", "cat", "bicycle",
        "coffee mug", "old clock", "tree", "kite", "tennis ball", "laptop", "vase", "hat",
    ]  # fmt: skip
    sentences = synthesise(templates, objects, draws_per_template=4, seed=0, object_words="each")
    return split_heldout(sentences, heldout_templates=0.2, heldout_sentences=0.1, seed=0)


def test_tiny_tagger_learns_beyond_chance_on_unseen_templates(tmp_path: Path) -> None:
    sentences = _toy_sentences()
    train = [s for s in sentences if s.split == TRAIN]
    heldout = [s for s in sentences if s.split == HELDOUT]
    assert any(not s.template_seen for s in heldout)
    build_tiny_tagger(tmp_path / "base", [s.text for s in sentences], seed=0)
    tagger = init_tagger(tmp_path / "base")
    before = tagger_scores(tagger, heldout)
    settings = dataclasses.replace(
        REFERENCE_TRAIN_SETTINGS, epochs=25, batch_size=32, learning_rate=5e-3, warmup_steps=0
    )
    losses = train_tagger(tagger, train, settings)
    after = tagger_scores(tagger, heldout)
    assert losses[-1] < 0.5 * losses[0]
    # chance is the untrained model's F1; always answering "other" scores 0
    assert after["all"]["token_f1"] > 0.8
    assert after["unseen_templates"]["token_f1"] > 0.8
    assert after["all"]["token_f1"] > before["all"]["token_f1"] + 0.3
    assert after["unseen_templates"]["n_sentences"] > 0
    # saved and loaded back, it predicts the same labels
    tagger.save(tmp_path / "trained")
    again = load_tagger(tmp_path / "trained")
    words = [s.words for s in heldout[:20]]
    assert predict_word_labels(again, words) == predict_word_labels(tagger, words)
    edit = parse_edits(again, ["Insert a Watering Can and take away the coffee mug."])[0]
    assert edit.add == ("watering can",) and edit.remove == ("coffee mug",)


def test_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    sentences = [s for s in _toy_sentences() if s.split == TRAIN][:64]
    build_tiny_tagger(tmp_path / "base", [s.text for s in sentences], seed=1)
    settings = dataclasses.replace(
        REFERENCE_TRAIN_SETTINGS, epochs=3, batch_size=16, learning_rate=1e-3, warmup_steps=2
    )
    whole = train_tagger(init_tagger(tmp_path / "base"), sentences, settings)
    ckpt = tmp_path / "ckpt.pt"
    short = dataclasses.replace(settings, epochs=3)
    first = init_tagger(tmp_path / "base")

    class Killed(Exception):
        pass

    def kill_after_first(epoch: int, loss: float) -> None:
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        train_tagger(first, sentences, short, checkpoint=ckpt, on_epoch=kill_after_first)
    resumed = train_tagger(init_tagger(tmp_path / "base"), sentences, short, checkpoint=ckpt)
    assert resumed == pytest.approx(whole, rel=1e-5)


def test_reference_label_names_load_and_wrong_labels_are_refused(tmp_path: Path) -> None:
    build_tiny_tagger(tmp_path, ["add a lamp"], seed=0)
    tagger = init_tagger(tmp_path)
    config = tagger.model.config
    config.id2label = {0: "<negative_object>", 1: "<positive_object>", 2: "other"}
    tagger.save(tmp_path / "ref")
    assert load_tagger(tmp_path / "ref").id2label == {0: REMOVE, 1: ADD, 2: OTHER}
    config.id2label = {0: "B-OBJ", 1: "I-OBJ", 2: "O"}
    tagger.save(tmp_path / "other")
    with pytest.raises(CrossmodalError, match="expected"):
        load_tagger(tmp_path / "other")
    with pytest.raises(CrossmodalError, match="cir-train-tagger"):
        load_tagger(tmp_path / "missing")


def test_a_query_over_max_length_is_an_error(tmp_path: Path) -> None:
    build_tiny_tagger(tmp_path, ["add a lamp"], seed=0)
    tagger = init_tagger(tmp_path)
    with pytest.raises(CrossmodalError, match="max_length 8"):
        predict_word_labels(tagger, [["add", "a", "lamp"] * 4], max_length=8)
