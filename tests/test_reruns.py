"""Minimal reruns on the demo: only what a change touches is scheduled again."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO


def copy_checkout(dest):
    """A scratch copy of the workflow and package, so its code can be edited."""
    for name in ("Snakefile", "workflow", "src", "config", "profiles", "envs", "resources"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src,
                dest / name,
                ignore=shutil.ignore_patterns(
                    "__pycache__", "demo", "downloads", "models", "*.egg-info"
                ),
            )
        else:
            shutil.copy(src, dest / name)


def snakemake(work, config, *args):
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(config), *args],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def scheduled(output: str) -> dict[str, int]:
    """Job counts per rule from a dry run's stats table."""
    table = output.split("Job stats:")[1].split("Reasons:")[0] if "Job stats:" in output else ""
    rows = re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)
    return {m.group(1): int(m.group(2)) for m in rows if m.group(1) != "total"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    work = tmp_path_factory.mktemp("reruns")
    copy_checkout(work)
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["demo"].update(n_train=24, n_val=6)
    config["describe"]["n_descriptions"] = 3  # base, then two ReCoD loops
    config["wca"]["datasets"] = []  # zero-shot classification's reruns: tests/test_wca_data.py
    (work / "small.yaml").write_text(yaml.safe_dump(config))
    snakemake(work, work / "small.yaml")
    return work, config


@pytest.mark.slow
def test_nothing_to_do_after_a_complete_run(finished):
    work, _ = finished
    out = snakemake(work, work / "small.yaml", "-n")
    assert "Nothing to be done" in out


@pytest.mark.slow
def test_pica_parameter_reruns_only_pica_scoring_and_summary(finished):
    work, config = finished
    changed = dict(config, pica=dict(config["pica"], n_shot=3))
    (work / "pica.yaml").write_text(yaml.safe_dump(changed))
    jobs = scheduled(snakemake(work, work / "pica.yaml", "-n"))
    assert set(jobs) == {"pica", "score", "summarize", "all"}, jobs


@pytest.mark.slow
def test_a_cusa_loss_rate_retrains_only_the_variants_that_use_it(finished):
    work, config = finished
    cusa = dict(config["cusa"], loss={"usa_rate": 0.25})
    (work / "usa.yaml").write_text(yaml.safe_dump(dict(config, cusa=cusa)))
    out = snakemake(work, work / "usa.yaml", "-n")
    jobs = scheduled(out)
    assert jobs == {
        "cusa_train": 2,
        "itr_scores": 2,
        "itr_eval": 2,
        "itr_summary": 1,
        "all": 1,
    }, jobs
    trained = set(re.findall(r"results/cusa/demo/(\w+)/model\.pt", out))
    assert trained == {"usa", "cusa"}, trained


@pytest.mark.slow
def test_a_cir_projection_setting_retrains_only_the_finetuned_side(finished):
    work, config = finished
    cir = dict(config["cir"], projection=dict(config["cir"]["projection"], learning_rate=0.02))
    (work / "cir.yaml").write_text(yaml.safe_dump(dict(config, cir=cir)))
    out = snakemake(work, work / "cir.yaml", "-n")
    jobs = scheduled(out)
    assert jobs == {
        "cir_train_projection": 1,
        "cir_embed": 1,
        "cir_build_index": 1,
        "cir_eval": 1,
        "cir_summary": 1,
        "all": 1,
    }, jobs
    rebuilt = set(re.findall(r"output: results/cir/demo/test/(\w+)/tiny\.queries\.parquet", out))
    assert rebuilt == {"finetuned"}, rebuilt


@pytest.mark.slow
def test_a_dialog_training_setting_retrains_only_the_finetuned_branch(finished):
    work, config = finished
    dialog = dict(config["dialog"], train=dict(config["dialog"]["train"], lr=1.0e-4))
    (work / "dialog.yaml").write_text(yaml.safe_dump(dict(config, dialog=dialog)))
    out = snakemake(work, work / "dialog.yaml", "-n")
    jobs = scheduled(out)
    assert jobs == {
        "dialog_train": 1,
        "dialog_embed": 1,
        "dialog_search": 1,
        "dialog_eval": 1,
        "dialog_summary": 1,
        "all": 1,
    }, jobs
    rescored = set(re.findall(r"output: results/dialog/demo/(\w+)/tiny_lm/tiny/metrics\.json", out))
    assert rescored == {"finetuned"}, rescored


@pytest.mark.slow
def test_encoder_change_reruns_features_and_everything_downstream(finished):
    work, config = finished
    changed = dict(config, encoders={"tiny": {"backend": "tiny", "seed": 1}})
    (work / "enc.yaml").write_text(yaml.safe_dump(changed))
    jobs = scheduled(snakemake(work, work / "enc.yaml", "-n"))
    assert {
        "extract_features",
        "extract_question_features",
        "build_index",
        "describe",
        "pica",
        "score",
        "summarize",
    } <= set(jobs), jobs
    assert not {"make_demo", "prepare_collection", "prepare_questions"} & set(jobs), jobs


@pytest.mark.slow
def test_editing_a_stage_reruns_that_stage(finished):
    work, _ = finished
    scoring = work / "src" / "crossmodal" / "vqa" / "vqa_eval.py"
    original = scoring.read_text()
    scoring.write_text(original + "\n# an edit\n")
    try:
        jobs = scheduled(snakemake(work, work / "small.yaml", "-n"))
    finally:
        scoring.write_text(original)
    assert set(jobs) == {"score", "summarize", "all"}, jobs


@pytest.mark.slow
def test_killing_snakemake_during_recod_then_rerunning(finished, tmp_path):
    """Kill the whole Snakemake process group mid-ReCoD; the rerun completes, resends nothing
    already answered, and equals the uninterrupted run."""
    import json
    import os
    import signal
    import time

    reference, _ = finished
    work = tmp_path / "work"
    work.mkdir()
    copy_checkout(work)
    config = yaml.safe_load((reference / "small.yaml").read_text())
    config["describe"]["chunk"] = 2  # journal every two requests: a kill lands mid-stage
    (work / "small.yaml").write_text(yaml.safe_dump(config))
    journal = work / "results/journal/demo/val/tiny_llava/recod/shard0of1.jsonl"
    # the VQA spine only (the other methods play no part here); the target goes before
    # --configfile, which takes several values
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "results/demo/acc.json"]
    cmd += ["--configfile", "small.yaml"]
    proc = subprocess.Popen(
        cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) >= 4:
            break
        time.sleep(0.1)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(journal.read_text().splitlines())
    assert 4 <= done < 12  # 6 targets x 2 loops (loop 0 is the base run's)

    # a hard kill leaves Snakemake's lock; Snakemake says to clear it with --unlock
    blocked = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    assert blocked.returncode != 0 and "--unlock" in blocked.stderr
    subprocess.run([*cmd, "--unlock"], cwd=work, check=True, capture_output=True)
    subprocess.run(cmd, cwd=work, check=True, capture_output=True)
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 12
    ledger = json.loads(
        (work / "results/demo/val/descriptions/tiny_llava/recod.ledger.json").read_text()
    )
    assert ledger["answered_from_journal"] == done and ledger["sent"] == 12 - done
    rel = "results/demo/val/descriptions/tiny_llava/recod.parquet"
    assert (work / rel).read_bytes() == (reference / rel).read_bytes()
    assert (work / "results/demo/acc.json").exists()

    # the uninterrupted run's recipe verifies the resumed one: every result equal, and the
    # ledgers, which count what a resume did not resend, are run accounting, not results
    from crossmodal import recipe

    exported = tmp_path / "recipe.json"
    recipe.export_target("results/demo/acc.json", reference / "small.yaml", exported, reference)
    rows, ok = recipe.verify(exported, work)
    assert ok, [r for r in rows if r["status"] != "equal"]
    differing = {r["file"] for r in rows if r["status"] == "different"}
    assert "results/demo/val/descriptions/tiny_llava/recod.ledger.json" in differing
    assert all(f.endswith(".ledger.json") for f in differing)


