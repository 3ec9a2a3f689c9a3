"""The README's main command on the demo world, end to end, in a scratch directory."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import REPO


def run_snakemake(workdir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "2",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(workdir / "demo.yaml"),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
    )


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
def test_second_run_has_nothing_to_do(demo_run):
    proc = run_snakemake(demo_run, "-n")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr
