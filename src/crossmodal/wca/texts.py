"""The class texts of each zero-shot method, built as the WCA reference builds them.

``helper.py:141-196`` (``generate_weights``) picks a prompt file per method and
``helper.py:308-357`` (``zeroshot_classifier``) turns it into texts per class:

- ``clip``: ``"a photo of a {c}."`` (``helper.py:331``);
- ``clip-e``: every template of ``prompts/{dataset}/clip-e.json`` formatted with the class
  name (``helper.py:329``; ImageNet's file holds CLIP's 80 templates, other data sets their own);
- ``clip-d``: ``"{c}, {make_descriptor_sentence(d)}"`` for each descriptor ``d`` of
  ``clip-d.json`` (``helper.py:322-325``), as classify_by_description does;
- ``waffle``: random-word and random-character descriptors built from ``clip-d.json`` and a
  word list (:func:`waffle_descriptors`, ``helper.py:360-444``), used as they are;
- ``cupl`` and ``wca``: the LLM descriptions of ``cupl.json`` as they are (``helper.py:326``);
  ``wca`` also weighs them by their similarity to ``"a photo of a {c}."`` (``helper.py:336-350``).

Class names go through :func:`wordify` (``helper.py:122-138``: underscores become spaces). The
reference applies it to the class lists of non-ImageNet data sets; its ImageNet lists
(``utils.py``) contain no underscore, so applying it everywhere changes nothing there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from crossmodal.errors import CrossmodalError

METHODS = ("clip", "clip-e", "clip-d", "waffle", "cupl", "wca")
CLASS_TEMPLATE = "a photo of a {}."  # helper.py:331 and helper.py:337
WAFFLE_PAIRS = 15  # helper.py:421: 15 random-word and 15 random-character descriptors per class


def wordify(name: str) -> str:
    """``helper.py:122-124``: underscores to spaces."""
    return name.replace("_", " ")


def make_descriptor_sentence(descriptor: str) -> str:
    """``helper.py:291-305`` (from classify_by_description), quirks kept: ``startswith("a")``
    also catches every descriptor starting with the letter a ("antennae" -> "which is
    antennae")."""
    if descriptor.startswith("a") or descriptor.startswith("an"):
        return f"which is {descriptor}"
    if descriptor.startswith(("has", "often", "typically", "may", "can")):
        return f"which {descriptor}"
    if descriptor.startswith("used"):
        return f"which is {descriptor}"
    return f"which has {descriptor}"


def clip_texts(classes: Sequence[str]) -> list[list[str]]:
    """One text per class: ``"a photo of a {c}."``."""
    return [[CLASS_TEMPLATE.format(c)] for c in classes]


def template_texts(
    classes: Sequence[str], templates: Sequence[str], source: str
) -> list[list[str]]:
    """CLIP-E: every template formatted with each class name (``helper.py:329``)."""
    if not templates or not all(isinstance(t, str) and "{}" in t for t in templates):
        raise CrossmodalError(
            f"{source}: CLIP-E needs a JSON list of templates, each with one '{{}}' for the "
            "class name (the reference's prompts/DATASET/clip-e.json)"
        )
    return [[t.format(c) for t in templates] for c in classes]


def _per_class(
    classes: Sequence[str], prompts: Mapping[str, Sequence[str]], source: str
) -> list[list[str]]:
    """``prompts[c]`` for every class, refusing a missing or empty entry (the reference would
    stop with a KeyError, or average an empty set into NaN)."""
    if not isinstance(prompts, Mapping):
        raise CrossmodalError(f"{source}: expected a JSON object {{class name: [texts]}}")
    missing = [c for c in classes if c not in prompts]
    if missing:
        raise CrossmodalError(
            f"{source}: no texts for {len(missing)} class(es), e.g. {missing[:5]}; its keys "
            "must be the class names as the classes file spells them (underscores as spaces)"
        )
    empty = [c for c in classes if not prompts[c]]
    if empty:
        raise CrossmodalError(f"{source}: an empty list of texts for class(es) {empty[:5]}")
    return [list(prompts[c]) for c in classes]


def descriptor_texts(
    classes: Sequence[str], descriptors: Mapping[str, Sequence[str]], source: str
) -> list[list[str]]:
    """CLIP-D: ``"{c}, {make_descriptor_sentence(d)}"`` (``helper.py:322-325``)."""
    return [
        [f"{c}, {make_descriptor_sentence(d)}" for d in texts]
        for c, texts in zip(classes, _per_class(classes, descriptors, source), strict=True)
    ]


def description_texts(
    classes: Sequence[str], descriptions: Mapping[str, Sequence[str]], source: str
) -> list[list[str]]:
    """CuPL, WCA and Waffle: each class's texts exactly as the file holds them, duplicates
    included (``helper.py:326``)."""
    return _per_class(classes, descriptions, source)


def waffle_descriptors(
    descriptors: Mapping[str, Sequence[str]], words: Sequence[str], seed: int
) -> dict[str, list[str]]:
    """WaffleCLIP's random descriptors, a line-by-line port of ``helper.py:360-444``.

    Statistics of the class names (``descriptors``' keys, in file order) set how many random
    words and characters a descriptor gets; the words come from ``words`` cut to the mean word
    length, the characters from the descriptors' own text. For every class 15 random-word and
    15 random-character descriptors are drawn; then one class is drawn and its 30 descriptors,
    with its name replaced, serve every class. Draws use NumPy's legacy ``RandomState(seed)``
    with the reference's exact sequence of calls, so with the seed the reference's
    ``np.random.seed`` received (``main.py:21,32``: 42) the descriptors equal the reference's
    when its DataLoader uses workers (with ``num_workers=0`` its crops consume that generator
    first). Quirks kept: ``num_chars`` grows by ``num_spaces`` even when already divisible
    (``helper.py:409``); ``use_key`` is computed and unused (``helper.py:429``).
    """
    if not descriptors:
        raise CrossmodalError("Waffle needs the CLIP-D descriptors of at least one class")
    if not words:
        raise CrossmodalError("Waffle needs a non-empty word list (the reference's word_list.pkl)")
    rng = np.random.RandomState(seed)
    key_list = list(descriptors.keys())
    descr_list = np.array([x for values in descriptors.values() for x in values])

    def build(item: str, cls: str) -> str:  # helper.py:371-373
        return f"A photo of a {wordify(cls)}, {make_descriptor_sentence(item)}."

    avg_num_words = int(
        np.max([np.round(np.mean([len(wordify(x).split(" ")) for x in key_list])), 1])
    )
    avg_word_length = int(
        np.round(np.mean([np.mean([len(y) for y in wordify(x).split(" ")]) for x in key_list]))
    )
    word_array = np.array([x[:avg_word_length] for x in words])
    split_descriptors = [x.split(" ") for x in descr_list]
    character_list = [
        x.replace(",", "").replace(".", "")
        for x in np.unique([x for y in split_descriptors for x in y])
    ]
    character_array = np.unique(list("".join(character_list)))
    num_spaces = int(np.round(np.mean([np.sum(np.array(list(x)) == " ") for x in key_list]))) + 1
    num_chars = int(np.ceil(np.mean([np.max([len(y) for y in x.split(" ")]) for x in key_list])))
    num_chars += num_spaces - num_chars % num_spaces
    sample_key = " ".join("a" * (num_chars // num_spaces) for _ in range(num_spaces))

    drawn: dict[str, list[str]] = {key: [] for key in key_list}
    for key in key_list:
        for _ in range(WAFFLE_PAIRS):
            base_word = " ".join(
                str(rng.choice(word_array, 1, replace=False)[0]) for _ in range(avg_num_words)
            )
            drawn[key].append(build(base_word, key))
            noise_word = "".join(
                str(rng.choice(character_array, 1, replace=False)[0]) if c != " " else ", "
                for c in sample_key
            )
            drawn[key].append(build(noise_word, key))
    match_key = str(rng.choice(key_list))
    return {
        key: [x.replace(wordify(match_key), wordify(key)) for x in drawn[match_key]]
        for key in key_list
    }
