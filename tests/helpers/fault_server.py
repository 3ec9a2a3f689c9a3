"""A local HTTP server speaking both the OpenAI (chat + completions) and the Anthropic Messages
APIs, with faults injected by markers in the prompt, so both SDKs can be driven through the same
failures.

Markers in the last user text (or the raw prompt):
  ``<code>x<n>``   answer HTTP <code> (e.g. 429x2, 500x1, 529x1) to the first n attempts
  ``ALWAYS<code>`` answer HTTP <code> every time (the error message echoes the key sent)
  ``SLOWx<n>``     sleep 1.5 s on the first n attempts (longer than the tests' timeouts)
  ``WAIT``         sleep 0.2 s, then answer (to observe how many requests are in flight)
  ``EMPTY``        answer with an empty continuation
Every attempt is counted per prompt; bodies and paths are kept for the tests to inspect.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def prompt_of(body: dict[str, Any]) -> str:
    """The raw prompt, or the text of the last user message."""
    if "prompt" in body:
        return body["prompt"]
    user = [m for m in body["messages"] if m["role"] == "user"][-1]
    content = user["content"]
    if isinstance(content, str):
        return content
    return [c["text"] for c in content if c["type"] == "text"][-1]


def prefilled(path: str, body: dict[str, Any]) -> bool:
    """Whether the request asks the server to continue an assistant prefill."""
    last = body.get("messages", [{}])[-1]
    if last.get("role") != "assistant":
        return False
    return path.endswith("/messages") or bool(body.get("continue_final_message"))


class FaultServer:
    def __init__(self):
        self.attempts: Counter[str] = Counter()
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (path, body)
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        prompt = prompt_of(body)
        with self.lock:
            self.attempts[prompt] += 1
            n = self.attempts[prompt]
            self.requests.append((path, body))
        for code, times in re.findall(r"(\d{3})x(\d)", prompt):
            if n <= int(times):
                return int(code), self.error(int(code), "injected")
        always = re.search(r"ALWAYS(\d{3})", prompt)
        if always:
            return int(always[1]), self.error(int(always[1]), "injected, key sent: {key}")
        slow = re.search(r"SLOWx(\d)", prompt)
        if slow and n <= int(slow[1]):
            time.sleep(1.5)
        if "WAIT" in prompt:
            time.sleep(0.2)
        text = "" if "EMPTY" in prompt else f" answer to {prompt[:20]}"
        if text and prefilled(path, body):
            text += " (prefilled)"
        if path.endswith("/messages"):
            return 200, self.anthropic(body, text, n)
        if path.endswith("/chat/completions"):
            return 200, self.chat(body, text, n)
        return 200, self.completion(body, text, n)

    @staticmethod
    def error(code: int, message: str) -> dict[str, Any]:
        kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(code, "api_error")
        return {"type": "error", "error": {"type": kind, "message": f"{message} ({code})"}}

    @staticmethod
    def anthropic(body, text, n):
        return {
            "id": f"msg_{n}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "content": [{"type": "text", "text": text}] if text else [],
            "usage": {"input_tokens": 11, "output_tokens": len(text.split())},
        }

    @staticmethod
    def chat(body, text, n):
        tokens = text.split()
        logprobs = None
        if body.get("logprobs"):
            content = [
                {"token": t, "logprob": -0.5, "bytes": None, "top_logprobs": []} for t in tokens
            ]
            logprobs = {"content": content, "refusal": None}
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs,
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": len(tokens), "total_tokens": 0},
        }

    @staticmethod
    def completion(body, text, n):
        tokens = [f" {t}" for t in text.split()] + ["\n", "after"]
        logprobs = None
        if body.get("logprobs"):
            logprobs = {
                "tokens": tokens,
                "token_logprobs": [-0.25] * len(tokens),
                "top_logprobs": None,
                "text_offset": list(range(len(tokens))),
            }
        return {
            "id": f"cmpl-{n}",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": logprobs}],
            "usage": {"prompt_tokens": 11, "completion_tokens": len(tokens), "total_tokens": 0},
        }

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    code, obj = fake.answer(self.path, body)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1
                key = self.headers.get("x-api-key") or self.headers.get("authorization", "")
                data = json.dumps(obj).replace("{key}", key.removeprefix("Bearer ")).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        return Handler
