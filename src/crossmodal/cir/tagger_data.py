"""Training sentences for the edit tagger: prompt templates x object names, labelled per word.

What the reference does (``TD`` = src/token_classification/dataset.py, ``CT`` =
config/token_cls_cfg.yaml of safinal/compositional-image-retrieval):

* Templates (CT:20, 636 entries, 530 distinct texts) are JSON records ``{"template", "model"}``
  whose slots are ``<positive_object>`` (an object to add) and ``<negative_object>`` (an object
  to remove); objects (CT:19) are 1,018 lines, lower-cased and de-duplicated (TD:68-73).
* Each template is lower-cased and its whitespace collapsed (TD:78), split into words by
  :func:`split_words` (TD:11-66: whitespace separates, every punctuation character is a word of
  its own, slot markers are words), and drawn ``num_data_per_prompt_template`` = 15 times
  (CT:21, TD:81): one draw of distinct objects for all of its slots (``np.random.choice(...,
  replace=False)``, TD:82), filled in slot order (TD:87-97). A slot's word is labelled with the
  slot's label, every other word ``other`` (TD:86-97).
* Sub-tokens: only the first sub-token of a word carries its label, the others and the special
  tokens get -100 (TD:104-128).

Departures (each a setting; the first four are what the reference leaves unreproducible or
unmeasured):

1. The draws are seeded (``seed``); the reference draws from numpy's global state, unseeded.
2. The objects are sorted (``sort_objects``); the reference draws from ``list(set(...))``, whose
   order changes with Python's string hash seed, so even a seeded draw would not repeat.
   ``sort_objects: false`` keeps the file order (first occurrence of each name).
3. A held-out split: a seeded fraction of the distinct template texts is held out whole (the
   tagger never sees those phrasings), and a fraction of the remaining sentences too. Duplicate
   templates (106 of the 636 repeat another's text) go to one side together, so an "unseen"
   template is really unseen. The reference trains and evaluates on the same sentences (TT:47-49).
4. ``object_words``: ``each`` (default) splits an object name into words like any other text
   and labels every word with the slot's label, so training sees the same word units as
   inference (RC:80 splits the query text with the same function, and the phrase merging of
   RG:43-57 needs every word of "watering can" tagged). ``first`` is the reference: the whole
   name replaces the slot as one word (TD:90), the tokenizer splits it, and only its first
   sub-token is labelled, so "can" in "watering can" is never a training target.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossmodal.errors import CrossmodalError, DataFormatError

ADD, REMOVE, OTHER = "add", "remove", "other"
# The reference's label ids come from sklearn's LabelEncoder over its tag strings (TD:148-152):
# sorted, '<negative_object>' = 0, '<positive_object>' = 1, 'other' = 2 (also RC:6).
LABELS: tuple[str, ...] = (REMOVE, ADD, OTHER)
LABEL2ID: dict[str, int] = {label: i for i, label in enumerate(LABELS)}
ADD_SLOT, REMOVE_SLOT = "<positive_object>", "<negative_object>"
SLOT_LABELS = {ADD_SLOT: ADD, REMOVE_SLOT: REMOVE}
# A checkpoint trained by the reference names its labels by the slot markers.
REFERENCE_LABEL_NAMES = {ADD_SLOT: ADD, REMOVE_SLOT: REMOVE, OTHER: OTHER}
IGNORE = -100  # the label id cross-entropy ignores (PyTorch's and transformers' convention)
OBJECT_WORD_MODES = ("each", "first")
TRAIN, HELDOUT = "train", "heldout"

# TD:16 and RC:27, character for character (the doubled '"' included).
PUNCTUATION = ',.?!;:()[]{}""\'`@#$%^&*+=|\\/<>-\u2014\u2013'


def normalise_text(text: str) -> str:
    """Lower-case and collapse whitespace, as the reference does to templates (TD:78) and to
    query texts (RC:80)."""
    return " ".join(text.lower().split())


def split_words(sentence: str) -> list[str]:
    """The reference's word splitter (TD:11-66, RC:22-77): whitespace separates words, each
    punctuation character is a word of its own, slot markers stay whole."""
    words: list[str] = []
    current = ""
    i = 0
    while i < len(sentence):
        marker = next((m for m in (ADD_SLOT, REMOVE_SLOT) if sentence.startswith(m, i)), None)
        if marker is not None:
            if current:
                words.append(current)
                current = ""
            words.append(marker)
            i += len(marker)
            continue
        ch = sentence[i]
        if ch in PUNCTUATION:
            if current:
                words.append(current)
                current = ""
            words.append(ch)
        elif ch.isspace():
            if current:
                words.append(current)
                current = ""
        else:
            current += ch
        i += 1
    if current:
        words.append(current)
    return words


# --- inputs -----------------------------------------------------------------------------------


def read_templates(path: str | Path) -> list[str]:
    """The template texts of the reference's prompt_templates.json, in file order."""
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path}: template file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: malformed JSON ({exc})") from exc
    if not isinstance(records, list):
        raise DataFormatError(f"{path}: expected a JSON list of {{'template': ...}} records")
    templates = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping) or not isinstance(record.get("template"), str):
            raise DataFormatError(f"{path}: record {i} has no 'template' string: {record!r}")
        templates.append(record["template"])
    return templates


