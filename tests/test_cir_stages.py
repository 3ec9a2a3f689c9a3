"""The compositional retrieval stages over files, from templates to top-1, on tiny models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from crossmodal import jobs, stages
from crossmodal.cir.tagger_data import HELDOUT, read_sentences
from crossmodal.cli import main
from crossmodal.errors import CrossmodalError
from crossmodal.features import read_embeddings

TINY = {"backend": "tiny", "seed": 0}
COMPOSE = {"add_weight": 1.0, "remove_weight": 1.0, "normalise": True}
WORDS = ["cat", "dog", "car", "tree", "lamp", "chair"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _world(root: Path) -> tuple[Path, Path]:
    """A collection of 12 random images and 24 queries in the challenge's fixed text format."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        path = root / f"img{i}.png"
        pixels = (rng.random((8, 8, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).resize((64, 64), Image.NEAREST).save(path)
        rows.append({"image_id": 100 + i, "path": str(path), "width": 64, "height": 64})
    images = root / "images.parquet"
    pq.write_table(pa.Table.from_pylist(rows), images)
    queries = root / "queries.parquet"
    texts = [f"add {WORDS[i % 6]} and remove {WORDS[(i + 1) % 6]}" for i in range(24)]
    table = {
        "query_id": pa.array(range(24), pa.int64()),
        "query_image_id": pa.array([100 + i % 12 for i in range(24)], pa.int64()),
        "query_text": texts,
        "target_image_id": pa.array([100 + (5 * i + 1) % 12 for i in range(24)], pa.int64()),
    }
    pq.write_table(pa.table(table), queries)
    return images, queries


def test_tagger_stages_from_templates_to_scores(tmp_path: Path) -> None:
    templates = tmp_path / "templates.json"
    templates.write_text(
        json.dumps(
            [
                {"template": t, "model": "hand"}
                for t in [
                    "Add a <positive_object>.",
                    "Remove the <negative_object>!",
                    "Add a <positive_object> and remove the <negative_object>.",
                    "Remove the <negative_object>, then add a <positive_object>.",
                    "Insert a <positive_object>; delete the <negative_object>.",
                ]
            ]  # fmt: skip
        )
    )
    objects = tmp_path / "objects.txt"
    objects.write_text("lamp\nwatering can\nT-shirt\ndog\ncat\nold clock\n")
    sentences = tmp_path / "sentences.parquet"
    settings = {
        "draws_per_template": 6, "seed": 0, "sort_objects": True, "object_words": "each",
        "heldout_templates": 0.2, "heldout_sentences": 0.1,
    }  # fmt: skip
    argv = ["cir-tagger-data", "--templates", str(templates), "--objects", str(objects)]
    argv += ["--sentences", str(sentences), "--settings", json.dumps(settings)]
    assert main(argv) in (0, None)
    held = read_sentences(sentences, HELDOUT)
    assert len(held) > 0 and any(not s.template_seen for s in held)

    tiny = tmp_path / "tiny" / "tokenizer.json"
    stages.MakeTinyTagger(sentences=sentences, tokenizer=tiny, seed=0).run()
    assert tiny.is_file() and (tiny.parent / "config.json").is_file()
    train_settings = {
        "epochs": 2, "batch_size": 8, "learning_rate": 1e-3, "warmup_steps": 0,
        "weight_decay": 0.01, "max_grad_norm": 1.0, "seed": 0, "max_length": 64,
    }  # fmt: skip
    model = tmp_path / "tagger" / "config.json"
    scores = tmp_path / "tagger_scores.json"
    job = stages.CirTrainTagger(
        sentences=sentences, model=model, scores=scores, settings=train_settings,
        device="cpu", base_model=tiny,
    )  # fmt: skip
    job.run()
    result = json.loads(scores.read_text())
    assert result["scored_on"] == HELDOUT and result["n_heldout"] == len(held)
    assert 0.0 <= result["tagger_f1"] <= 1.0 and len(result["epoch_losses"]) == 2
    assert set(result["scores"]) == {"all", "seen_templates", "unseen_templates"}
    assert model.is_file()
    with pytest.raises(CrossmodalError, match="exactly one"):
        stages.CirTrainTagger(
            sentences=sentences, model=model, scores=scores, settings=train_settings,
            device="cpu", base_model=tiny, pretrained="distilbert-base-uncased",
        ).run()  # fmt: skip


def test_retrieval_stages_untrained_and_finetuned(tmp_path: Path) -> None:
    images, queries = _world(tmp_path)
    edits = tmp_path / "edits.parquet"
    stages.CirParse(
        queries=queries, edits=edits, parser="fixed", device="cpu", max_length=128
    ).run()
    rows = pq.read_table(edits).to_pylist()
    assert rows[0]["add"] == ["cat"] and rows[0]["remove"] == ["dog"]

    projection, log = tmp_path / "proj.pt", tmp_path / "proj.log.json"
    settings = {
        "epochs": 2, "batch_size": 8, "learning_rate": 1e-2, "weight_decay": 0.01,
        "temperature": 0.07, "t_0": 5, "t_mult": 2, "grad_clip": 1.0, "seed": 0,
        "trunk": "cached", "sampler": "strict", "workers": 0,
    }  # fmt: skip
    stages.CirTrainProjection(
        queries=queries, images=images, edits=edits, projection=projection, log=log,
        encoder=TINY, settings=settings, compose=COMPOSE, train_fraction=0.75, split_seed=42,
        device="cpu", checkpoint=tmp_path / "ckpt.pt",
    ).run()  # fmt: skip
    record = json.loads(log.read_text())
    assert len(record["train_query_ids"]) == 18 and len(record["val_query_ids"]) == 6
    assert len(record["epoch_val"]) == 2 and "top1" in record["untrained_val"]

    metrics, ranked_by_query = {}, {}
    for method, proj in (("untrained", None), ("finetuned", projection)):
        qf, dbf = tmp_path / f"{method}.q.parquet", tmp_path / f"{method}.db.parquet"
        stages.CirEmbed(
            queries=queries, images=images, edits=edits, query_features=qf,
            database_features=dbf, encoder=TINY, compose=COMPOSE, database="targets",
            device="cpu", batch_size=8, workers=0, projection=proj,
        ).run()  # fmt: skip
        ids, emb = read_embeddings(dbf)
        assert len(ids) == 12 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        index, meta = tmp_path / f"{method}.faiss", tmp_path / f"{method}.json"
        stages.BuildIndex(features=dbf, index=index, meta=meta, params={"kind": "flat"}).run()
        out = tmp_path / f"{method}.metrics.json"
        rankings = tmp_path / f"{method}.rankings.parquet"
        stages.CirEval(
            queries=queries, query_features=qf, index=index, metrics=out, rankings=rankings,
            ks=[1, 5],
        ).run()  # fmt: skip
        metrics[method] = json.loads(out.read_text())
        ranked = pq.read_table(rankings).column("ranked_ids").to_pylist()
        ranked_by_query[method] = ranked
        targets = pq.read_table(queries).column("target_image_id").to_pylist()
        top1 = np.mean([r[0] == t for r, t in zip(ranked, targets, strict=True)])
        assert metrics[method]["top1"] == pytest.approx(top1)
        assert metrics[method]["n_queries"] == 24 and metrics[method]["n_database"] == 12
    assert metrics["finetuned"] != metrics["untrained"]

    # one query by hand gives the same ranking as the stage for the whole set
    from crossmodal.cir.compose import ComposeSettings
    from crossmodal.cir.projection import load_projection
    from crossmodal.cir.stage import answer_query
    from crossmodal.encoders.registry import load_trainable_clip
    from crossmodal.index import load_index

    clip = load_trainable_clip(TINY)
    load_projection(clip.model, projection)
    index = load_index(tmp_path / "finetuned.faiss", use_gpu=False)
    image = pq.read_table(images).to_pylist()[3]["path"]  # query 3: image 103
    answer = answer_query(
        clip.model, clip.tokenizer, clip.preprocess, index, image, ["tree"], ["lamp"],
        ComposeSettings(**COMPOSE), k=5, device=torch.device("cpu"),
    )  # fmt: skip
    assert answer.add == ("tree",) and answer.remove == ("lamp",)
    assert list(answer.ids) == ranked_by_query["finetuned"][3]


def test_stage_jobs_survive_their_command_line(tmp_path: Path) -> None:
    job = stages.CirEmbed(
        queries=tmp_path / "q", images=tmp_path / "i", edits=tmp_path / "e",
        query_features=tmp_path / "qf", database_features=tmp_path / "df", encoder=TINY,
        compose=COMPOSE, database="targets", device="cpu", batch_size=4, workers=0,
    )  # fmt: skip
    from crossmodal.cli import build_parser

    args = build_parser().parse_args([job.command, *jobs.to_args(job)])
    assert jobs.from_namespace(type(job), args) == job
