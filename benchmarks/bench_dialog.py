"""Dialogue retrieval: descriptor throughput with requests in flight, and FAISS index timings.

1. Descriptors through the generation layer (``describe_dialogues`` -> ``JournaledGenerator``
   -> the OpenAI-compatible backend) against a local server that answers every request after a
   fixed latency (a stand-in for an LLM server; no model is loaded): ``max_in_flight`` requests
   at once against one request at a time, the same dialogues, a fresh journal per trial, in
   interleaved pairs. Reported: median and range of the per-pair speed-ups.
2. FAISS exact inner-product index (the configured search) over random unit vectors of CLIP
   ViT-B/32's width: build time and the time to rank 1,000 dialogues' top 30, for 1k and 100k
   candidate photos.

    python benchmarks/bench_dialog.py --pairs 5 --dialogues 64 --latency 0.05 --in-flight 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from crossmodal.dialog.descriptor import KEYS, DescriptorSettings, describe_dialogues  # noqa: E402
from crossmodal.generation.journal import JournaledGenerator  # noqa: E402
from crossmodal.index import IndexParams, build_index, search  # noqa: E402

ANSWER = json.dumps(dict.fromkeys(KEYS, "a dog on a beach"))


def serve(latency: float) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(latency)
            body = {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 200, "completion_tokens": 40, "total_tokens": 240},
            }
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


def describe_time(url: str, in_flight: int, dialogues, trial: int) -> float:
    spec = {"backend": "openai", "model": "m", "base_url": url, "max_in_flight": in_flight}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with JournaledGenerator(spec, tmp, own="j.jsonl", chunk=len(dialogues)) as gen:
            out, report = describe_dialogues(dialogues, gen, DescriptorSettings(seed=trial))
        elapsed = time.perf_counter() - start
    assert report.ok == len(dialogues), report
    return elapsed


def bench_descriptors(pairs: int, n: int, latency: float, in_flight: int) -> dict:
    server, url = serve(latency)
    dialogues = [(i, [f"User 0: look at photo {i}", "User 1: show me"]) for i in range(n)]
    describe_time(url, in_flight, dialogues[:4], -1)  # warm up the client
    ratios, serial, parallel = [], [], []
    for trial in range(pairs):
        one = describe_time(url, 1, dialogues, trial)
        many = describe_time(url, in_flight, dialogues, trial)
        serial.append(one)
        parallel.append(many)
        ratios.append(one / many)
    server.shutdown()
    return {
        "dialogues": n,
        "latency_s": latency,
        "in_flight": in_flight,
        "one_at_a_time_s": statistics.median(serial),
        "in_flight_s": statistics.median(parallel),
        "speedup_median": statistics.median(ratios),
        "speedup_range": [min(ratios), max(ratios)],
        "dialogues_per_s": n / statistics.median(parallel),
    }


def bench_index(n_candidates: int, n_queries: int = 1000, dim: int = 512, top: int = 30) -> dict:
    rng = np.random.default_rng(0)
    cand = rng.normal(size=(n_candidates, dim)).astype(np.float32)
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    queries = rng.normal(size=(n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    start = time.perf_counter()
    index = build_index(cand, np.arange(n_candidates), IndexParams(kind="flat"), metric="ip")
    built = time.perf_counter() - start
    start = time.perf_counter()
    search(index, queries, top)
    queried = time.perf_counter() - start
    return {"candidates": n_candidates, "queries": n_queries, "build_s": built, "query_s": queried}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--dialogues", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--in-flight", type=int, default=16)
    a = ap.parse_args()
    result = {
        "machine": machine(),
        "descriptors": bench_descriptors(a.pairs, a.dialogues, a.latency, a.in_flight),
        "index": [bench_index(1000), bench_index(100_000)],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
