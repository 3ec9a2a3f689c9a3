"""vLLM: start ``vllm serve`` on a free localhost port inside the job, or use a given base URL.

The server command is configurable, so vLLM can live in its own environment (e.g. another
python running ``-m vllm.entrypoints.openai.api_server``) while this client stays light. The
server is always shut down: on success, on error, and on SIGTERM from the scheduler.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from crossmodal.errors import CrossmodalError
from crossmodal.generation.openai_backend import OpenAIGenerator
from crossmodal.generation.types import Request, Response

DEFAULT_COMMAND = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMGenerator:
    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        server_command: list[str] | None = None,
        server_args: list[str] | None = None,
        startup_timeout: float = 1200,
        max_in_flight: int = 64,
        timeout: float = 300,
    ):
        self.model = model
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        if base_url is None:
            base_url = self._start(
                server_command or DEFAULT_COMMAND, server_args or [], startup_timeout
            )
        self.client = OpenAIGenerator(
            model,
            base_url=base_url,
            api_key_env="VLLM_API_KEY",
            max_in_flight=max_in_flight,
            timeout=timeout,
            vllm_extensions=True,
        )

    def _start(self, command: list[str], args: list[str], timeout: float) -> str:
        port = free_port()
        cmd = [*command, "--model", self.model, "--host", "127.0.0.1", "--port", str(port), *args]
        fd, log = tempfile.mkstemp(prefix="vllm-", suffix=".log")
        self.log_path = Path(log)
        self.process = subprocess.Popen(
            cmd, stdout=fd, stderr=subprocess.STDOUT, start_new_session=True
        )
        os.close(fd)
        self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text()[-3000:]
                self.close()
                raise CrossmodalError(f"vLLM server exited during start-up ({cmd}):\n{tail}")
            try:
                if requests.get(f"{base}/health", timeout=2).status_code == 200:
                    return f"{base}/v1"
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.close()
        raise CrossmodalError(f"vLLM server not healthy after {timeout}s; log: {self.log_path}")

    def _on_sigterm(self, signum, frame):
        self.close()
        raise SystemExit(143)

    def generate(self, requests_: list[Request]) -> list[Response]:
        return self.client.generate(requests_)

    def close(self) -> None:
        if hasattr(self, "client"):
            self.client.close()
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if hasattr(self, "_previous_sigterm"):
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            del self._previous_sigterm
