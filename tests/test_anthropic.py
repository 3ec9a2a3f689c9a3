"""The anthropic backend through the real SDK against a local Messages API server."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.parquet as pq
import pytest
from helpers.jobs import describe_job, describe_settings
from PIL import Image

from crossmodal.errors import CrossmodalError
from crossmodal.generation import Request, build_generator, image, text
from crossmodal.generation.types import Message
from crossmodal.recod.stage import run_describe_job

KEY = "sk-ant-test-secret-123"


class FakeClaude:
    """Behaviour by marker in the last user text: 429xN, 500xN, SLOWxN, ALWAYS500."""

    def __init__(self):
        self.attempts: Counter[str] = Counter()
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.healed = False
        self.lock = threading.Lock()

    def handler(self):
        fake = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, code, obj, extra=None):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][0]["content"][-1]["text"]
                with fake.lock:
                    fake.attempts[prompt] += 1
                    n = fake.attempts[prompt]
                    fake.bodies.append(body)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                err = {"type": "error", "error": {"type": "api_error", "message": "injected"}}
                fast = {"retry-after-ms": "5"}
                for marker, code in (("429x", 429), ("500x", 500), ("529x", 529)):
                    if marker in prompt and n <= int(prompt.split(marker)[1][0]):
                        return self._json(code, err, fast)
                if "SLOWx" in prompt and n <= int(prompt.split("SLOWx")[1][0]):
                    time.sleep(1.5)
                if "ALWAYS500" in prompt and not fake.healed:
                    return self._json(500, err, fast)
                prefill = (
                    body["messages"][-1]["content"]
                    if body["messages"][-1]["role"] == "assistant"
                    else ""
                )
                self._json(
                    200,
                    {
                        "id": f"msg_{n}",
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "stop_reason": "max_tokens",
                        "stop_sequence": None,
                        "content": [
                            {
                                "type": "text",
                                "text": f" answer to {prompt[:20]}"
                                + (" (prefilled)" if prefill else ""),
                            }
                        ],
                        "usage": {"input_tokens": 11, "output_tokens": 7},
                    },
                )

        return H


@pytest.fixture
def claude(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    fake = FakeClaude()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()


def spec(fake, **kw):
    return {
        "backend": "anthropic",
        "model": "claude-3-haiku-20240307",
        "base_url": fake.url,
        "max_retries": 3,
        "timeout": 0.5,
        "backoff": 0.001,  # retries wait for the server's retry-after-ms, or about 1 ms
        **kw,
    }


def ask(prompt, img=None, prefill=None):
    parts = ((image(img),) if img else ()) + (text(prompt),)
    return Request(
        (Message("system", (text("SYS"),)), Message("user", parts)),
        max_tokens=20,
        temperature=0.2,
        top_p=0.7,
        prefill=prefill,
    )


def test_faults_are_retried_and_the_run_completes(claude):
    gen = build_generator(spec(claude))
    prompts = ["plain", "429x2", "500x1", "529x1", "SLOWx1"]
    out = gen.generate([ask(p) for p in prompts])
    assert all(r.ok for r in out), [r.error for r in out]
    assert [claude.attempts[p] for p in prompts] == [1, 3, 2, 2, 2]
    assert out[0].text == "answer to plain" and out[0].tokens_in == 11


def test_retries_are_bounded_and_failure_is_reported(claude):
    gen = build_generator(spec(claude, max_retries=2))
    (resp,) = gen.generate([ask("ALWAYS500")])
    assert claude.attempts["ALWAYS500"] == 3  # one try + two retries, then give up
    assert not resp.ok and "500" in resp.error


def test_payload_images_prefill_and_key(claude, tmp_path):
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    gen = build_generator(spec(claude))
    req = Request(
        (
            Message(
                "user",
                (
                    text("Image 1:"),
                    image(tmp_path / "a.png"),
                    text("Image 2:"),
                    image(tmp_path / "b.jpg"),
                    text("compare"),
                ),
            ),
        ),
        prefill="The first image shows",
    )
    (resp,) = gen.generate([req])
    body = claude.bodies[-1]
    content = body["messages"][0]["content"]
    assert [c["type"] for c in content] == ["text", "image", "text", "image", "text"]
    assert content[1]["source"]["media_type"] == "image/png"
    assert content[3]["source"]["media_type"] == "image/jpeg"
    assert body["messages"][-1] == {"role": "assistant", "content": "The first image shows"}
    sent = claude.headers[-1]
    assert KEY in (sent.get("x-api-key"), sent.get("authorization", "").removeprefix("Bearer "))
    assert body["temperature"] == 0.0 and "top_p" not in body  # only what the request sets
    assert resp.text == "The first image shows answer to compare (prefilled)"


def test_missing_key_fails_before_any_work(claude, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(CrossmodalError, match="ANTHROPIC_API_KEY is not set"):
        build_generator(spec(claude))
    assert not claude.bodies


def test_stage_reports_failures_then_resumes_only_them(claude, tmp_path):
    targets = []
    for i in range(3):
        Image.new("RGB", (16, 16), (i * 80, 0, 0)).save(tmp_path / f"{i}.jpg")
        targets.append((i, str(tmp_path / f"{i}.jpg")))
    settings = describe_settings("base", vlm={"system_prompt": None}, n_descriptions=2)
    job = describe_job(
        tmp_path,
        spec(claude, max_retries=1, price={"input": 0.25, "output": 1.25}),
        settings,
        targets,
    )
    # every request carries the same prompt: make exactly one request fail by its seed
    from crossmodal.generation.anthropic_backend import AnthropicGenerator

    original = AnthropicGenerator._one
    doomed = {}

    def flaky(self, req):
        doomed.setdefault("key", req)
        if req == doomed["key"] and not claude.healed:
            return type(original(self, req))("", error="APIStatusError (status 500): injected")
        return original(self, req)

    AnthropicGenerator._one = flaky
    try:
        with pytest.raises(CrossmodalError, match="1 of 6 base requests failed"):
            run_describe_job(job)
        assert not (tmp_path / "d.parquet").exists()
        first_sent = len(claude.bodies)
        claude.healed = True
        rows = run_describe_job(job)
    finally:
        AnthropicGenerator._one = original
    assert len(rows) == 6
    assert len(claude.bodies) - first_sent == 1  # only the failed request was sent again
    ledger = json.loads((tmp_path / "ledger.json").read_text())
    assert ledger["sent"] == 1 and ledger["answered_from_journal"] == 5
    assert ledger["tokens_in"] == 66 and ledger["cost_usd"] == pytest.approx(
        (66 * 0.25 + 42 * 1.25) / 1e6
    )
    for f in tmp_path.iterdir():
        if f.suffix in (".json", ".parquet"):
            assert KEY.encode() not in f.read_bytes()
    for f in (tmp_path / "journal").iterdir():
        assert KEY.encode() not in f.read_bytes()
    assert pq.read_table(tmp_path / "d.parquet").num_rows == 6
