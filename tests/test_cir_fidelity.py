"""Against the reference's own code: its word splitter, phrase merging, composition loop and
loss, copied from safinal/compositional-image-retrieval (MIT) at commit a0c795f and run on
random inputs next to the package's versions."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crossmodal.cir.compose import (
    REFERENCE_COMPOSE,
    OneQueryPerTargetSampler,
    compose_queries,
    edit_sums,
)
from crossmodal.cir.projection import info_nce
from crossmodal.cir.tagger import merge_phrases, prompts
from crossmodal.cir.tagger_data import ADD, OTHER, REMOVE, split_words


def reference_split_sentence(sentence):  # src/token_classification/dataset.py:11-66
    special_tokens = ["<positive_object>", "<negative_object>"]
    punctuation = ',.?!;:()[]{}""\'`@#$%^&*+=|\\/<>-\u2014\u2013'
    result = []
    current_word = ""
    i = 0
    while i < len(sentence):
        found_special = False
        for token in special_tokens:
            if sentence[i:].startswith(token):
                if current_word:
                    result.append(current_word)
                    current_word = ""
                result.append(token)
                i += len(token)
                found_special = True
                break
        if found_special:
            continue
        if sentence[i] in punctuation:
            if current_word:
                result.append(current_word)
                current_word = ""
            result.append(sentence[i])
        elif sentence[i].isspace():
            if current_word:
                result.append(current_word)
                current_word = ""
        else:
            current_word += sentence[i]
        i += 1
    if current_word:
        result.append(current_word)
    return result


def reference_phrases(predictions):  # src/retrieval_model/generate_embeds.py:43-57
    neg, pos, last_tag = [], [], ""
    for token, label in predictions:
        if label == "<positive_object>":
            if last_tag != "<positive_object>":
                pos.append(f"a photo of a {token}.")
            else:
                pos[-1] = pos[-1][:-1] + f" {token}."
        elif label == "<negative_object>":
            if last_tag != "<negative_object>":
                neg.append(f"a photo of a {token}.")
            else:
                neg[-1] = neg[-1][:-1] + f" {token}."
        last_tag = label
    return pos, neg


class ReferenceInfoNCELoss(torch.nn.Module):  # src/retrieval_model/loss.py:4-36
    def __init__(self, temperature=0.07):
        super().__init__()
        self.temperature = temperature
        self.criterion = torch.nn.CrossEntropyLoss()

    def forward(self, query_embeds, database_embeds):
        query_embeds = torch.nn.functional.normalize(query_embeds, dim=1)
        database_embeds = torch.nn.functional.normalize(database_embeds, dim=1)
        similarity_matrix = torch.matmul(query_embeds, database_embeds.T) / self.temperature
        labels = torch.arange(len(query_embeds)).to(query_embeds.device)
        loss_q2d = self.criterion(similarity_matrix, labels)
        loss_d2q = self.criterion(similarity_matrix.T, labels)
        return (loss_q2d + loss_d2q) / 2


PIECES = list("ab c-.,(!'\u2014\t\n") + ["<positive_object>", "<negative_object>", "<x>"]
TEXT = st.lists(st.sampled_from(PIECES), max_size=30).map("".join)
REF_NAMES = {ADD: "<positive_object>", REMOVE: "<negative_object>", OTHER: "other"}


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_split_words_equals_the_reference(text: str) -> None:
    assert split_words(text) == reference_split_sentence(text)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b-c", "d"]), st.sampled_from([ADD, REMOVE, OTHER])))
)
def test_phrases_equal_the_reference(tagged: list[tuple[str, str]]) -> None:
    words = [w for w, _ in tagged]
    labels = [lab for _, lab in tagged]
    adds, removes = merge_phrases(words, labels)
    ref_pos, ref_neg = reference_phrases([(w, REF_NAMES[lab]) for w, lab in tagged])
    assert prompts(adds) == ref_pos and prompts(removes) == ref_neg


def test_composition_equals_the_reference_loop() -> None:
    """generate_embeds.py:58-64: per query, += each add text, -= each remove text, normalise."""
    rng = np.random.default_rng(0)
    image = torch.tensor(rng.normal(size=(4, 8)), dtype=torch.float32)
    vocab = {f"a photo of a {w}.": torch.tensor(rng.normal(size=8) * 5, dtype=torch.float32)
             for w in "abcde"}  # fmt: skip
    add = [["a photo of a a.", "a photo of a b."], [], ["a photo of a c."], ["a photo of a e."]]
    remove = [["a photo of a d."], ["a photo of a a."], [], ["a photo of a e."]]
    expected = image.clone()
    for j in range(4):
        for p in add[j]:
            expected[j] += vocab[p]
        for p in remove[j]:
            expected[j] -= vocab[p]
    expected = torch.nn.functional.normalize(expected, dim=1, p=2)
    add_sum, remove_sum = edit_sums(add, remove, vocab, 8)
    got = compose_queries(image, add_sum, remove_sum, REFERENCE_COMPOSE)
    assert torch.allclose(got, expected, atol=1e-6)


def test_info_nce_equals_the_reference_loss() -> None:
    gen = torch.Generator().manual_seed(0)
    q, t = torch.randn(16, 32, generator=gen), torch.randn(16, 32, generator=gen)
    assert torch.allclose(info_nce(q, t, 0.07), ReferenceInfoNCELoss(0.07)(q, t), atol=1e-6)


class ReferenceUniqueTargetImageBatchSampler:  # src/retrieval_model/dataset.py:64-121
    """The reference's sampler without its ``if self.shuffle:`` branches (run unshuffled here;
    shuffled, it draws from Python's global ``random`` and cannot be matched draw for draw)."""

    def __init__(self, dataset, batch_size, shuffle=True):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.target_to_indices = defaultdict(list)
        for idx in range(len(self.dataset)):
            target_image = self.dataset.annotations.iloc[idx]["target_image"]
            self.target_to_indices[target_image].append(idx)

    def __iter__(self):
        queues = [indices.copy() for indices in self.target_to_indices.values()]
        batch = []
        while any(queues):
            for queue in queues:
                if queue:
                    batch.append(queue.pop())
                    if len(batch) == self.batch_size:
                        yield batch
                        batch = []
        if batch:
            yield batch


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.integers(1, 9))
def test_unshuffled_reference_mode_batches_equal_the_reference(targets, batch_size) -> None:
    """Unshuffled, the reference's sampler is deterministic: the same batches, boundary
    duplicates included; the strict mode differs only where the reference repeats a target."""
    dataset = SimpleNamespace(annotations=pd.DataFrame({"target_image": targets}))
    reference = list(
        ReferenceUniqueTargetImageBatchSampler(_Sized(dataset, len(targets)), batch_size, False)
    )
    ours = OneQueryPerTargetSampler(targets, batch_size, seed=0, shuffle=False, mode="reference")
    assert list(ours) == reference
    strict = list(OneQueryPerTargetSampler(targets, batch_size, seed=0, shuffle=False))
    if all(len({targets[i] for i in b}) == len(b) for b in reference):
        assert strict == reference


