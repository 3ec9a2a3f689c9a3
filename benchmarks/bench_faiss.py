"""FAISS kinds on 100k random 768-d unit vectors: build time, queries/s, recall against exact.

python benchmarks/bench_faiss.py --n 100000 --queries 1000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from crossmodal.index import IndexParams, build_index, search  # noqa: E402


def unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument(
        "--data",
        choices=("random", "clustered"),
        default="random",
        help="uniform on the sphere (ANN worst case) or 1000 Gaussian clusters",
    )
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    if a.data == "random":
        x, q = unit(rng, a.n, a.d), unit(rng, a.queries, a.d)
    else:  # embeddings like CLIP's: clustered, queries near (not on) database points
        centres = unit(rng, 1000, a.d)
        x = centres[rng.integers(0, 1000, a.n)] + 0.6 * unit(rng, a.n, a.d)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        q = x[rng.integers(0, a.n, a.queries)] + 0.3 * unit(rng, a.queries, a.d)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
    ids = np.arange(a.n, dtype=np.int64)
    rows = []
    exact = None
    configs = [
        ("flat", IndexParams("flat"), {}),
        ("ivf nlist=1024 nprobe=16", IndexParams("ivf", nlist=1024, nprobe=16), {}),
        ("ivf nlist=1024 nprobe=64", IndexParams("ivf", nlist=1024, nprobe=64), {}),
        (
            "hnsw M=32 efSearch=64",
            IndexParams("hnsw", hnsw_m=32, ef_construction=80, ef_search=64),
            {},
        ),
        (
            "hnsw M=32 efSearch=256",
            IndexParams("hnsw", hnsw_m=32, ef_construction=80, ef_search=256),
            {},
        ),
    ]
    built = {}
    for name, params, _ in configs:
        key = (params.kind, params.nlist, params.hnsw_m)
        t = time.perf_counter()
        if key not in built:
            built[key] = build_index(x, ids, params)
        index = built[key]
        build_s = time.perf_counter() - t
        base = index.index
        import faiss

        base = faiss.downcast_index(base)
        if isinstance(base, faiss.IndexIVF):
            base.nprobe = params.nprobe
        if isinstance(base, faiss.IndexHNSW):
            base.hnsw.efSearch = params.ef_search
        t = time.perf_counter()
        got, _ = search(index, q, 10)
        qps = a.queries / (time.perf_counter() - t)
        if exact is None:
            exact = got
        r1 = float(np.mean(got[:, 0] == exact[:, 0]))
        r10 = float(np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact, strict=True)]))
        rows.append(
            {
                "index": name,
                "build_s": round(build_s, 1),
                "qps": round(qps, 1),
                "recall@1": r1,
                "recall@10": r10,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        json.dumps(
            {"machine": machine(), "data": a.data, "n": a.n, "d": a.d, "rows": rows}, indent=2
        )
    )


if __name__ == "__main__":
    main()
