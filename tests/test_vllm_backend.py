"""The vllm backend's server handling, with a stand-in server (no vLLM needed).

Command line (CPU defaults, dtype, tensor parallelism, overrides), lazy start, and the server
dying with the job however the job dies.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO

from crossmodal.errors import CrossmodalError
from crossmodal.generation import Request, build_generator, text
from crossmodal.generation.journal import JournaledGenerator
from crossmodal.generation.types import user
from crossmodal.generation.vllm_backend import server_arguments

CANNED = [sys.executable, str(REPO / "tests" / "helpers" / "canned_server.py")]


def flag_value(args: list[str], flag: str) -> str | None:
    """The value after ``flag`` (None when absent); fails if the flag appears twice."""
    hits = [i for i, a in enumerate(args) if a == flag]
    assert len(hits) <= 1, f"{flag} given {len(hits)} times: {args}"
    return args[hits[0] + 1] if hits else None


def ask(word: str = "hi") -> Request:
    return Request((user(text(word)),), max_tokens=2)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody has reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_cpu_defaults_and_served_dtype():
    args = server_arguments("m", 8000, dtype="auto", gpus=0)
    assert args[:6] == ["--model", "m", "--host", "127.0.0.1", "--port", "8000"]
    assert flag_value(args, "--dtype") == "float32"  # vLLM would serve bf16 on CPU
    assert flag_value(args, "--generation-config") == "vllm"
    assert flag_value(args, "--kv-cache-memory-bytes") == str(1 << 30)
    assert flag_value(args, "--max-num-batched-tokens") == "8192"
    assert "--no-enable-chunked-prefill" in args
    assert "--tensor-parallel-size" not in args


def test_gpu_entries_get_no_cpu_defaults_and_tensor_parallelism_from_gpus():
    one = server_arguments("m", 1, dtype="auto", gpus=1)
    assert flag_value(one, "--dtype") == "auto"
    assert flag_value(one, "--generation-config") == "vllm"
    assert "--tensor-parallel-size" not in one
    assert "--kv-cache-memory-bytes" not in one and "--no-enable-chunked-prefill" not in one
    four = server_arguments("m", 1, dtype="bfloat16", gpus=4)
    assert flag_value(four, "--tensor-parallel-size") == "4"
    assert flag_value(four, "--dtype") == "bfloat16"


def test_server_args_override_each_default():
    args = server_arguments(
        "m",
        1,
        gpus=4,
        server_args=["--tensor-parallel-size=2", "--generation-config", "auto"],
    )
    assert "--tensor-parallel-size=2" in args and "--tensor-parallel-size" not in args
    assert flag_value(args, "--generation-config") == "auto"
    cpu = server_arguments(
        "m",
        1,
        gpus=0,
        server_args=[
            "--enable-chunked-prefill",
            *("--kv-cache-memory-bytes", "123"),
            *("--dtype", "half"),
        ],
    )
    assert "--no-enable-chunked-prefill" not in cpu and "--enable-chunked-prefill" in cpu
    assert flag_value(cpu, "--kv-cache-memory-bytes") == "123"
    assert flag_value(cpu, "--dtype") == "half"
    assert flag_value(cpu, "--max-num-batched-tokens") == "8192"  # not overridden: kept
    short = server_arguments("m", 1, gpus=2, server_args=["-tp", "1"])
    assert "--tensor-parallel-size" not in short


def test_dtype_in_entry_and_server_args_is_refused():
    with pytest.raises(CrossmodalError, match="dtype: float16 .* --dtype"):
        server_arguments("m", 1, dtype="float16", server_args=["--dtype", "bfloat16"])


def test_server_starts_lazily_with_the_configured_command_line(tmp_path, monkeypatch):
    record = tmp_path / "argv.jsonl"
    monkeypatch.setenv("CANNED_SERVER_ARGV", str(record))
    spec = {
        "backend": "vllm",
        "model": "tiny",
        "server_command": CANNED,
        "gpus": 2,
        "dtype": "float16",
        "server_args": ["--max-model-len", "512"],
        "startup_timeout": 60,
    }
    gen = build_generator(spec)
    try:
        assert gen.process is None and gen.generate([]) == []
        time.sleep(0.5)
        assert not record.exists()  # nothing was started
        got = gen.generate([ask(), ask("there")])
        assert [r.text for r in got] == ["ok", "ok"]
        (argv,) = [json.loads(line) for line in record.read_text().splitlines()]
        assert flag_value(argv, "--tensor-parallel-size") == "2"
        assert flag_value(argv, "--dtype") == "float16"
        assert flag_value(argv, "--generation-config") == "vllm"
        assert argv[-2:] == ["--max-model-len", "512"]
        pid = gen.process.pid
        gen.generate([ask("again")])
        assert gen.process.pid == pid  # one server per generator
    finally:
        gen.close()
    assert not alive(pid)


def test_fully_journalled_job_starts_no_server(tmp_path, monkeypatch):
    record = tmp_path / "argv.jsonl"
    monkeypatch.setenv("CANNED_SERVER_ARGV", str(record))
    spec = {"backend": "vllm", "model": "tiny", "server_command": CANNED, "gpus": 0}
    journal = tmp_path / "journal"
    reqs = [ask("a"), ask("b")]
    with JournaledGenerator(spec, journal, own="j.jsonl", chunk=8) as first:
        assert [r.text for r in first(reqs)] == ["ok", "ok"]
    assert len(record.read_text().splitlines()) == 1
    with JournaledGenerator(spec, journal, own="j.jsonl", chunk=8) as rerun:
        assert [r.text for r in rerun(reqs)] == ["ok", "ok"]
        assert rerun.stats()["sent"] == 0
    assert len(record.read_text().splitlines()) == 1  # the rerun started no server


def test_server_outlives_the_thread_that_started_it(tmp_path):
    """The parent-death signal follows the starting thread: a worker thread that calls
    generate() and ends must not take the server down with it."""
    gen = build_generator({"backend": "vllm", "model": "tiny", "server_command": CANNED, "gpus": 0})
    try:
        worker = threading.Thread(target=gen.generate, args=([ask()],))
        worker.start()
        worker.join()
        time.sleep(1.0)
        assert gen.process is not None and gen.process.poll() is None
        assert gen.generate([ask()])[0].text == "ok"
    finally:
        gen.close()


JOB = textwrap.dedent(
    """
    import sys, time
    from crossmodal.generation import Request, build_generator, text
    from crossmodal.generation.types import user

    gen = build_generator(
        {"backend": "vllm", "model": "tiny", "server_command": sys.argv[1:], "gpus": 0}
    )
    assert gen.generate([Request((user(text("hi")),), max_tokens=2)])[0].text == "ok"
    print(gen.process.pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_server_dies_with_the_job(how, tmp_path):
    """However the job dies, even by SIGKILL (no handler runs), its server goes with it."""
    script = tmp_path / "job.py"
    script.write_text(JOB)
    job = subprocess.Popen(
        [sys.executable, str(script), *CANNED], stdout=subprocess.PIPE, text=True
    )
    try:
        server_pid = int(job.stdout.readline())
        assert alive(server_pid)
        job.send_signal(how)
        job.wait(timeout=30)
        deadline = time.monotonic() + 10
        while alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(server_pid), "the server outlived its job"
    finally:
        if job.poll() is None:
            job.kill()
        if "server_pid" in locals() and alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_a_pinned_revision_is_served():
    args = server_arguments("org/model", 8000, gpus=1, revision="abc123")
    assert flag_value(args, "--revision") == "abc123"
    assert flag_value(server_arguments("org/model", 8000, gpus=1), "--revision") is None
