"""vLLM: start a vLLM OpenAI server on a free localhost port inside the job, or use a given URL.

The server command is configurable, so vLLM can live in its own environment (e.g. another
python running ``-m vllm.entrypoints.openai.api_server``) while this client stays light.

Server settings that change outputs are set here, not left to vLLM's defaults:

- ``--generation-config vllm``: the model folder's ``generation_config.json`` adds nothing to a
  request; only the sampling settings the request carries apply (as in every other backend).
- ``--dtype``: the entry's ``dtype`` (``auto``: float32 on CPU, where vLLM would serve bf16;
  vLLM's own choice on GPU).
- ``--tensor-parallel-size N`` for an entry with ``gpus: N > 1``.
- On CPU (``gpus: 0``, vLLM's CPU build): a 1 GiB KV cache (vLLM would reserve most of the
  machine's RAM) and no chunked prefill (``--no-enable-chunked-prefill
  --max-num-batched-tokens 8192``; chunked prefill fails on seeded requests on CPU).

Any of these is overridden by naming the same flag in ``server_args``.

The server is started lazily, on the first ``generate()`` call that has requests, so a job whose
requests are all in the journal starts nothing. It dies with the job however the job ends:
``close()`` stops its process group, and the kernel sends it SIGTERM when the job dies
(``PR_SET_PDEATHSIG``), even on SIGKILL. The parent-death signal follows the *thread* that
started the server, so the server is started from a dedicated thread that lives until
``close()`` (or until the process dies), whichever thread calls ``generate()``.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import requests

from crossmodal.errors import CrossmodalError
from crossmodal.generation.openai_backend import OpenAIGenerator
from crossmodal.generation.types import Request, Response

log = logging.getLogger(__name__)

DEFAULT_COMMAND = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]

CPU_KV_CACHE_BYTES = 1 << 30  # 1 GiB: ample for the batch sizes a job sends; override it
CPU_MAX_BATCHED_TOKENS = 8192

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flag_names(args: Sequence[str]) -> set[str]:
    """The ``--flags`` that ``args`` sets (``--flag value`` and ``--flag=value`` alike)."""
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def _served_dtype(dtype: str, cpu: bool) -> str:
    if dtype == "auto":
        return "float32" if cpu else "auto"
    return dtype


def server_arguments(
    model: str,
    port: int,
    *,
    dtype: str = "auto",
    gpus: int = 1,
    server_args: Sequence[str] = (),
    revision: str | None = None,
) -> list[str]:
    """The arguments after the server command: model, address, then defaults ``server_args``
    does not override, then ``server_args`` itself.

    ``gpus: 0`` means vLLM's CPU build (the CPU defaults in the module docstring apply).
    """
    given = _flag_names(server_args)
    if "--dtype" in given and dtype != "auto":
        raise CrossmodalError(
            f"the model entry sets dtype: {dtype} and its server_args set --dtype too: "
            "keep one of them"
        )
    cpu = gpus == 0
    # (flags that override the default, the default's arguments)
    defaults: list[tuple[set[str], list[str]]] = [
        ({"--dtype"}, ["--dtype", _served_dtype(dtype, cpu)]),
        ({"--generation-config"}, ["--generation-config", "vllm"]),
    ]
    if revision:  # the hub revision the entry pins, served as pinned
        defaults.append(({"--revision"}, ["--revision", revision]))
    if gpus > 1:
        defaults.append(({"--tensor-parallel-size", "-tp"}, ["--tensor-parallel-size", str(gpus)]))
    if cpu:
        defaults += [
            ({"--kv-cache-memory-bytes"}, ["--kv-cache-memory-bytes", str(CPU_KV_CACHE_BYTES)]),
            (
                {"--enable-chunked-prefill", "--no-enable-chunked-prefill"},
                ["--no-enable-chunked-prefill"],
            ),
            (
                {"--max-num-batched-tokens"},
                ["--max-num-batched-tokens", str(CPU_MAX_BATCHED_TOKENS)],
            ),
        ]
    given |= {a for a in server_args if a == "-tp"}
    args = ["--model", model, "--host", "127.0.0.1", "--port", str(port)]
    for flags, default in defaults:
        if not flags & given:
            args += default
    return [*args, *server_args]


def _die_with_parent_hook():
    """A ``preexec_fn`` asking the kernel to SIGTERM the child when its parent thread dies.

    libc's ``prctl`` is looked up here, before the fork: the child only calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return hook


