"""The README's main command on the demo world, end to end, in a scratch directory."""

from __future__ import annotations

import shutil
import subprocess

import pyarrow.parquet as pq
import pytest
from conftest import REPO
from conftest import run_snakemake as run_demo_config


def run_snakemake(workdir, *args: str) -> subprocess.CompletedProcess:
    return run_demo_config(workdir, workdir / "demo.yaml", *args)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo_run")
    shutil.copy(REPO / "config" / "demo.yaml", work / "demo.yaml")
    proc = run_snakemake(work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work


@pytest.mark.slow
def test_demo_data_tables(demo_run):
    train = pq.read_table(demo_run / "results/data/demo_train2014/images.parquet")
    val = pq.read_table(demo_run / "results/data/demo_val2014/images.parquet")
    assert (train.num_rows, val.num_rows) == (200, 50)
    caps = pq.read_table(demo_run / "results/data/demo_train2014/captions.parquet")
    assert caps.num_rows == 1000
    q = pq.read_table(demo_run / "results/data/demo/val/questions.parquet").to_pandas()
    assert set(q["image_id"]) <= set(val.column("image_id").to_pylist())
    assert q["answers"].map(len).eq(10).all()


@pytest.mark.slow
def test_demo_produces_the_accuracy_summary(demo_run):
    import json

    import yaml

    config = yaml.safe_load((demo_run / "demo.yaml").read_text())
    summary = json.loads((demo_run / "results/demo/acc.json").read_text())
    assert "random-weight" in summary["title"]
    runs = summary["runs"]
    n_loops = config["describe"]["n_descriptions"]
    assert len(runs) == len(config["describe"]["methods"]) * n_loops
    assert {r["method"] for r in runs} == {"base", "recod", "recod_img"}
    assert sorted({r["loop"] for r in runs}) == list(range(1, n_loops + 1))
    val_questions = pq.read_table(demo_run / "results/data/demo/val/questions.parquet").num_rows
    assert all(r["n_questions"] == val_questions and 0 <= r["accuracy"] <= 100 for r in runs)
    assert len({r["config_hash"] for r in runs}) == 3  # one per method
    # ReCoD's loop 0 is the base run's first description: at k=1 the three methods share
    # their contexts, so their answers and accuracy are the same
    at_one = {r["method"]: r["accuracy"] for r in runs if r["loop"] == 1}
    assert len(set(at_one.values())) == 1, at_one
    answers = {
        m: (demo_run / f"results/demo/val/answers/tiny_llava/{m}/loop1/tiny_lm.json").read_bytes()
        for m in ("base", "recod", "recod_img")
    }
    assert len(set(answers.values())) == 1
    assert (demo_run / "results/demo/acc.png").read_bytes()[:4] == b"\x89PNG"
    recod = pq.read_table(demo_run / "results/demo/val/descriptions/tiny_llava/recod.parquet")
    assert recod.num_rows == 50 * n_loops  # every val image, base + loops


@pytest.mark.slow
def test_demo_trains_cusa_and_every_variant_beats_the_untrained_student(demo_run):
    import json

    summary = json.loads((demo_run / "results/itr/demo/summary.json").read_text())
    rows = {r["method"]: r for r in summary["rows"]}
    assert list(rows) == ["zero_shot", "contrastive", "csa", "usa", "cusa"]
    assert all(r["encoder"] == "tiny" for r in rows.values())
    untrained = rows["zero_shot"]["rsum"]
    for method in ("contrastive", "csa", "usa", "cusa"):
        assert rows[method]["rsum"] > untrained + 100, (method, rows[method]["rsum"], untrained)
        history = json.loads((demo_run / f"results/cusa/demo/{method}/train.json").read_text())
        assert history["selected_on"] == "val" and len(history["epochs"]) == 3
    assert (demo_run / "results/itr/demo/summary.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_demo_cir_finetuned_projection_beats_the_untrained_one(demo_run):
    import json

    summary = json.loads((demo_run / "results/cir/demo/summary.json").read_text())
    rows = {r["method"]: r for r in summary["rows"]}
    assert list(rows) == ["untrained", "finetuned"]
    assert all(r["encoder"] == "tiny" and r["n_queries"] == 60 for r in rows.values())
    assert rows["finetuned"]["top1"] > rows["untrained"]["top1"], rows
    assert 0.0 < rows["finetuned"]["tagger_f1"] <= 1.0
    edits = pq.read_table(demo_run / "results/cir/demo/test/edits/tagger.parquet").to_pylist()
    assert sum(bool(e["add"]) and bool(e["remove"]) for e in edits) > len(edits) // 2
    assert (demo_run / "results/cir/demo/summary.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_demo_dialog_finetuned_clip_beats_zero_shot(demo_run):
    """The tiny LLM's descriptors (noise: each falls back to its dialogue, counted) and a
    fine-tuned tiny CLIP find the shared photo more often than the untrained CLIP (R@10)."""
    import json

    summary = json.loads((demo_run / "results/dialog/demo/summary.json").read_text())
    rows = {r["method"]: r for r in summary["rows"]}
    assert list(rows) == ["zero_shot", "finetuned"]
    assert rows["finetuned"]["r10"] > rows["zero_shot"]["r10"]
    assert all(r["n_evaluated"] == 32 and r["n_excluded"] == 0 for r in rows.values())
    ledger = json.loads(
        (demo_run / "results/dialog/demo/train/descriptors/tiny_lm.ledger.json").read_text()
    )
    assert ledger["ok"] + ledger["repaired"] + ledger["fallback"] == 48
    assert len(ledger["fallbacks"]) == ledger["fallback"]
    assert (demo_run / "results/dialog/demo/summary.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_second_run_has_nothing_to_do(demo_run):
    proc = run_snakemake(demo_run, "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_report_includes_the_summary_with_captions(demo_run):
    import zipfile

    proc = run_snakemake(demo_run, "--report", "report.zip")
    assert proc.returncode == 0, proc.stderr[-2000:]
    with zipfile.ZipFile(demo_run / "report.zip") as zf:
        names = zf.namelist()
        html = zf.read(next(n for n in names if n.endswith("report.html"))).decode()
    assert any(n.endswith("/acc.json") for n in names)
    assert any(n.endswith("/acc.png") for n in names)
    assert "PICa accuracy against the number of descriptions" in html  # the caption
    # a loop gallery per ReCoD method: target, retrieved images, captions, descriptions
    galleries = [n for n in names if n.endswith(("/recod.html", "/recod_img.html"))]
    assert len(galleries) == 2, names
    with zipfile.ZipFile(demo_run / "report.zip") as zf:
        page = zf.read(next(n for n in galleries if n.endswith("recod.html"))).decode()
    assert page.count("<h2>image ") == 4 and "retrieved" in page and "data:image/jpeg" in page


@pytest.mark.slow
def test_demo_scores_wca_and_every_baseline_on_the_shapes(demo_run):
    import json

    summary = json.loads((demo_run / "results/zeroshot/demo/summary.json").read_text())
    rows = {r["method"]: r for r in summary["rows"]}
    assert list(rows) == ["clip", "clip-e", "clip-d", "waffle", "cupl", "wca"]
    for method, row in rows.items():
        assert row["encoder"] == "tiny" and row["n_images"] == 30, method
        assert 0 <= row["mean"] <= 100 and row["std"] >= 0
        assert row["mean"] == pytest.approx(sum(row["runs"]) / len(row["runs"]))
    assert len(rows["wca"]["runs"]) == 5 and all(
        len(r["runs"]) == 1 for m, r in rows.items() if m != "wca"
    )
    described = json.loads(
        (demo_run / "results/zeroshot/demo/descriptions/tiny_lm.json").read_text()
    )
    assert set(described) == {"circle", "square", "triangle"}
    ledger = json.loads(
        (demo_run / "results/zeroshot/demo/descriptions/tiny_lm.ledger.json").read_text()
    )
    kept = sum(len(v) for v in described.values())
    assert kept + ledger["garbage_count"] == ledger["requests"] == 3 * 5 * 2
    assert (demo_run / "results/zeroshot/demo/summary.png").read_bytes()[:4] == b"\x89PNG"
