"""The demo DAG through `--profile slurm` on a real single-node SLURM cluster.

The cluster is started by tests/slurm/start_cluster.sh (Debian's slurm-wlm and munge, which
.ci/run installs). Without them, or without root, these tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        pytest.skip("slurm-wlm and munge are not installed (.ci/run installs them)")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd needs root")
    proc = subprocess.run(
        ["bash", str(REPO / "tests" / "slurm" / "start_cluster.sh")],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    return True


def test_demo_through_slurm_profile(cluster, tmp_path):
    (tmp_path / "slurm").mkdir()
    shutil.copy(REPO / "tests" / "slurm" / "profile.yaml", tmp_path / "slurm" / "config.yaml")
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["demo"].update(n_train=24, n_val=6)
    config["describe"]["n_descriptions"] = 2
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "results/demo/acc.json",
            "--profile",
            "slurm",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            "small.yaml",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert out.count("submitted with SLURM jobid") >= 20  # every job went through sbatch
    summary = yaml.safe_load((tmp_path / "results/demo/acc.json").read_text())
    assert len(summary["runs"]) == 3 * 2
    # the feature job asked for a GPU and SLURM granted the (fake) one
    logs = list((tmp_path / "results/logs/extract_features").glob("*.log"))
    assert logs and all("CUDA_VISIBLE_DEVICES=0" in p.read_text() for p in logs)
