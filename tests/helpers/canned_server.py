"""A stand-in for vLLM's OpenAI server that loads no model: every chat completion says "ok".

It takes vLLM's command-line shape (``--model``, ``--host``, ``--port`` and any other flag),
writes the arguments it was started with, one JSON list a line, to the file named by
``CANNED_SERVER_ARGV`` (when set), every request body to ``CANNED_SERVER_BODIES`` (when set),
and answers ``/health``. Tests use it where only the server's
life cycle and command line matter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a, _ = ap.parse_known_args()
    record = os.environ.get("CANNED_SERVER_ARGV")
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps(sys.argv[1:]) + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _send(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200 if self.path == "/health" else 404, {})

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            bodies = os.environ.get("CANNED_SERVER_BODIES")
            if bodies:  # what the client sent, one JSON object a line
                with open(bodies, "a") as fh:
                    fh.write(json.dumps(json.loads(body)) + "\n")
            self._send(
                200,
                {
                    "id": "cmpl-0",
                    "object": "chat.completion",
                    "created": 0,
                    "model": a.model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "ok"},
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                },
            )

    ThreadingHTTPServer((a.host, a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
