"""The edit tagger: DistilBERT token classification, its training, inference and F1.

What the reference does (``TT`` = src/token_classification/train.py, ``MF`` =
src/model_factory.py, ``RC`` = src/retrieval_model/token_classifier.py, ``RG`` =
src/retrieval_model/generate_embeds.py, ``CT`` = config/token_cls_cfg.yaml):

* Model: ``DistilBertForTokenClassification.from_pretrained("distilbert-base-uncased",
  num_labels=3)`` (CT:2, MF:61-71), labels ``<negative_object>`` 0, ``<positive_object>`` 1,
  ``other`` 2 (RC:6); here ``remove``, ``add``, ``other`` with the same ids.
* Training: transformers' ``Trainer`` (TT:31-53) with 20 epochs, batch 1024, 500 warm-up steps,
  weight decay 0.01 (CT:6-10) and Trainer defaults for everything else: AdamW at learning rate
  5e-5 (betas 0.9/0.999, eps 1e-8), no decay on biases and LayerNorm weights, a linear schedule
  after the warm-up, gradient clipping at norm 1.0, shuffling seeded 42. With 9,540 sentences
  that is 10 steps an epoch, 200 in all, so the 500-step warm-up never ends: the learning rate
  climbs linearly to 2e-5 and training stops there. :func:`train_tagger` is that loop written
  out (Trainer needs ``accelerate``, which the package does not depend on) with the same
  optimizer groups and schedule (``get_linear_schedule_with_warmup``).
* Inference (RC:79-110): the query is lower-cased, whitespace-collapsed and split into words
  (:func:`crossmodal.cir.tagger_data.split_words`), tokenised with ``is_split_into_words`` and
  ``max_length=128``; each word takes the argmax label of its first sub-token.
* Phrases (RG:43-57): consecutive words with the same add (or remove) label are one phrase,
  joined by spaces; each phrase becomes ``"a photo of a {phrase}."``. Joining by spaces is
  harmless for CLIP's tokenizer, which splits punctuation off words anyway ("t - shirt" and
  "t-shirt" give the same tokens).

Departures:

1. Evaluation on a held-out split (sentences of templates never trained on, and unseen draws
   of seen templates); the reference evaluates on its training set (TT:47-49).
2. The metric. :func:`tagger_scores` reports ``token_f1``: micro-averaged F1 over the add and
   remove labels at the word level (each word's first sub-token, the unit the reference labels
   and its ``classification_report`` counts), with ``other`` as the negative class, so the
   ~80% of words that are ``other`` cannot inflate it. It also reports ``phrase_f1``: the
   seqeval-style entity F1 over (label, phrase) pairs under IO tags, i.e. over exactly the
   phrases :func:`merge_phrases` would send to the text encoder; one wrong word spoils a
   phrase, so it is the stricter number and the one that predicts retrieval quality.
3. A query longer than ``max_length`` sub-tokens is an error naming the query; the reference
   truncates it and silently drops the words past the limit (RC:11-16, RC:104-110).
4. Training is seeded and can resume from a per-epoch checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crossmodal.cir.checkpoint import (
    atomic_torch_save,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from crossmodal.cir.tagger_data import (
    ADD,
    LABEL2ID,
    LABELS,
    OTHER,
    REFERENCE_LABEL_NAMES,
    REMOVE,
    TaggerSentence,
    encode_sentences,
    normalise_text,
    split_words,
)
from crossmodal.errors import CrossmodalError

log = logging.getLogger(__name__)

PROMPT = "a photo of a {}."  # RG:49, RG:54


# --- the model --------------------------------------------------------------------------------


@dataclass
class Tagger:
    """A token-classification model, its (fast) tokenizer and its label names."""

    model: Any
    tokenizer: Any
    id2label: dict[int, str]
    device: torch.device

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        return folder


def _label_names(config: Any, source: str) -> dict[int, str]:
    """The model's id -> label, in this package's names; a reference checkpoint's slot-marker
    names are accepted."""
    raw = {int(i): str(name) for i, name in config.id2label.items()}
    names = {i: REFERENCE_LABEL_NAMES.get(name, name) for i, name in raw.items()}
    if sorted(names.values()) != sorted(LABELS):
        raise CrossmodalError(
            f"{source}: the model's labels are {sorted(raw.values())}, expected {list(LABELS)} "
            "(or the reference's <positive_object>, <negative_object>, other); train the "
            "tagger with `crossmodal cir-train-tagger` first"
        )
    return names


def _check_fast(tokenizer: Any, source: str) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise CrossmodalError(
            f"{source}: the tokenizer is not a fast (Rust) tokenizer, so words cannot be mapped "
            "to sub-tokens; save the model folder with a tokenizer.json"
        )


def init_tagger(
    pretrained: str | Path, revision: str | None = None, device: str = "cpu", seed: int = 0
) -> Tagger:
    """A token classifier with a fresh three-label head on a pretrained encoder (MF:61-71):
    a hub id such as ``distilbert-base-uncased`` (pin ``revision``) or a local folder. The
    head's random initialisation is seeded (the reference's is not: Trainer seeds only after
    the model exists), leaving the global random state as it was."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    id2label = dict(enumerate(LABELS))
    tokenizer = AutoTokenizer.from_pretrained(str(pretrained), revision=revision)
    _check_fast(tokenizer, str(pretrained))
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            str(pretrained),
            revision=revision,
            num_labels=len(LABELS),
            id2label=id2label,
            label2id=dict(LABEL2ID),
            ignore_mismatched_sizes=True,
        )
    finally:
        torch.random.set_rng_state(state)
    dev = torch.device(device)
    return Tagger(model.to(dev), tokenizer, id2label, dev)


