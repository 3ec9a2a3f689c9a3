"""benchmarks/gpu_check.sh: its CPU smoke mode runs every check's logic and writes one OUT.md
line per check; a check that cannot run says why; a step over its time limit is reported, not
waited for."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = REPO / "benchmarks" / "gpu_check.py"


def run_script(out, **env):
    return subprocess.run(
        ["bash", str(SCRIPT), "--cpu-smoke", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHON": sys.executable, **env},
    )


def check_lines(text: str) -> dict[str, str]:
    found = re.findall(r"^- \*\*\(([a-d])\) [^*]+\*\*: (.*)$", text, flags=re.M)
    return dict(found) if len(found) == len({k for k, _ in found}) else {}


def raw_json(text: str) -> list[dict]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, flags=re.S)]


@pytest.mark.slow
def test_cpu_smoke_writes_one_line_per_check(tmp_path):
    out = tmp_path / "OUT.md"
    proc = run_script(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = out.read_text()
    lines = check_lines(text)
    assert sorted(lines) == ["a", "b", "c", "d"], text
    header = text.splitlines()[2]
    assert header.startswith(datetime.now(UTC).strftime("%Y-%m-%d"))
    assert "CPU smoke run" in header
    # (a) ran for real on the CPU: a rate and its share of the decode ceiling
    rate_re = r"decode ceiling ([\d,]+) img/s; tiny \(fp32, cpu\): ([\d,]+) img/s = ([\d.]+)%"
    m = re.search(rate_re, lines["a"])
    assert m, lines["a"]
    ceiling, rate, pct = (float(g.replace(",", "")) for g in m.groups())
    assert ceiling > 0 and rate > 0 and abs(100 * rate / ceiling - pct) < 1.5
    # (b) without faiss-gpu: the GPU part is skipped with the reason, the CPU part still ran
    assert re.match(r"SKIPPED \(faiss (has no GPU support|sees no GPU)", lines["b"]), lines["b"]
    assert "cpu flat: " in lines["b"] and "vs exact 1.000/1.000" in lines["b"]
    assert lines["c"].startswith("SKIPPED ("), lines["c"]
    # (d) ran on the CPU: the two step-time ratios and one cusa-train epoch under torchrun
    step_re = r"CUSA step / contrastive step ([\d.]+)x .*teacher ([\d.]+)x .*epoch under torchrun"
    assert re.search(step_re, lines["d"]), lines["d"]
    results = raw_json(text)
    assert results[0]["models"]["tiny"]["median_img_s"] == pytest.approx(rate, abs=1)
    assert {r["status"] for r in results} == {"ok", "skipped"}


def test_a_check_over_its_limit_is_reported_and_fails_the_script(tmp_path):
    out = tmp_path / "OUT.md"
    proc = run_script(out, ONLY="a", TIMEOUT_A="2")
    assert proc.returncode == 1
    lines = check_lines(out.read_text())
    assert lines["a"].startswith("TIMED OUT after 2 s")
    assert all(lines[k] == "SKIPPED (not selected: ONLY=a)" for k in "bcd")


def test_a_missing_package_is_a_skip_naming_it(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "faiss.py").write_text("raise ImportError('no faiss on this machine')\n")
    env = {**os.environ, "PYTHONPATH": f"{shadow}:{REPO / 'src'}"}
    res = tmp_path / "b"
    subprocess.run(
        [sys.executable, str(STEPS), "faiss", "--smoke", "--out", str(res)],
        check=True,
        env=env,
        timeout=120,
    )
    line = res.with_suffix(".md").read_text()
    assert line.startswith("- **(b) FAISS on the GPU vs faiss-cpu**: SKIPPED (`faiss` is not")
    assert "benchmarks/gpu_wheels.sh" in line
    assert json.loads(res.with_suffix(".json").read_text())["status"] == "skipped"


def test_usage_errors(tmp_path):
    for args in ([], [str(tmp_path / "out.txt")], ["--bogus", str(tmp_path / "o.md")]):
        proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
        assert proc.returncode == 2, args
