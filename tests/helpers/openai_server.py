"""A small OpenAI-compatible chat server wrapping the in-process transformers backend.

Stands in for ``vllm serve`` in tests: same command-line shape (``--model``, ``--host``,
``--port``), ``/health``, ``/v1/chat/completions`` with data-URL images and vLLM's
``continue_final_message`` prefill extension.
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from crossmodal.generation.transformers_backend import TransformersGenerator
from crossmodal.generation.types import Message, Request, image, text


def to_request(body: dict, tmp: Path) -> Request:
    messages = list(body["messages"])
    prefill = None
    if body.get("continue_final_message") and messages and messages[-1]["role"] == "assistant":
        prefill = messages.pop()["content"]
    out = []
    for i, m in enumerate(messages):
        content = m["content"]
        if isinstance(content, str):
            out.append(Message(m["role"], (text(content),)))
            continue
        parts = []
        for j, c in enumerate(content):
            if c["type"] == "text":
                parts.append(text(c["text"]))
            else:
                header, data = c["image_url"]["url"].split(",", 1)
                suffix = ".png" if "png" in header else ".jpg"
                path = tmp / f"{i}_{j}{suffix}"
                path.write_bytes(base64.b64decode(data))
                parts.append(image(path))
        out.append(Message(m["role"], tuple(parts)))
    return Request(
        tuple(out),
        max_tokens=body.get("max_tokens", 16),
        temperature=body.get("temperature", 0.0),
        top_p=body.get("top_p", 1.0),
        seed=body.get("seed", 0),
        prefill=prefill,
        stop=tuple(body.get("stop") or ()),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    a, _ = ap.parse_known_args()  # vLLM's other flags (--dtype, ...) do not apply here
    gen = TransformersGenerator(a.model, device="cpu")
    served = {"count": 0}

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
            if self.path == "/health":
                self._send(200, {})
            elif self.path == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": a.model, "object": "model"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with tempfile.TemporaryDirectory() as d:
                req = to_request(body, Path(d))
                resp = gen.generate([req])[0]
            if not resp.ok:
                self._send(400, {"error": {"message": resp.error}})
                return
            served["count"] += 1
            content = resp.text
            if req.prefill:
                content = content[len(req.prefill) :].strip()
            self._send(
                200,
                {
                    "id": f"cmpl-{served['count']}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": a.model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "length",
                            "message": {"role": "assistant", "content": content},
                        }
                    ],
                    "usage": {
                        "prompt_tokens": resp.tokens_in,
                        "completion_tokens": resp.tokens_out,
                        "total_tokens": resp.tokens_in + resp.tokens_out,
                    },
                },
            )

    ThreadingHTTPServer((a.host, a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