def load_tagger(folder: str | Path, device: str = "cpu") -> Tagger:
    """A trained tagger folder (RC:113-118), or a checkpoint the reference trained."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CrossmodalError(
            f"{folder}: no tagger here (config.json missing); train one with "
            "`crossmodal cir-train-tagger`"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    _check_fast(tokenizer, str(folder))
    model = AutoModelForTokenClassification.from_pretrained(folder)
    dev = torch.device(device)
    return Tagger(model.to(dev).eval(), tokenizer, _label_names(model.config, str(folder)), dev)


def build_tiny_tagger(folder: str | Path, corpus: Iterable[str], *, seed: int) -> Path:
    """A DistilBERT token classifier with random weights and a WordPiece vocabulary made here
    from ``corpus`` (tests and the demo; no download). Loads with :func:`load_tagger` and
    :func:`init_tagger` like a real checkpoint.

    The vocabulary is every word of the corpus plus every character as a word start and as a
    continuation (``##c``), sorted: the same corpus always gives the same token ids, which a
    trained WordPiece vocabulary does not promise (its ties are broken in hash order), and any
    word, seen or not, still splits into pieces.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import (
        DistilBertConfig,
        DistilBertForTokenClassification,
        PreTrainedTokenizerFast,
    )

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: set[str] = set()
    for text in corpus:
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    chars = {c for w in words for c in w}
    tokens = list(
        dict.fromkeys([*specials, *sorted(words | chars), *sorted("##" + c for c in chars)])
    )
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=64,
        n_layers=2,
        n_heads=2,
        hidden_dim=128,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id=dict(LABEL2ID),
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = DistilBertForTokenClassification(config)
    finally:
        torch.random.set_rng_state(state)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaggerTrainSettings:
    """The tagger's training run. No defaults: the config schema holds them;
    :data:`REFERENCE_TRAIN_SETTINGS` are the reference's."""

    epochs: int
    batch_size: int
    learning_rate: float
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    seed: int
    max_length: int


REFERENCE_TRAIN_SETTINGS = TaggerTrainSettings(
    epochs=20,  # CT:6
    batch_size=1024,  # CT:7
    learning_rate=5e-5,  # TrainingArguments' default (CT sets none)
    warmup_steps=500,  # CT:9
    weight_decay=0.01,  # CT:10
    max_grad_norm=1.0,  # TrainingArguments' default
    seed=42,  # TrainingArguments' default
    max_length=128,  # RC:79, RG:41 (training truncates at the tokenizer's 512)
)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainer's groups: no weight decay on biases and on LayerNorm parameters."""
    no_decay: set[str] = set()
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if isinstance(module, torch.nn.LayerNorm) or name == "bias":
                no_decay.add(full)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [
        {"params": [p for n, p in params if n not in no_decay], "weight_decay": weight_decay},
        {"params": [p for n, p in params if n in no_decay], "weight_decay": 0.0},
    ]


def train_tagger(
    tagger: Tagger,
    sentences: Sequence[TaggerSentence],
    settings: TaggerTrainSettings,
    *,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train in place; returns the mean loss of every epoch. With ``checkpoint``, the state is
    saved after every epoch and a rerun resumes from the last one saved."""
    from transformers import get_linear_schedule_with_warmup

    if not sentences:
        raise CrossmodalError("no training sentences: check the tagger data's train split")
    model = tagger.model
    steps_per_epoch = math.ceil(len(sentences) / settings.batch_size)
    optimizer = torch.optim.AdamW(
        _param_groups(model, settings.weight_decay),
        lr=settings.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-8,
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, settings.warmup_steps, settings.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(settings.seed)
    losses: list[float] = []
    start = 0
    state = load_checkpoint(checkpoint, tagger.device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"].cpu())
        set_rng_state(state["torch_rng"])
        losses, start = list(state["losses"]), int(state["epoch"])
        log.info("tagger: resuming after epoch %d from %s", start, checkpoint)
    else:
        torch.manual_seed(settings.seed)  # dropout masks
    for epoch in range(start, settings.epochs):
        model.train()
        order = torch.randperm(len(sentences), generator=generator).tolist()
        total = 0.0
        for b in range(steps_per_epoch):
            batch = [
                sentences[i] for i in order[b * settings.batch_size : (b + 1) * settings.batch_size]
            ]
            enc = encode_sentences(tagger.tokenizer, batch, max_length=settings.max_length)
            enc = {k: v.to(tagger.device) for k, v in enc.items()}
            loss = model(**enc).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
        losses.append(total / steps_per_epoch)
        log.info("tagger epoch %d/%d: loss %.4f", epoch + 1, settings.epochs, losses[-1])
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
        if checkpoint is not None:
            atomic_torch_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": rng_state(),
                    "losses": losses,
                    "epoch": epoch + 1,
                },
                checkpoint,
            )
    model.eval()
    return losses


# --- inference --------------------------------------------------------------------------------


def query_words(text: str) -> list[str]:
    """A query text as the tagger's words (RC:80)."""
    return split_words(normalise_text(text))


@torch.inference_mode()
def predict_word_labels(
    tagger: Tagger,
    word_lists: Sequence[Sequence[str]],
    *,
    max_length: int = 128,
    batch_size: int = 256,
) -> list[list[str]]:
    """One label per word: the argmax of the word's first sub-token (RC:90-110).

    A word that yields no sub-token at all (only characters the tokenizer's normaliser deletes,
    such as control characters) carries no text and is labelled ``other``.
    """
    tagger.model.eval()
    out: list[list[str]] = []
    for start in range(0, len(word_lists), batch_size):
        batch = [list(w) for w in word_lists[start : start + batch_size]]
        enc = tagger.tokenizer(
            batch, is_split_into_words=True, padding=True, truncation=False, return_tensors="pt"
        )
        if enc["input_ids"].shape[1] > max_length:
            lengths = enc["attention_mask"].sum(dim=1).tolist()
            worst = max(range(len(batch)), key=lambda i: lengths[i])
            raise CrossmodalError(
                f"query {' '.join(batch[worst])[:120]!r} is {lengths[worst]} sub-tokens long, "
                f"over the tagger's max_length {max_length}; shorten it or raise max_length "
                "(at most the model's position embeddings)"
            )
        logits = tagger.model(
            input_ids=enc["input_ids"].to(tagger.device),
            attention_mask=enc["attention_mask"].to(tagger.device),
        ).logits
        predicted = logits.argmax(dim=-1).cpu().tolist()
        for i, words in enumerate(batch):
            labels = [OTHER] * len(words)
            seen: set[int] = set()
            for pos, word in enumerate(enc.word_ids(batch_index=i)):
                if word is not None and word not in seen:
                    seen.add(word)
                    labels[word] = tagger.id2label[predicted[i][pos]]
            out.append(labels)
    return out


def merge_phrases(words: Sequence[str], labels: Sequence[str]) -> tuple[list[str], list[str]]:
    """(add phrases, remove phrases): consecutive words with the same add or remove label are one
    phrase, joined by spaces, in order of appearance (RG:43-57)."""
    if len(words) != len(labels):
        raise ValueError(f"{len(words)} words but {len(labels)} labels")
    phrases: dict[str, list[str]] = {ADD: [], REMOVE: []}
    previous = None
    for word, label in zip(words, labels, strict=True):
        if label in phrases:
            if label == previous:
                phrases[label][-1] += f" {word}"
            else:
                phrases[label].append(word)
        previous = label
    return phrases[ADD], phrases[REMOVE]


def prompts(phrases: Sequence[str], template: str = PROMPT) -> list[str]:
    """Each phrase as a CLIP prompt, ``"a photo of a {phrase}."`` (RG:49)."""
    return [template.format(p) for p in phrases]


@dataclass(frozen=True)
class ParsedEdit:
    """What the tagger read in one query text."""

    words: tuple[str, ...]
    labels: tuple[str, ...]
    add: tuple[str, ...]
    remove: tuple[str, ...]


def parse_edits(
    tagger: Tagger, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 256
) -> list[ParsedEdit]:
    """Tag each query text and merge its words into add and remove phrases."""
    word_lists = [query_words(t) for t in texts]
    labels = predict_word_labels(tagger, word_lists, max_length=max_length, batch_size=batch_size)
    out = []
    for words, labs in zip(word_lists, labels, strict=True):
        add, remove = merge_phrases(words, labs)
        out.append(ParsedEdit(tuple(words), tuple(labs), tuple(add), tuple(remove)))
    return out


# --- scores -----------------------------------------------------------------------------------


def _f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def token_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Word-level precision, recall and F1 over the add and remove labels (micro-averaged, with
    ``other`` the negative class), per label, and plain accuracy over all words."""
    counts = Counter()
    n_words = n_right = 0
    for g_sent, p_sent in zip(gold, pred, strict=True):
        if len(g_sent) != len(p_sent):
            raise ValueError(f"{len(g_sent)} gold labels but {len(p_sent)} predicted")
        for g, p in zip(g_sent, p_sent, strict=True):
            n_words += 1
            n_right += g == p
            if g == p and g != OTHER:
                counts[g, "tp"] += 1
                continue
            if p != OTHER:
                counts[p, "fp"] += 1
            if g != OTHER:
                counts[g, "fn"] += 1
    out: dict[str, float] = {"accuracy": n_right / n_words if n_words else 0.0}
    for label in (ADD, REMOVE):
        _, _, out[f"{label}_f1"] = _f1(
            counts[label, "tp"], counts[label, "fp"], counts[label, "fn"]
        )
    tp, fp, fn = (sum(counts[lab, k] for lab in (ADD, REMOVE)) for k in ("tp", "fp", "fn"))
    out["precision"], out["recall"], out["token_f1"] = _f1(tp, fp, fn)
    return out


def phrase_scores(
    words: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Entity-level F1 over (label, phrase) pairs as :func:`merge_phrases` builds them (seqeval
    with IO tags: a phrase counts only when every one of its words is right)."""
    tp = fp = fn = 0
    for w, g, p in zip(words, gold, pred, strict=True):
        g_add, g_rem = merge_phrases(w, g)
        p_add, p_rem = merge_phrases(w, p)
        gold_set = Counter([(ADD, x) for x in g_add] + [(REMOVE, x) for x in g_rem])
        pred_set = Counter([(ADD, x) for x in p_add] + [(REMOVE, x) for x in p_rem])
        hit = sum((gold_set & pred_set).values())
        tp += hit
        fp += sum(pred_set.values()) - hit
        fn += sum(gold_set.values()) - hit
    precision, recall, f1 = _f1(tp, fp, fn)
    return {"phrase_precision": precision, "phrase_recall": recall, "phrase_f1": f1}


def tagger_scores(
    tagger: Tagger, sentences: Sequence[TaggerSentence], *, max_length: int = 128
) -> dict[str, Any]:
    """Token and phrase F1 on labelled sentences, overall and by seen / unseen template."""
    predicted = predict_word_labels(tagger, [s.words for s in sentences], max_length=max_length)

    def score(keep: Callable[[TaggerSentence], bool]) -> dict[str, float]:
        idx = [i for i, s in enumerate(sentences) if keep(s)]
        gold = [sentences[i].labels for i in idx]
        pred = [predicted[i] for i in idx]
        words = [sentences[i].words for i in idx]
        return {
            "n_sentences": len(idx),
            **token_scores(gold, pred),
            **phrase_scores(words, gold, pred),
        }

    return {
        "all": score(lambda s: True),
        "seen_templates": score(lambda s: s.template_seen),
        "unseen_templates": score(lambda s: not s.template_seen),
    }


# --- the stage --------------------------------------------------------------------------------


def run_train_tagger(job) -> dict[str, Any]:
    """The ``cir-train-tagger`` stage (a :class:`crossmodal.stages.CirTrainTagger` job): train on
    the train split, score the held-out split (the train split when nothing is held out, as
    the reference does), save the model folder and the scores."""
    from crossmodal.cir.tagger_data import HELDOUT, TRAIN, read_sentences
    from crossmodal.encoders.base import resolve_device
    from crossmodal.io import write_json
    from crossmodal.jobs import settings_from_dict

    settings = settings_from_dict(TaggerTrainSettings, job.settings, "cir tagger settings")
    device = str(resolve_device(job.device))
    if (job.base_model is None) == (job.pretrained is None):
        raise CrossmodalError(
            "cir-train-tagger: give exactly one of --pretrained (a hub id such as "
            "distilbert-base-uncased) and --base-model (a file in a local model folder)"
        )
    base = Path(job.base_model).parent if job.base_model is not None else job.pretrained
    tagger = init_tagger(base, revision=job.revision, device=device, seed=settings.seed)
    train = read_sentences(job.sentences, TRAIN)
    heldout = read_sentences(job.sentences, HELDOUT)
    from crossmodal.cir.checkpoint import drop_checkpoint, file_sha256, run_checkpoint

    identity = {
        "settings": dataclasses.asdict(settings),
        "sentences": file_sha256(job.sentences),
        "base": file_sha256(job.base_model) if job.base_model is not None else str(base),
        "revision": job.revision,
    }
    checkpoint = run_checkpoint(job.checkpoint, identity)
    losses = train_tagger(tagger, train, settings, checkpoint=checkpoint)
    scored_on = HELDOUT if heldout else TRAIN
    scores = tagger_scores(tagger, heldout or train, max_length=settings.max_length)
    tagger.save(Path(job.model).parent)
    result = {
        "scored_on": scored_on,
        "tagger_f1": scores["all"]["token_f1"],
        "scores": scores,
        "epoch_losses": losses,
        "n_train": len(train),
        "n_heldout": len(heldout),
        "settings": dataclasses.asdict(settings),
        "base": str(base),
        "revision": job.revision,
    }
    write_json(job.scores, result)
    drop_checkpoint(checkpoint)
    return result
