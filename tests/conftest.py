"""Shared fixtures: a local HTTP file server with Range support and fault injection."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@dataclass
class FileServer:
    """Serves files from a dict; can cut the first N responses after a number of bytes."""

    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: int | None = None  # bytes sent before dropping the connection
    cuts_left: int = 0
    honour_range: bool = True
    content_types: dict[str, str] = field(default_factory=dict)  # Content-Type per file name
    length_on_416: bool = True  # send ``Content-Range: bytes */N`` with a 416, as RFC 9110 says
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    state = FileServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            name = self.path.lstrip("/")
            rng = self.headers.get("Range")
            state.requests.append((name, rng))
            body = state.files.get(name)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = 0
            if rng and state.honour_range:
                start = int(rng.removeprefix("bytes=").split("-")[0])
                if start >= len(body):
                    self.send_response(416)
                    if state.length_on_416:
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            if name in state.content_types:
                self.send_header("Content-Type", state.content_types[name])
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if state.cuts_left > 0 and state.cut_after is not None:
                state.cuts_left -= 1
                self.wfile.write(payload[: state.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def run_snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    """This checkout's Snakefile on 2 cores in ``workdir``. ``args`` (targets, flags) go before
    ``--configfile``, which takes several values."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "2",
            *args,
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(configfile),
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
