"""Compositional retrieval queries per second, end to end: the tagger, the text encoding, the
composition and the search, this package's batched path against the reference's per-query loop.

The reference (``encode_queries`` in src/retrieval_model/generate_embeds.py, ``predict`` in
src/retrieval_model/token_classifier.py, ``evaluate`` in src/retrieval_model/evaluate.py) tags
one query at a time (padded to 128 sub-tokens), encodes each phrase's prompt on its own, adds
or subtracts it, and ranks with a dense cosine-similarity matrix. Here: the tagger over batches
of queries (padded to the longest), each distinct prompt encoded once in batches, the sums, one
normalisation and an exact FAISS search. Both sides get the same raw query-image embeddings (the
image encoding is batched in both and not what differs) and the same database, tiny models on
the CPU (a random-weight tiny CLIP and a tiny DistilBERT tagger trained for a few epochs on the
demo world's edits). Trials alternate which side runs first; each pair gives a ratio.

The challenge's own limit (problem_description.pdf, "Key notices"): the whole evaluation of a
submission, query and database embeddings included, must finish within 10 minutes on one RTX
4090 (24 GB); the size of the test set is not published there.

python benchmarks/bench_cir.py --queries 256 --pairs 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from crossmodal import stages  # noqa: E402
from crossmodal.cir.compose import REFERENCE_COMPOSE, compose_queries, edit_sums  # noqa: E402
from crossmodal.cir.data import prepare_cir  # noqa: E402
from crossmodal.cir.demo_world import write_cir_edits  # noqa: E402
from crossmodal.cir.projection import raw_image_embeddings, raw_text_embeddings  # noqa: E402
from crossmodal.cir.stage import read_queries  # noqa: E402
from crossmodal.cir.tagger import PROMPT, Tagger, load_tagger, parse_edits, query_words  # noqa: E402
from crossmodal.cir.tagger_data import ADD, REMOVE  # noqa: E402
from crossmodal.encoders.registry import load_trainable_clip  # noqa: E402
from crossmodal.index import IndexParams, build_index, search  # noqa: E402

TINY = {"backend": "tiny", "seed": 0}
TAGGER_DATA = {
    "draws_per_template": 15, "seed": 42, "sort_objects": True, "object_words": "each",
    "heldout_templates": 0.0, "heldout_sentences": 0.0,
}  # fmt: skip
TAGGER_TRAIN = {
    "epochs": 5, "batch_size": 16, "learning_rate": 1e-3, "warmup_steps": 0,
    "weight_decay": 0.01, "max_grad_norm": 1.0, "seed": 42, "max_length": 64,
}  # fmt: skip


def build_world(work: Path, n_queries: int) -> tuple[list[str], torch.Tensor, np.ndarray, Tagger]:
    """Query texts (the demo's, cycled to ``n_queries``), their raw image embeddings, the
    normalised database and a trained tiny tagger."""
    write_cir_edits(work / "cir", seed=0)
    sentences, base = work / "sentences.parquet", work / "tiny" / "tokenizer.json"
    stages.CirTaggerData(
        templates=work / "cir/prompt_templates.json", objects=work / "cir/objects.txt",
        sentences=sentences, settings=TAGGER_DATA,
    ).run()  # fmt: skip
    stages.MakeTinyTagger(sentences=sentences, tokenizer=base, seed=0).run()
    model = work / "tagger" / "config.json"
    stages.CirTrainTagger(
        sentences=sentences, model=model, scores=work / "scores.json", settings=TAGGER_TRAIN,
        device="cpu", base_model=base,
    ).run()  # fmt: skip
    q, i = work / "q.parquet", work / "i.parquet"
    split = work / "cir" / "train"
    prepare_cir(split / "data.csv", split / "images", q, i, work / "m.json", max_missing_fraction=0)
    queries = read_queries(q)
    clip = load_trainable_clip(TINY, device="cpu")
    from crossmodal.cir.stage import image_paths

    query_paths = image_paths(i, queries["query_image_id"])
    targets = list(dict.fromkeys(queries["target_image_id"]))
    model_ = clip.model.eval()
    images = raw_image_embeddings(model_, clip.preprocess, query_paths, torch.device("cpu"))
    db = raw_image_embeddings(model_, clip.preprocess, image_paths(i, targets), torch.device("cpu"))
    db = torch.nn.functional.normalize(db, dim=-1).numpy()
    reps = -(-n_queries // len(queries["query_text"]))
    texts = (queries["query_text"] * reps)[:n_queries]
    image_rows = torch.cat([images] * reps)[:n_queries]
    return texts, image_rows, db, load_tagger(model.parent)


def reference_loop(texts, images, db, tagger: Tagger, clip) -> np.ndarray:
    """The reference's loop (RG:36-65, RC:79-110, RE:18-28), with this package's tiny models."""
    query = images.clone()
    for j, text in enumerate(texts):
        words = query_words(text)
        enc = tagger.tokenizer(
            words, is_split_into_words=True, return_tensors="pt", padding="max_length",
            truncation=True, max_length=128,
        )  # fmt: skip
        with torch.no_grad():
            logits = tagger.model(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).logits
        predicted = logits.argmax(-1)[0].tolist()
        labelled, previous = [], None
        for pos, word in enumerate(enc.word_ids(batch_index=0)):
            if word is not None and word != previous:
                labelled.append((words[word], tagger.id2label[predicted[pos]]))
                previous = word
        pos_, neg, last = [], [], ""
        for token, label in labelled:
            for wanted, phrases in ((ADD, pos_), (REMOVE, neg)):
                if label == wanted:
                    if last != wanted:
                        phrases.append(f"a photo of a {token}.")
                    else:
                        phrases[-1] = phrases[-1][:-1] + f" {token}."
            last = label
        with torch.no_grad():
            for obj in pos_:
                query[j] += clip.model.encode_text(clip.tokenizer(obj))[0]
            for obj in neg:
                query[j] -= clip.model.encode_text(clip.tokenizer(obj))[0]
    query = torch.nn.functional.normalize(query, dim=1, p=2).numpy()
    return np.argmax(query @ db.T, axis=1)


def batched(texts, images, db_index, tagger: Tagger, clip) -> np.ndarray:
    """This package's path: ``parse_edits``, distinct prompts in batches, one FAISS search."""
    edits = parse_edits(tagger, texts, max_length=128)
    add = [[PROMPT.format(p) for p in e.add] for e in edits]
    remove = [[PROMPT.format(p) for p in e.remove] for e in edits]
    prompts = [p for ps in (*add, *remove) for p in ps]
    emb = raw_text_embeddings(clip.model, clip.tokenizer, prompts, torch.device("cpu"))
    add_sum, remove_sum = edit_sums(add, remove, emb, images.shape[1])
    query = compose_queries(images, add_sum, remove_sum, REFERENCE_COMPOSE).numpy()
    ids, _ = search(db_index, query, 1)
    return ids[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.pairs < 5:
        ap.error("--pairs: at least 5 interleaved pairs")
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        texts, images, db, tagger = build_world(Path(tmp), a.queries)
    clip = load_trainable_clip(TINY, device="cpu")
    clip.model.eval()
    db_index = build_index(db, np.arange(len(db), dtype=np.int64), IndexParams(kind="flat"))
    ref_ids = reference_loop(texts[:64], images[:64], db, tagger, clip)  # warm-up, and check
    our_ids = batched(texts[:64], images[:64], db_index, tagger, clip)
    agree = float((ref_ids == our_ids).mean())
    times: dict[str, list[float]] = {"reference": [], "batched": []}
    runs = {
        "reference": lambda: reference_loop(texts, images, db, tagger, clip),
        "batched": lambda: batched(texts, images, db_index, tagger, clip),
    }
    for pair in range(a.pairs):
        order = ["reference", "batched"] if pair % 2 == 0 else ["batched", "reference"]
        for name in order:
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
    ratios = [r / b for r, b in zip(times["reference"], times["batched"], strict=True)]
    qps = {k: a.queries / statistics.median(v) for k, v in times.items()}
    result = {
        "machine": machine(),
        "queries": a.queries,
        "database": len(db),
        "threads": a.threads,
        "pairs": a.pairs,
        "qps_reference": round(qps["reference"], 1),
        "qps_batched": round(qps["batched"], 1),
        "speedup_median": round(statistics.median(ratios), 2),
        "speedup_range": [round(min(ratios), 2), round(max(ratios), 2)],
        "top1_agreement_first64": agree,
        "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "challenge_limit": "10 minutes for the whole evaluation on one RTX 4090 (24 GB)",
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
