"""The vllm backend against real vLLM servers (vLLM's CPU build, in its own virtualenv).

For a tiny LLaVA and a tiny Qwen2-VL, the backend starts a real vLLM server; base, ReCoD and
ReCoD-img descriptions (image requests, one and two images) and PICa prompts (completion
endpoint with log-probabilities) must come out as the in-process transformers backend makes
them on the same weights: the same greedy text, PICa log-probabilities within 1e-4. Then the
job holding the server is SIGKILLed, and every process of the server must be gone.

The environment comes from .ci/vllm_env.sh; ``CROSSMODAL_VLLM_PYTHON`` names its python
(default ~/.cache/crossmodal/vllm-env/bin/python). Without it the test is skipped, except in
CI (``CI=true``), where a missing environment is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from crossmodal.generation.tiny import build_tiny_llava, build_tiny_qwen2_vl

sys.path.insert(0, str(REPO / "tests" / "helpers"))
import vllm_parity  # noqa: E402

VLLM_PYTHON = Path(
    os.environ.get("CROSSMODAL_VLLM_PYTHON", Path.home() / ".cache/crossmodal/vllm-env/bin/python")
)
BUILDERS = {"llava": build_tiny_llava, "qwen2_vl": build_tiny_qwen2_vl}


def vllm_python() -> Path:
    if VLLM_PYTHON.exists():
        return VLLM_PYTHON
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(
            f"CI=true but the vLLM environment is missing ({VLLM_PYTHON}): run "
            ".ci/vllm_env.sh and export CROSSMODAL_VLLM_PYTHON as .ci/run does"
        )
    pytest.skip(f"no vLLM environment at {VLLM_PYTHON} (build it with .ci/vllm_env.sh)")


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def run_vllm_job(workdir: Path, arch: str, python: Path) -> dict:
    """The workload through vLLM in a child job; SIGKILL the job, check its server died."""
    out = workdir / f"{arch}.vllm.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO / "src")}
    job = subprocess.Popen(
        [sys.executable, vllm_parity.__file__, str(workdir), arch, str(python), str(out)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = job.stdout.readline()
        assert line.strip(), f"the vLLM job ended without a result (exit code {job.wait()})"
        server = int(line)
        assert group_members(server), "the server is not running"
        job.kill()  # SIGKILL: no handler, no close(); only the parent-death signal is left
        job.wait()
        deadline = time.monotonic() + 60
        while group_members(server) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not group_members(server), "vLLM processes outlived the job that started them"
    finally:
        if job.poll() is None:
            job.kill()
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_real_vllm_matches_transformers(arch, tmp_path):
    from crossmodal.generation import build_generator

    python = vllm_python()
    BUILDERS[arch](tmp_path / arch, seed=0)
    got = run_vllm_job(tmp_path, arch, python)
    world = vllm_parity.make_world(tmp_path / "pictures")
    local = build_generator(
        {"backend": "transformers", "model": str(tmp_path / arch), "device": "cpu"}
    )
    want = vllm_parity.run(local.generate, world)
    print(f"{arch}: vLLM timing {got['timing']}")

    for method in ("base", "recod", "recod_img"):
        assert got["describe"][method] == json.loads(json.dumps(want["describe"][method])), method
    assert any(r["text"] for r in got["describe"]["recod_img"])  # two-image requests answered
    assert [a["error"] for a in got["pica"]] == [None] * len(want["pica"])
    for g, w in zip(got["pica"], want["pica"], strict=True):
        assert g["text"] == w["text"]
        assert g["tokens_in"] == w["tokens_in"]
        assert len(g["logprobs"]) == len(w["logprobs"])
        assert all(abs(a - b) < 1e-4 for a, b in zip(g["logprobs"], w["logprobs"], strict=True))
    # seeded sampling is reproducible within vLLM (what journal resumes rely on)
    first, again = got["sampled_twice"]
    assert first == again