class VLLMGenerator:
    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        server_command: list[str] | None = None,
        server_args: list[str] | None = None,
        dtype: str = "auto",
        gpus: int = 1,
        revision: str | None = None,
        startup_timeout: float = 1200,
        max_in_flight: int = 64,
        timeout: float = 300,
    ):
        self.model = model
        self.server_command = list(server_command or DEFAULT_COMMAND)
        self.server_args = list(server_args or [])
        self.dtype = dtype
        self.revision = revision
        self.gpus = gpus
        self.startup_timeout = startup_timeout
        self.max_in_flight = max_in_flight
        self.timeout = timeout
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.command: list[str] | None = None  # the server command line, once started
        self.client: OpenAIGenerator | None = None
        self._keeper: threading.Thread | None = None
        self._release = threading.Event()
        self._start_lock = threading.Lock()
        if base_url is not None:
            self.client = self._client(base_url)

    def _client(self, base_url: str) -> OpenAIGenerator:
        return OpenAIGenerator(
            self.model,
            base_url=base_url,
            api_key_env="VLLM_API_KEY",
            max_in_flight=self.max_in_flight,
            timeout=self.timeout,
            vllm_extensions=True,
        )

    def _ensure_client(self) -> OpenAIGenerator:
        with self._start_lock:
            if self.client is None:
                self.client = self._client(self._start())
            return self.client

    def _spawn(self, cmd: list[str], log_fd: int) -> subprocess.Popen:
        """Start the server from a thread that lives as long as the server should.

        PR_SET_PDEATHSIG fires when the creating thread exits, so that thread must not be a
        short-lived worker: it waits until ``close()`` (or dies with the process).
        """
        started = threading.Event()
        box: dict[str, object] = {}

        def keep() -> None:
            try:
                box["proc"] = subprocess.Popen(
                    cmd,
                    stdout=log_fd,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own group: close() stops vLLM's workers too
                    preexec_fn=_die_with_parent_hook(),
                )
            except OSError as exc:
                box["error"] = exc
            started.set()
            if "proc" in box:
                self._release.wait()

        self._release.clear()
        self._keeper = threading.Thread(target=keep, name="vllm-server-parent", daemon=True)
        self._keeper.start()
        started.wait()
        if "error" in box:
            raise CrossmodalError(
                f"cannot start the vLLM server {cmd[0]!r}: {box['error']}; point the model "
                "entry's server_command at a python that has vLLM installed"
            )
        return box["proc"]  # type: ignore[return-value]

    def _start(self) -> str:
        port = free_port()
        args = server_arguments(
            self.model,
            port,
            dtype=self.dtype,
            gpus=self.gpus,
            server_args=self.server_args,
            revision=self.revision,
        )
        cmd = [*self.server_command, *args]
        self.command = cmd
        fd, log_file = tempfile.mkstemp(prefix="vllm-", suffix=".log")
        self.log_path = Path(log_file)
        try:
            self.process = self._spawn(cmd, fd)
        finally:
            os.close(fd)
        log.info("vLLM server starting (log %s): %s", self.log_path, " ".join(cmd))
        base = f"http://127.0.0.1:{port}"
        began = time.monotonic()
        deadline = began + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                self.close()
                raise CrossmodalError(f"vLLM server exited during start-up ({cmd}):\n{tail}")
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    log.info("vLLM server ready in %.1f s", time.monotonic() - began)
                    return f"{base}/v1"
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.close()
        raise CrossmodalError(
            f"vLLM server not healthy after {self.startup_timeout}s (log: {self.log_path}); "
            "raise the model entry's startup_timeout if the model is large"
        )

    def generate(self, requests_: list[Request]) -> list[Response]:
        if not requests_:
            return []
        return self._ensure_client().generate(requests_)

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            client.close()
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc is not None:
            _kill_group_leftovers(proc.pid)
        self._release.set()
        if self._keeper is not None:
            self._keeper.join(timeout=5)
            self._keeper = None


def _kill_group_leftovers(pgid: int) -> None:
    """SIGKILL whatever is left of the server's process group (workers outliving the server)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