class _Sized:
    def __init__(self, dataset, n: int) -> None:
        self.annotations, self.n = dataset.annotations, n

    def __len__(self) -> int:
        return self.n


def reference_tokenize_and_align_labels(samples, tokenizer, label2id):
    """src/token_classification/dataset.py:104-128."""
    tokenized_inputs = tokenizer(
        [sample["tokens"] for sample in samples],
        is_split_into_words=True,
        return_offsets_mapping=True,
        padding=True,
        truncation=True,
    )
    labels = []
    for i, sample in enumerate(samples):
        word_ids = tokenized_inputs.word_ids(batch_index=i)
        label_ids = []
        previous_word_idx = None
        for word_idx in word_ids:
            if word_idx is None:
                label_ids.append(-100)
            elif word_idx != previous_word_idx:
                label_ids.append(label2id[sample["labels"][word_idx]])
            else:
                label_ids.append(-100)
            previous_word_idx = word_idx
        labels.append(label_ids)
    tokenized_inputs["labels"] = labels
    return tokenized_inputs


def reference_predict(tokens, model, tokenizer, device, max_length=128):
    """src/retrieval_model/token_classifier.py:9-19 and 79-110, with the model's id2label."""
    tokens = reference_split_sentence(" ".join(tokens.lower().split()))
    encoding = tokenizer(
        tokens, is_split_into_words=True, return_tensors="pt", padding="max_length",
        truncation=True, max_length=max_length, return_offsets_mapping=True,
    )  # fmt: skip
    word_ids = encoding.word_ids(batch_index=0)
    input_ids = encoding["input_ids"].to(device)
    attention_mask = encoding["attention_mask"].to(device)
    with torch.no_grad():
        outputs = model(input_ids=input_ids, attention_mask=attention_mask)
    predictions = torch.argmax(outputs.logits, dim=-1).cpu().numpy()[0]
    tokens_decoded = tokenizer.convert_ids_to_tokens(input_ids.cpu().numpy()[0])
    labels = [model.config.id2label.get(pred, "O") for pred in predictions]
    aligned_predictions = []
    previous_word_idx = None
    for _token, label, word_idx in zip(tokens_decoded, labels, word_ids, strict=True):
        if word_idx is None:
            continue
        if word_idx != previous_word_idx:
            aligned_predictions.append((tokens[word_idx], label))
            previous_word_idx = word_idx
    return aligned_predictions


def test_sub_token_labels_and_predictions_equal_the_reference(tmp_path) -> None:
    from crossmodal.cir.tagger import build_tiny_tagger, init_tagger, parse_edits
    from crossmodal.cir.tagger_data import LABEL2ID, encode_sentences, synthesise

    templates = [
        "Add a <positive_object>, and remove the <negative_object>!",
        "Swap the <negative_object> for a <positive_object> (and a <positive_object>).",
    ]
    objects = ["watering can", "t-shirt", "lamp", "old clock", "dog"]
    sentences = synthesise(templates, objects, draws_per_template=5, seed=0, object_words="first")
    build_tiny_tagger(tmp_path, [s.text for s in sentences] + ["unseen wordz"], seed=0)
    tagger = init_tagger(tmp_path)
    ours = encode_sentences(tagger.tokenizer, sentences, max_length=512)["labels"].tolist()
    samples = [{"tokens": list(s.words), "labels": list(s.labels)} for s in sentences]
    ref = reference_tokenize_and_align_labels(samples, tagger.tokenizer, LABEL2ID)["labels"]
    assert ours == ref
    texts = [s.text for s in sentences] + ["Please ADD an unseen wordz-thing;   drop (the) dog."]
    parsed = parse_edits(tagger, texts)
    for text, edit in zip(texts, parsed, strict=True):
        expected = reference_predict(text, tagger.model, tagger.tokenizer, "cpu")
        assert list(zip(edit.words, edit.labels, strict=True)) == expected
