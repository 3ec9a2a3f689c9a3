"""Class texts of each method, as the WCA reference (JinhaoLee/WCA, helper.py) builds them."""

from __future__ import annotations

import numpy as np
import pytest

from crossmodal.errors import CrossmodalError
from crossmodal.wca import texts


def reference_construct_random(gpt3_prompts, word_list):
    """helper.py:360-444 of JinhaoLee/WCA (MIT licence), verbatim but for the word list, which
    the reference unpickles from features/word_list.pkl; draws from NumPy's global generator."""

    def wordify(string):
        return string.replace("_", " ")

    make_descriptor_sentence = texts.make_descriptor_sentence
    key_list = list(gpt3_prompts.keys())
    descr_list = [list(values) for values in gpt3_prompts.values()]
    descr_list = np.array([x for y in descr_list for x in y])
    structured_descriptor_builder = lambda item, cls: (  # noqa: E731
        f"A photo of a {wordify(cls)}, {make_descriptor_sentence(item)}."
    )
    avg_num_words = int(
        np.max([np.round(np.mean([len(wordify(x).split(" ")) for x in key_list])), 1])
    )
    avg_word_length = int(
        np.round(np.mean([np.mean([len(y) for y in wordify(x).split(" ")]) for x in key_list]))
    )
    word_list = [x[:avg_word_length] for x in word_list]
    character_list = [x.split(" ") for x in descr_list]
    character_list = [
        x.replace(",", "").replace(".", "")
        for x in np.unique([x for y in character_list for x in y])
    ]
    character_list = np.unique(list("".join(character_list)))
    num_spaces = int(np.round(np.mean([np.sum(np.array(list(x)) == " ") for x in key_list]))) + 1
    num_chars = int(np.ceil(np.mean([np.max([len(y) for y in x.split(" ")]) for x in key_list])))
    num_chars += num_spaces - num_chars % num_spaces
    sample_key = ""
    for s in range(num_spaces):
        for _ in range(num_chars // num_spaces):
            sample_key += "a"
        if s < num_spaces - 1:
            sample_key += " "
    gpt3_prompts = {key: [] for key in gpt3_prompts.keys()}  # noqa: SIM118
    for key in key_list:
        for _ in range(15):
            base_word = ""
            for a in range(avg_num_words):
                base_word += np.random.choice(word_list, 1, replace=False)[0]
                if a < avg_num_words - 1:
                    base_word += " "
            gpt3_prompts[key].append(structured_descriptor_builder(base_word, key))
            noise_word = ""
            for c in sample_key:
                if c != " ":
                    noise_word += np.random.choice(character_list, 1, replace=False)[0]
                else:
                    noise_word += ", "
            gpt3_prompts[key].append(structured_descriptor_builder(noise_word, key))
    match_key = np.random.choice(key_list)
    gpt3_prompts = {key: gpt3_prompts[match_key] for key in key_list}
    for key in gpt3_prompts:
        gpt3_prompts[key] = [x.replace(wordify(match_key), wordify(key)) for x in gpt3_prompts[key]]
    return gpt3_prompts


DESCRIPTORS = {
    "red fox": ["a bushy tail", "orange fur", "pointed ears"],
    "snow_owl": ["white feathers", "has yellow eyes"],
    "Tabby cat house pet": ["striped coat, soft.", "often sleeps"],
}
WORDS = ["apple", "bridge", "candle", "dolphin", "ember", "forest", "glacier", "harbor", "iris"]


@pytest.mark.parametrize("seed", [42, 7])
def test_waffle_equals_the_reference_for_the_same_seed(seed):
    np.random.seed(seed)
    expected = reference_construct_random(DESCRIPTORS, WORDS)
    got = texts.waffle_descriptors(DESCRIPTORS, WORDS, seed)
    assert got == expected
    assert all(len(v) == 30 for v in got.values())
    assert got["snow_owl"][0].startswith("A photo of a snow owl, which ")
    assert got != texts.waffle_descriptors(DESCRIPTORS, WORDS, seed + 1)


def test_descriptor_sentences_keep_the_reference_rules():
    m = texts.make_descriptor_sentence
    assert m("a seabird") == "which is a seabird"
    assert m("antennae") == "which is antennae"  # startswith("a"), as in the reference
    assert m("has webbed feet") == "which has webbed feet"
    assert m("often found near water") == "which often found near water"
    assert m("used for cutting") == "which is used for cutting"
    assert m("black feet") == "which has black feet"


def test_each_methods_texts():
    classes = ["red fox", "snow owl"]
    assert texts.clip_texts(classes) == [["a photo of a red fox."], ["a photo of a snow owl."]]
    assert texts.template_texts(classes, ["a {}.", "itap of a {}."], "f") == [
        ["a red fox.", "itap of a red fox."],
        ["a snow owl.", "itap of a snow owl."],
    ]
    desc = {"red fox": ["a bushy tail", "black feet"], "snow owl": ["has yellow eyes"], "x": []}
    assert texts.descriptor_texts(classes, desc, "f") == [
        ["red fox, which is a bushy tail", "red fox, which has black feet"],
        ["snow owl, which has yellow eyes"],
    ]
    cupl = {"red fox": ["A fox.", "A fox."], "snow owl": ["An owl."]}
    assert texts.description_texts(classes, cupl, "f") == [["A fox.", "A fox."], ["An owl."]]
    assert texts.wordify("apple_pie") == "apple pie"


def test_missing_or_empty_classes_and_bad_templates_are_refused():
    with pytest.raises(CrossmodalError, match=r"no texts for 1 class\(es\), e.g. \['snow owl'\]"):
        texts.description_texts(["red fox", "snow owl"], {"red fox": ["x"]}, "cupl.json")
    with pytest.raises(CrossmodalError, match="empty list of texts"):
        texts.description_texts(["red fox"], {"red fox": []}, "cupl.json")
    with pytest.raises(CrossmodalError, match="one '\\{\\}'"):
        texts.template_texts(["red fox"], ["a photo"], "clip-e.json")