def read_objects(path: str | Path, *, sort: bool) -> list[str]:
    """Object names, lower-cased, stripped and de-duplicated (TD:68-73); sorted, or in file order
    of first occurrence. Blank lines separate nothing and are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path}: object list not found") from exc
    names = [line.strip().lower() for line in lines if line.strip()]
    unique = list(dict.fromkeys(names))
    return sorted(unique) if sort else unique


# --- sentences --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaggerSentence:
    """One synthesised sentence: its words and their labels, and where it came from."""

    words: tuple[str, ...]
    labels: tuple[str, ...]
    template_id: int  # position of the template in the template file
    template_group: int  # id of the distinct normalised template text (duplicates share it)
    draw: int
    split: str = TRAIN
    template_seen: bool = True  # False when the template's text is held out whole

    @property
    def text(self) -> str:
        return " ".join(self.words)


def _fill(words: list[str], objects: Sequence[str], object_words: str) -> tuple[list, list]:
    out_words: list[str] = []
    out_labels: list[str] = []
    filled = iter(objects)
    for word in words:
        label = SLOT_LABELS.get(word)
        if label is None:
            out_words.append(word)
            out_labels.append(OTHER)
        elif object_words == "first":
            out_words.append(next(filled))
            out_labels.append(label)
        else:
            parts = split_words(next(filled))
            out_words += parts
            out_labels += [label] * len(parts)
    return out_words, out_labels


def synthesise(
    templates: Sequence[str],
    objects: Sequence[str],
    *,
    draws_per_template: int,
    seed: int,
    object_words: str,
) -> list[TaggerSentence]:
    """Every template filled ``draws_per_template`` times with distinct objects (TD:75-102).

    One seeded generator serves all draws, template by template in file order, so the same
    inputs and seed give the same sentences on every machine.
    """
    if object_words not in OBJECT_WORD_MODES:
        raise CrossmodalError(
            f"object_words {object_words!r}: choose one of {list(OBJECT_WORD_MODES)} "
            "('first' is the reference's labelling)"
        )
    rng = np.random.default_rng(seed)
    groups: dict[str, int] = {}
    sentences = []
    for template_id, template in enumerate(templates):
        normalised = normalise_text(template)
        group = groups.setdefault(normalised, len(groups))
        words = split_words(normalised)
        n_slots = sum(w in SLOT_LABELS for w in words)
        if n_slots > len(objects):
            raise CrossmodalError(
                f"template {template_id} has {n_slots} slots but only {len(objects)} objects "
                "are listed; give a longer object list"
            )
        for draw in range(draws_per_template):
            picked = [objects[i] for i in rng.choice(len(objects), size=n_slots, replace=False)]
            filled, labels = _fill(words, picked, object_words)
            sentences.append(TaggerSentence(tuple(filled), tuple(labels), template_id, group, draw))
    return sentences


def split_heldout(
    sentences: Sequence[TaggerSentence],
    *,
    heldout_templates: float,
    heldout_sentences: float,
    seed: int,
) -> list[TaggerSentence]:
    """Mark a held-out split: ``heldout_templates`` of the distinct template texts whole (unseen
    phrasings), then ``heldout_sentences`` of the remaining sentences. Both fractions 0 is the
    reference (no held-out data)."""
    for name, value in (
        ("heldout_templates", heldout_templates),
        ("heldout_sentences", heldout_sentences),
    ):
        if not 0.0 <= value < 1.0:
            raise CrossmodalError(f"{name} = {value}: give a fraction in [0, 1)")
    rng = np.random.default_rng(seed)
    groups = sorted({s.template_group for s in sentences})
    n_unseen = round(heldout_templates * len(groups))
    unseen = {groups[i] for i in rng.permutation(len(groups))[:n_unseen]}
    seen_ids = [i for i, s in enumerate(sentences) if s.template_group not in unseen]
    n_held = round(heldout_sentences * len(seen_ids))
    held = {seen_ids[i] for i in rng.permutation(len(seen_ids))[:n_held]}
    out = []
    for i, s in enumerate(sentences):
        is_unseen = s.template_group in unseen
        split = HELDOUT if is_unseen or i in held else TRAIN
        out.append(dataclasses.replace(s, split=split, template_seen=not is_unseen))
    return out


# --- sub-token labels -------------------------------------------------------------------------


def first_subtoken_labels(word_ids: Sequence[int | None], labels: Sequence[str]) -> list[int]:
    """Label ids per sub-token: the word's label on its first sub-token, -100 on the others and
    on special and padding tokens (TD:113-127)."""
    out: list[int] = []
    previous = None
    for word in word_ids:
        if word is None or word == previous:
            out.append(IGNORE)
        else:
            out.append(LABEL2ID[labels[word]])
        previous = word
    return out


def encode_sentences(
    tokenizer: Any, sentences: Sequence[TaggerSentence], *, max_length: int
) -> dict[str, Any]:
    """Tokenise pre-split words (``is_split_into_words``, TD:105-111) and attach first-sub-token
    labels. Padded to the longest sentence of the batch; returns PyTorch tensors."""
    enc = tokenizer(
        [list(s.words) for s in sentences],
        is_split_into_words=True,
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    import torch

    labels = [
        first_subtoken_labels(enc.word_ids(batch_index=i), s.labels)
        for i, s in enumerate(sentences)
    ]
    enc["labels"] = torch.tensor(labels, dtype=torch.long)
    return enc


# --- files ------------------------------------------------------------------------------------


def write_sentences(
    path: str | Path, sentences: Sequence[TaggerSentence], provenance: dict[str, Any]
) -> None:
    """The sentences as Parquet: words and labels as lists, one row per sentence."""
    import pyarrow as pa

    from crossmodal.io import write_table

    table = pa.table(
        {
            "sentence_id": pa.array(range(len(sentences)), pa.int64()),
            "template_id": pa.array([s.template_id for s in sentences], pa.int64()),
            "template_group": pa.array([s.template_group for s in sentences], pa.int64()),
            "draw": pa.array([s.draw for s in sentences], pa.int64()),
            "split": pa.array([s.split for s in sentences], pa.string()),
            "template_seen": pa.array([s.template_seen for s in sentences], pa.bool_()),
            "words": pa.array([list(s.words) for s in sentences], pa.list_(pa.string())),
            "labels": pa.array([list(s.labels) for s in sentences], pa.list_(pa.string())),
        }
    )
    write_table(path, table, provenance)


def read_sentences(path: str | Path, split: str | None = None) -> list[TaggerSentence]:
    """Sentences written by :func:`write_sentences`, all or one split."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    out = []
    for row in rows:
        if split is not None and row["split"] != split:
            continue
        bad = set(row["labels"]) - set(LABELS)
        if bad or len(row["words"]) != len(row["labels"]):
            raise DataFormatError(
                f"{path}: sentence {row['sentence_id']} has unknown labels {sorted(bad)} or "
                "words and labels of different lengths; regenerate the tagger data"
            )
        out.append(
            TaggerSentence(
                words=tuple(row["words"]),
                labels=tuple(row["labels"]),
                template_id=row["template_id"],
                template_group=row["template_group"],
                draw=row["draw"],
                split=row["split"],
                template_seen=row["template_seen"],
            )
        )
    return out


