"""Compositional retrieval in the pipeline: the challenge layout, the pinned lists, the wiring,
the summary and the one-query command, on tiny models and generated files."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from helpers.jobs import demo_config
from PIL import Image

from crossmodal import paths, stages
from crossmodal.cir import wiring
from crossmodal.cir.data import prepare_cir
from crossmodal.cir.demo_world import TEMPLATES, objects, write_cir_edits
from crossmodal.cir.summary import cir_summary
from crossmodal.cir.tagger import load_tagger, parse_edits
from crossmodal.cir.tagger_data import read_sentences
from crossmodal.cli import main
from crossmodal.data.manifest import load_remote
from crossmodal.data.registry import CIR_TAGGER_LISTS, cir_files
from crossmodal.errors import ChecksumError, CrossmodalError, DataFormatError
from crossmodal.io import read_json

REPO = Path(__file__).resolve().parents[1]
TINY = {"backend": "tiny", "seed": 0}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _challenge_folder(root: Path, absent: str | None = None) -> tuple[Path, Path]:
    """A challenge-layout split: data.csv over 5 images, one of them optionally left out."""
    images = root / "images"
    images.mkdir(parents=True)
    for i, colour in enumerate(["red", "green", "blue", "yellow", "white"]):
        if f"im{i}.jpg" != absent:
            Image.new("RGB", (20 + i, 10), colour).save(images / f"im{i}.jpg")
    rows = [
        ("im3.jpg", "add a cat and remove the dog", "im1.jpg"),
        ("im0.jpg", "Remove the lamp, add a chair.", "im2.jpg"),
        ("im2.jpg", "add a tree", "im4.jpg"),
        ("im4.jpg", "remove the tree", "im0.jpg"),
    ]
    with (root / "data.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["query_image", "query_text", "target_image"])
        writer.writerows(rows)
    return root / "data.csv", images


def test_prepare_cir_writes_queries_and_images_in_the_shared_layout(tmp_path: Path) -> None:
    data, images = _challenge_folder(tmp_path / "split")
    out = tmp_path / "out"
    argv = ["prepare-cir", "--sources", "--csv", str(data), "--image-dir", str(images)]
    argv += ["--max-missing-fraction", "0", "--queries", str(out / "q.parquet")]
    argv += ["--images", str(out / "i.parquet"), "--missing", str(out / "m.json")]
    assert main(argv) == 0
    imgs = pq.read_table(out / "i.parquet").to_pylist()
    assert [Path(r["path"]).name for r in imgs] == [f"im{i}.jpg" for i in range(5)]
    assert [r["image_id"] for r in imgs] == list(range(5))
    assert [(r["width"], r["height"]) for r in imgs] == [(20 + i, 10) for i in range(5)]
    queries = pq.read_table(out / "q.parquet").to_pylist()
    assert queries[1] == {
        "query_id": 1,
        "query_image_id": 0,
        "query_text": "Remove the lamp, add a chair.",
        "target_image_id": 2,
    }
    assert read_json(out / "m.json")["missing"] == {}


def test_a_missing_image_is_listed_with_its_rows_and_fails_unless_tolerated(tmp_path):
    data, images = _challenge_folder(tmp_path / "split", absent="im4.jpg")
    outs = [tmp_path / "q.parquet", tmp_path / "i.parquet", tmp_path / "m.json"]
    with pytest.raises(DataFormatError, match=r"im4\.jpg \(2 rows\).*max_missing_fraction"):
        prepare_cir(data, images, *outs, max_missing_fraction=0.0)
    assert not outs[0].exists()
    report = prepare_cir(data, images, *outs, max_missing_fraction=0.5)
    assert report["n_rows"] == 4 and report["n_kept"] == 2 and report["n_dropped"] == 2
    assert read_json(outs[2])["missing"] == {"im4.jpg": {"rows": 2, "reason": "absent"}}
    kept = pq.read_table(outs[0]).column("query_id").to_pylist()
    assert kept == [0, 1]  # the CSV rows that name im4.jpg are gone, the others keep their id


def test_a_csv_without_the_challenge_columns_is_an_error(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "data.csv").write_text("image,text,target\na.jpg,add a cat,b.jpg\n")
    with pytest.raises(DataFormatError, match=r"lacks the columns \['query_image'"):
        prepare_cir(
            tmp_path / "data.csv", tmp_path / "images", tmp_path / "q", tmp_path / "i",
            tmp_path / "m", max_missing_fraction=0.0,
        )  # fmt: skip


def test_the_challenge_data_needs_the_users_folder():
    with pytest.raises(CrossmodalError, match=r"data\.mirrors\.cir"):
        cir_files("rayan", "train", {"cir": None})
    files = cir_files("rayan", "test", {"cir": "/data/rayan"})
    assert files == {
        "csv": "/data/rayan/sample_evaluation/data.csv",
        "image_dir": "/data/rayan/sample_evaluation/images",
    }


def test_the_manifest_pins_the_reference_lists_at_one_commit():
    for name in CIR_TAGGER_LISTS.archives:
        remote = load_remote(REPO / paths.MANIFEST, name)
        assert remote.url.startswith(
            "https://raw.githubusercontent.com/safinal/compositional-image-retrieval/"
            "a0c795f3708f9b3faa681ee95489d98998270de7/token_classification_data/"
        )
        assert remote.sha256 and len(remote.sha256) == 64 and remote.size


def test_lists_download_through_a_mirror_with_their_checksums(file_server, tmp_path):
    templates = json.dumps([{"template": t, "model": "x"} for t in TEMPLATES]).encode()
    objects_txt = ("\n".join(objects()) + "\n").encode()
    served = {CIR_TAGGER_LISTS.templates: templates, CIR_TAGGER_LISTS.objects: objects_txt}
    manifest = tmp_path / "manifest" / "downloads.json"
    manifest.parent.mkdir()
    entries = {
        name: {"url": f"https://example.invalid/{name}", "size": len(body),
               "sha256": hashlib.sha256(body).hexdigest()}
        for name, body in served.items()
    }  # fmt: skip
    manifest.write_text(json.dumps({"files": entries}))
    file_server.files.update(served)
    downloads = tmp_path / "downloads"
    for name in served:
        stages.Download(
            manifest=manifest, name=name, file=downloads / name, retries=0, timeout=5,
            mirror=file_server.url,
        ).run()  # fmt: skip
        assert (downloads / name).read_bytes() == served[name]
    sentences = tmp_path / "sentences.parquet"
    settings = {k: demo_config()["cir"]["tagger"][k] for k in wiring.TAGGER_DATA_KEYS}
    stages.CirTaggerData(
        templates=downloads / CIR_TAGGER_LISTS.templates,
        objects=downloads / CIR_TAGGER_LISTS.objects,
        sentences=sentences,
        settings=settings,
    ).run()
    assert len(read_sentences(sentences)) == len(TEMPLATES) * settings["draws_per_template"]

    file_server.files[CIR_TAGGER_LISTS.objects] = objects_txt.replace(b"red", b"tan")  # same size
    with pytest.raises(ChecksumError, match="sha256"):
        stages.Download(
            manifest=manifest, name=CIR_TAGGER_LISTS.objects, file=tmp_path / "again" /
            CIR_TAGGER_LISTS.objects, retries=0, timeout=5, mirror=file_server.url,
        ).run()  # fmt: skip


def test_config_hash_follows_the_results_not_the_device():
    base = demo_config()
    projection = {**base["cir"]["projection"], "learning_rate": 0.5}
    changed = demo_config(cir={**base["cir"], "projection": projection})
    moved = demo_config(cir={**base["cir"], "device": "cuda"})
    h = wiring.config_hash(base, "demo")
    assert wiring.config_hash(changed, "demo") != h
    assert wiring.config_hash(moved, "demo") == h
    assert wiring.summary_targets(base) == ["results/cir/demo/summary.json"]


def test_summary_rows_carry_method_metrics_tagger_f1_encoder_and_hash(tmp_path):
    metrics = []
    for name, top1 in (("untrained", 0.25), ("finetuned", 0.5)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"top1": top1, "r5": 0.75, "n_queries": 4.0}))
        metrics.append(path)
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"tagger_f1": 0.9}))
    rows = cir_summary(
        ["untrained", "finetuned"], metrics, scores, "tiny", "abc",
        tmp_path / "s.json", tmp_path / "s.png", "title",
    )  # fmt: skip
    assert [r["method"] for r in rows] == ["untrained", "finetuned"]
    assert rows[1] | {} == {
        "method": "finetuned", "encoder": "tiny", "config_hash": "abc", "top1": 0.5,
        "r5": 0.75, "tagger_f1": 0.9, "n_queries": 4.0, "n_database": None,
    }  # fmt: skip
    assert read_json(tmp_path / "s.json")["rows"] == rows
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    metrics[0].write_text(json.dumps({"top1": 0.1}))
    with pytest.raises(CrossmodalError, match=r"no \['r5'\]"):
        cir_summary(["untrained"], metrics[:1], None, "tiny", "abc", tmp_path / "a",
                    tmp_path / "b", "t")  # fmt: skip


def test_cir_query_answers_as_the_pipeline_ranks_the_same_query(tmp_path, capsys):
    """One query through ``crossmodal cir-query`` gets the phrases cir-parse finds and the
    ranking cir-eval gives the same query in the query set."""
    world = tmp_path / "cir"
    write_cir_edits(world, seed=0)
    config = demo_config()
    c = config["cir"]
    sentences = tmp_path / "sentences.parquet"
    stages.CirTaggerData(
        templates=world / "prompt_templates.json", objects=world / "objects.txt",
        sentences=sentences, settings={k: c["tagger"][k] for k in wiring.TAGGER_DATA_KEYS},
    ).run()  # fmt: skip
    base = tmp_path / "tiny" / "tokenizer.json"
    stages.MakeTinyTagger(sentences=sentences, tokenizer=base, seed=0).run()
    tagger = tmp_path / "tagger" / "config.json"
    stages.CirTrainTagger(
        sentences=sentences, model=tagger, scores=tmp_path / "tagger.json",
        settings={**c["tagger"]["train"], "epochs": 3, "max_length": c["max_length"]},
        device="cpu", base_model=base, checkpoint=tmp_path / "ckpt" / "tagger.pt",
    ).run()  # fmt: skip
    assert list((tmp_path / "ckpt").iterdir()) == []  # a finished run drops its checkpoint
    q, i, e = tmp_path / "q.parquet", tmp_path / "i.parquet", tmp_path / "e.parquet"
    prepare_cir(
        world / "test" / "data.csv", world / "test" / "images", q, i, tmp_path / "m.json",
        max_missing_fraction=0.0,
    )  # fmt: skip
    stages.CirParse(
        queries=q, edits=e, parser="tagger", device="cpu", max_length=c["max_length"],
        tagger=tagger,
    ).run()  # fmt: skip
    qf, dbf = tmp_path / "qf.parquet", tmp_path / "dbf.parquet"
    stages.CirEmbed(
        queries=q, images=i, edits=e, query_features=qf, database_features=dbf, encoder=TINY,
        compose=c["compose"], database="targets", device="cpu", batch_size=64, workers=0,
    ).run()  # fmt: skip
    index = tmp_path / "db.faiss"
    stages.BuildIndex(features=dbf, index=index, meta=tmp_path / "db.json",
                      params={"kind": "flat"}).run()  # fmt: skip
    stages.CirEval(
        queries=q, query_features=qf, index=index, metrics=tmp_path / "metrics.json",
        rankings=tmp_path / "r.parquet", ks=[1, 5],
    ).run()  # fmt: skip

    query = pq.read_table(q).to_pylist()[3]
    image = pq.read_table(i).to_pylist()[query["query_image_id"]]["path"]
    out = tmp_path / "answer.json"
    argv = ["cir-query", "--image", image, "--text", query["query_text"], "--index", str(index)]
    argv += ["--tagger", str(tagger), "--encoder", json.dumps(TINY), "--compose"]
    argv += [json.dumps(c["compose"]), "--k", "5", "--device", "cpu", "--max-length", "64"]
    argv += ["--images", str(i), "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    parsed = parse_edits(load_tagger(tagger.parent), [query["query_text"]], max_length=64)[0]
    assert printed[0] == f"add: {json.dumps(list(parsed.add))}"
    assert printed[1] == f"remove: {json.dumps(list(parsed.remove))}"
    ranked = pq.read_table(tmp_path / "r.parquet").to_pylist()[3]["ranked_ids"]
    assert [int(line.split("\t")[1]) for line in printed[2:]] == ranked
    answer = read_json(out)
    assert answer["ids"] == ranked and Path(answer["paths"][0]).is_file()

    with pytest.raises(CrossmodalError, match="no such file"):
        stages.CirQuery(
            image=tmp_path / "none.png", text="add a red circle", index=index, tagger=tagger,
            encoder=TINY, compose=c["compose"], k=5, device="cpu", max_length=64,
        ).run()  # fmt: skip


def test_config_names_point_somewhere_before_any_job_runs():
    from crossmodal.config import ConfigError

    with pytest.raises(ConfigError) as info:
        demo_config(cir={"datasets": ["rayan", "nope"], "encoder": "missing"})
    message = str(info.value)
    assert "cir.datasets: 'nope' is not a compositional retrieval data set" in message
    assert "cir.datasets: 'rayan' needs data.mirrors.cir" in message
    assert "cir.encoder: 'missing' is not configured under encoders" in message
    config = demo_config(data={"mirrors": {"cir": "/data/rayan"}}, cir={"datasets": ["rayan"]})
    assert wiring.summary_targets(config) == ["results/cir/rayan/summary.json"]


def test_a_checkpoint_is_named_by_its_runs_settings_and_inputs(tmp_path):
    from crossmodal.cir.checkpoint import file_sha256, run_checkpoint

    data = tmp_path / "sentences.parquet"
    data.write_bytes(b"one")
    first = run_checkpoint(tmp_path / "t.pt", {"lr": 1e-3, "data": file_sha256(data)})
    assert first == run_checkpoint(tmp_path / "t.pt", {"data": file_sha256(data), "lr": 1e-3})
    assert first.parent == tmp_path and first.suffix == ".pt" and first.name != "t.pt"
    assert run_checkpoint(tmp_path / "t.pt", {"lr": 3e-3, "data": file_sha256(data)}) != first
    data.write_bytes(b"two")
    assert run_checkpoint(tmp_path / "t.pt", {"lr": 1e-3, "data": file_sha256(data)}) != first
    assert run_checkpoint(None, {"lr": 1e-3}) is None
