"""Building the DAG: by the checkout's own code, and refusing what cannot run before any job."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml
from conftest import REPO
from test_reruns import copy_checkout


def dry_run(work, config, env=None):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(config)],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
    )


def test_the_dag_is_built_by_the_checkouts_own_code(tmp_path):
    """A second checkout (a recipe replay, say) builds its DAG with its own src/, not with
    whichever crossmodal is installed."""
    copy_checkout(tmp_path)
    marker = "DAG-BUILT-BY-THIS-CHECKOUT"
    wf = tmp_path / "src/crossmodal/workflow.py"
    wf.write_text(wf.read_text() + f"\nprint({marker!r}, __file__)\n")
    proc = dry_run(tmp_path, tmp_path / "config/demo.yaml")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{marker} {tmp_path / 'src/crossmodal/workflow.py'}" in proc.stdout


def test_a_missing_api_key_stops_the_run_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "config/demo.yaml").read_text())
    config["vlms"]["haiku"] = {
        "backend": "anthropic",
        "model": "claude-3-haiku-20240307",
        "price": {"input": 0.25, "output": 1.25},
    }
    config["describe"]["vlms"] = ["tiny_llava", "haiku"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    proc = dry_run(REPO, path, env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "vlms.haiku (in describe.vlms) needs ANTHROPIC_API_KEY" in out
    assert "rule " not in proc.stdout  # nothing was scheduled
    ok = dry_run(REPO, path, {**env, "ANTHROPIC_API_KEY": "sk-ant-dry-run"})
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "sk-ant-dry-run" not in ok.stdout + ok.stderr