@dataclass(frozen=True)
class TaggerDataSettings:
    """How the tagger's sentences are made. No defaults here: the config schema holds them;
    :data:`REFERENCE_DATA_SETTINGS` are the reference's, :data:`DEFAULT_DATA_SETTINGS` the
    suggested defaults."""

    draws_per_template: int  # CT:21
    seed: int
    sort_objects: bool
    object_words: str  # "each" or "first" (the reference)
    heldout_templates: float
    heldout_sentences: float


# The reference's choices where a setting can express them (its draws are unseeded, TD:82).
REFERENCE_DATA_SETTINGS = TaggerDataSettings(
    draws_per_template=15,  # CT:21
    seed=0,
    sort_objects=False,  # list(set(...)), TD:73
    object_words="first",  # TD:90
    heldout_templates=0.0,  # TT:47-49 evaluates on the training set
    heldout_sentences=0.0,
)
# What the config defaults to: the reference plus the departures listed in the module docstring.
DEFAULT_DATA_SETTINGS = dataclasses.replace(
    REFERENCE_DATA_SETTINGS,
    sort_objects=True,
    object_words="each",
    heldout_templates=0.1,
    heldout_sentences=0.1,
)


def make_tagger_data(
    templates_path: str | Path, objects_path: str | Path, settings: TaggerDataSettings
) -> list[TaggerSentence]:
    """Read the two lists, synthesise and split: the whole data stage as one call."""
    templates = read_templates(templates_path)
    objects = read_objects(objects_path, sort=settings.sort_objects)
    sentences = synthesise(
        templates,
        objects,
        draws_per_template=settings.draws_per_template,
        seed=settings.seed,
        object_words=settings.object_words,
    )
    return split_heldout(
        sentences,
        heldout_templates=settings.heldout_templates,
        heldout_sentences=settings.heldout_sentences,
        seed=settings.seed,
    )


def run_tagger_data(job) -> list[TaggerSentence]:
    """The ``cir-tagger-data`` stage (a :class:`crossmodal.stages.CirTaggerData` job)."""
    from crossmodal.jobs import settings_from_dict

    settings = settings_from_dict(TaggerDataSettings, job.settings, "cir tagger data settings")
    sentences = make_tagger_data(job.templates, job.objects, settings)
    provenance = {
        "stage": "cir-tagger-data",
        "templates": str(job.templates),
        "objects": str(job.objects),
        "settings": dataclasses.asdict(settings),
    }
    write_sentences(job.sentences, sentences, provenance)
    return sentences
