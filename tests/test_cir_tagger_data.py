"""Tagger data: word splitting, slot filling and labels, the held-out split, sub-token labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossmodal.cir.tagger import build_tiny_tagger, init_tagger, merge_phrases
from crossmodal.cir.tagger_data import (
    ADD,
    HELDOUT,
    IGNORE,
    LABEL2ID,
    OTHER,
    REMOVE,
    TRAIN,
    TaggerSentence,
    encode_sentences,
    first_subtoken_labels,
    read_objects,
    read_sentences,
    read_templates,
    split_heldout,
    split_words,
    synthesise,
    write_sentences,
)
from crossmodal.errors import CrossmodalError, DataFormatError

TEMPLATE = "Remove the <negative_object>, then add a <positive_object> and a <positive_object>!"
OBJECTS = ["watering can", "t-shirt", "lamp"]


def test_split_words_separates_punctuation_and_keeps_slots() -> None:
    assert split_words("remove the <negative_object>, then add (a) t-shirt.") == [
        "remove", "the", "<negative_object>", ",", "then", "add", "(", "a", ")",
        "t", "-", "shirt", ".",
    ]  # fmt: skip
    assert split_words("  two   spaces\tand\nlines ") == ["two", "spaces", "and", "lines"]
    assert split_words("i\u2019d like it") == ["i\u2019d", "like", "it"]  # not in the list


def test_each_word_of_an_object_carries_its_slot_label() -> None:
    sentences = synthesise([TEMPLATE], OBJECTS, draws_per_template=6, seed=3, object_words="each")
    assert len(sentences) == 6
    for s in sentences:
        assert s.words[:2] == ("remove", "the") and s.labels[:2] == (OTHER, OTHER)
        assert s.words[-1] == "!" and s.labels[-1] == OTHER
        # every object once, in the slot that names its label; punctuation inside t-shirt too
        adds, removes = merge_phrases(s.words, s.labels)
        assert len(removes) == 1 and len(adds) == 2
        spelled = {p.replace(" - ", "-") for p in adds + removes}
        assert spelled == set(OBJECTS)
        comma = s.words.index(",")
        assert all(label == REMOVE for label in s.labels[2:comma])
    # the draws differ between sentences (3! orders; six draws see more than one)
    assert len({s.words for s in sentences}) > 1


def test_reference_mode_puts_the_whole_object_in_one_word() -> None:
    (s,) = synthesise(["add a <positive_object>."], ["watering can"], draws_per_template=1,
                      seed=0, object_words="first")  # fmt: skip
    assert s.words == ("add", "a", "watering can", ".")
    assert s.labels == (OTHER, OTHER, ADD, OTHER)


def test_draws_are_seeded_and_objects_sorted(tmp_path: Path) -> None:
    names = [f"object {i}" for i in range(30)]
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("\n".join(names) + "\n")
    b.write_text("\n".join(reversed(names)) + "\n\n")
    objs_a, objs_b = read_objects(a, sort=True), read_objects(b, sort=True)
    assert objs_a == objs_b
    assert read_objects(b, sort=False) == list(reversed(names))
    make = lambda objs, seed: synthesise(  # noqa: E731
        [TEMPLATE, "add <positive_object>"], objs, draws_per_template=5, seed=seed,
        object_words="each",
    )  # fmt: skip
    assert make(objs_a, 1) == make(objs_b, 1)
    assert make(objs_a, 1) != make(objs_a, 2)


def test_read_objects_lowercases_and_deduplicates(tmp_path: Path) -> None:
    path = tmp_path / "o.txt"
    path.write_text("Lamp\nlamp \nWatering Can\n")
    assert read_objects(path, sort=False) == ["lamp", "watering can"]


def test_bad_inputs_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps([{"text": "add <positive_object>"}]))
    with pytest.raises(DataFormatError, match="record 0"):
        read_templates(bad)
    with pytest.raises(CrossmodalError, match="object_words"):
        synthesise([TEMPLATE], OBJECTS, draws_per_template=1, seed=0, object_words="all")
    with pytest.raises(CrossmodalError, match="3 slots but only 2"):
        synthesise([TEMPLATE], OBJECTS[:2], draws_per_template=1, seed=0, object_words="each")


def test_heldout_split_holds_whole_templates_and_duplicates_together() -> None:
    templates = [f"add the <positive_object> number {i}" for i in range(20)]
    templates += ["Add the <positive_object>  NUMBER 3"]  # the same text as template 3
    objects = [f"o{i}" for i in range(10)]
    sentences = synthesise(templates, objects, draws_per_template=10, seed=0, object_words="each")
    split = split_heldout(sentences, heldout_templates=0.25, heldout_sentences=0.2, seed=7)
    unseen = {s.template_group for s in split if not s.template_seen}
    assert len(unseen) == 5  # a quarter of the 20 distinct texts
    assert all(s.split == HELDOUT for s in split if s.template_group in unseen)
    assert not any(s.split == TRAIN and s.template_group in unseen for s in split)
    assert split[30].template_group == split[-1].template_group  # duplicates share a group
    seen_held = [s for s in split if s.template_seen and s.split == HELDOUT]
    assert len(seen_held) == round(0.2 * 150)
    assert split == split_heldout(sentences, heldout_templates=0.25, heldout_sentences=0.2, seed=7)
    nothing = split_heldout(sentences, heldout_templates=0.0, heldout_sentences=0.0, seed=7)
    assert {s.split for s in nothing} == {TRAIN}


def test_first_subtoken_labels_by_hand() -> None:
    # [CLS] w0 w1 w1 w2 [SEP] [PAD]
    word_ids = [None, 0, 1, 1, 2, None, None]
    labels = [OTHER, ADD, REMOVE]
    assert first_subtoken_labels(word_ids, labels) == [
        IGNORE, LABEL2ID[OTHER], LABEL2ID[ADD], IGNORE, LABEL2ID[REMOVE], IGNORE, IGNORE,
    ]  # fmt: skip


def test_encode_sentences_labels_first_subtokens_only(tmp_path: Path) -> None:
    build_tiny_tagger(tmp_path, ["add a lamp and remove the chair."], seed=0)
    tagger = init_tagger(tmp_path)
    s = TaggerSentence(("add", "a", "lampadd", "."), (OTHER, OTHER, ADD, OTHER), 0, 0, 0)
    enc = encode_sentences(tagger.tokenizer, [s], max_length=32)
    word_ids = enc.word_ids(batch_index=0)
    n_pieces = word_ids.count(2)
    assert n_pieces > 1  # lamp ##a ##d ##d: a word out of the vocabulary
    labels = enc["labels"][0].tolist()
    first = word_ids.index(2)
    assert labels[first] == LABEL2ID[ADD]
    assert labels[first + 1 : first + n_pieces] == [IGNORE] * (n_pieces - 1)
    assert labels[0] == IGNORE and labels[word_ids.index(3)] == LABEL2ID[OTHER]


def test_sentences_round_trip_through_parquet(tmp_path: Path) -> None:
    sentences = split_heldout(
        synthesise([TEMPLATE], OBJECTS, draws_per_template=4, seed=0, object_words="each"),
        heldout_templates=0.0, heldout_sentences=0.5, seed=0,
    )  # fmt: skip
    path = tmp_path / "s.parquet"
    write_sentences(path, sentences, {"stage": "test"})
    assert read_sentences(path) == sentences
    assert read_sentences(path, HELDOUT) == [s for s in sentences if s.split == HELDOUT]