@pytest.mark.slow
def test_recipe_export_verify_and_replay_config(finished, tmp_path, monkeypatch):
    import json

    from crossmodal.cli import main

    work, _ = finished
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-never-in-recipes")
    monkeypatch.chdir(work)
    recipe = tmp_path / "recipe.json"
    assert (
        main(
            [
                "recipe",
                "export",
                "results/demo/acc.json",
                "-o",
                str(recipe),
                "--configfile",
                "small.yaml",
            ]
        )
        == 0
    )
    data = json.loads(recipe.read_text())
    assert "sk-ant-never-in-recipes" not in recipe.read_text()
    files = {o["file"]: o for o in data["outputs"]}
    assert "results/demo/acc.json" in files
    assert "results/demo/val/descriptions/tiny_llava/recod.parquet" in files
    # all in-process, seeded, on CPU: every result reproducible; ledgers are run accounting
    ledgers = {f for f in files if f.endswith(".ledger.json")}
    assert ledgers and all(files[f]["why_not"].startswith("run accounting") for f in ledgers)
    assert all(o["deterministic"] for f, o in files.items() if f not in ledgers)
    assert data["config"]["describe"]["n_descriptions"] == 3  # resolved, defaults filled
    assert data["config"]["data"]["retries"] == 5
    assert data["packages"]["torch"] and "commit" in data["code"]
    assert data["models"]["vlms.tiny_llava"]["local_content_sha256"]

    assert main(["recipe", "verify", str(recipe)]) == 0
    target = work / "results/demo/val/scores/tiny_llava/base/loop1/tiny_lm.json"
    original = target.read_bytes()
    target.write_bytes(original.replace(b"{", b"{ ", 1))
    try:
        assert main(["recipe", "verify", str(recipe)]) == 2
    finally:
        target.write_bytes(original)

    replay = tmp_path / "replay.yaml"
    assert main(["recipe", "config", str(recipe), "-o", str(replay)]) == 0
    assert yaml.safe_load(replay.read_text()) == data["config"]


@pytest.mark.slow
def test_a_recipe_covers_the_retrieval_outputs(finished, tmp_path):
    """The CUSA branch's recipe lists every file behind its summary, all reproducible on the
    CPU (seeded, one process), and verifies against the finished run."""
    import json

    from crossmodal import recipe

    work, _ = finished
    exported = tmp_path / "itr.json"
    recipe.export_target("results/itr/demo/summary.json", work / "small.yaml", exported, work)
    data = json.loads(exported.read_text())
    files = {o["file"]: o for o in data["outputs"]}
    for variant in ("contrastive", "csa", "usa", "cusa"):
        assert files[f"results/cusa/demo/{variant}/model.pt"]["deterministic"], variant
    assert "results/cusa/demo/teachers/text.tiny_st.npy" in files
    assert data["models"]["cusa.teachers.text.tiny_st"]["local_content_sha256"]
    rows, ok = recipe.verify(exported, work)
    assert ok and all(r["status"] == "equal" for r in rows)
