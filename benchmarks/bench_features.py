"""Feature extraction throughput, decode ceiling, memory scaling and JPEG draft effect.

Baseline: a faithful re-creation of the seed's loop (open each image with PIL, preprocess,
stack a batch of 256, encode, keep everything in memory, one process), on the same images with
the same tiny model. Ratios are taken within one run on one machine.

    python benchmarks/bench_features.py --n 10000 --rounds 3 --rss 1000 10000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, make_images  # noqa: E402

from crossmodal.encoders import build_encoder  # noqa: E402
from crossmodal.features import (  # noqa: E402
    WORKER_CHUNK,
    _collate,
    _ImageFiles,
    extract_image_features,
    read_embeddings,  # noqa: E402
)

TINY = {"backend": "tiny", "seed": 0}


def seed_loop(encoder, paths: list[str]) -> np.ndarray:
    feats, batch = [], []
    for p in paths:
        batch.append(encoder.preprocess(Image.open(p)))
        if len(batch) == 256:
            feats.append(encoder.encode_pixels(torch.stack(batch)))
            batch = []
    if batch:
        feats.append(encoder.encode_pixels(torch.stack(batch)))
    return np.concatenate(feats)


def decode_ceiling(encoder, paths: list[str], workers: int, draft: bool) -> float:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    # exactly the workers' share of extraction: decode (draft), PIL resize/crop, uint8 out
    ds = _ImageFiles(
        paths, encoder.preprocess, encoder.image_size if draft else None, encoder.pil_transform
    )
    loader = DataLoader(
        ds,
        batch_size=WORKER_CHUNK,
        num_workers=workers,
        collate_fn=_collate,
        prefetch_factor=4 if workers else None,
    )
    t = time.perf_counter()
    for _ in loader:
        pass
    return len(paths) / (time.perf_counter() - t)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _cpu_s(who: int) -> float:
    use = resource.getrusage(who)
    return use.ru_utime + use.ru_stime


def cpu_profile(fn, n: int) -> dict[str, float]:
    """Wall time and CPU ms per image of the main process and of the (joined) workers."""
    main0, kids0 = _cpu_s(resource.RUSAGE_SELF), _cpu_s(resource.RUSAGE_CHILDREN)
    wall = timed(fn)
    return {
        "img_s": n / wall,
        "main_cpu_ms_per_img": 1000 * (_cpu_s(resource.RUSAGE_SELF) - main0) / n,
        "workers_cpu_ms_per_img": 1000 * (_cpu_s(resource.RUSAGE_CHILDREN) - kids0) / n,
    }


def free_model(encoder):
    """The same encoder with a model that costs nothing: what is left is the pipeline itself
    (decode workers, hand-over, normalisation, Parquet), as with the model on a GPU."""
    return dataclasses.replace(encoder, image_fn=lambda x: x[:, 0, 0, : encoder.dim].clone())


def rss_child(table: str, workers: int) -> None:
    enc = build_encoder(TINY, device="cpu")
    with tempfile.TemporaryDirectory() as d:
        extract_image_features(enc, table, Path(d) / "f.parquet", batch_size=256, workers=workers)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"self_mb": own / 1024, "worker_max_mb": kids / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (model placement)")
    ap.add_argument("--rss", type=int, nargs="*", default=[1000, 10000])
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cm-bench")
    ap.add_argument("--rss-child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.rss_child:
        rss_child(a.rss_child[0], int(a.rss_child[1]))
        return
    torch.set_num_threads(a.workers)
    table = make_images(a.cache / f"n{a.n}", a.n)
    paths = pq.read_table(table).column("path").to_pylist()
    enc = build_encoder(TINY, device=a.device)
    seed_loop(enc, paths[:256])  # warm up
    rounds = []
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "f.parquet"

        def ours(encoder, path, draft=True):
            extract_image_features(
                encoder, table, path, batch_size=a.batch_size, workers=a.workers, draft=draft
            )

        # Interleaved rounds: this machine's speed drifts over minutes, so every ratio is
        # taken within one round and the medians over rounds are reported.
        for _ in range(a.rounds):
            seed = a.n / timed(lambda: seed_loop(enc, paths))
            ceiling = decode_ceiling(enc, paths, a.workers, draft=True)
            full = cpu_profile(lambda: ours(enc, out), a.n)
            free = cpu_profile(lambda: ours(free_model(enc), Path(d) / "free.parquet"), a.n)
            rounds.append(
                {
                    "seed_loop_img_s": seed,
                    "decode_ceiling_img_s": ceiling,
                    "ours": full,
                    "pipeline_only_free_model": free,
                    "speedup_vs_seed": full["img_s"] / seed,
                    "pct_of_ceiling": 100 * full["img_s"] / ceiling,
                    "pipeline_only_pct_of_ceiling": 100 * free["img_s"] / ceiling,
                }
            )
        t_draft = timed(lambda: ours(enc, out))
        t_full = timed(lambda: ours(enc, Path(d) / "full.parquet", draft=False))
        _, draft_emb = read_embeddings(out)
        _, full_emb = read_embeddings(Path(d) / "full.parquet")
    cos = (draft_emb * full_emb).sum(axis=1)
    res = {
        "machine": machine(),
        "images": a.n,
        "device": str(enc.device),
        "median_speedup_vs_seed": median(r["speedup_vs_seed"] for r in rounds),
        "median_pct_of_ceiling": median(r["pct_of_ceiling"] for r in rounds),
        "median_pipeline_only_pct_of_ceiling": median(
            r["pipeline_only_pct_of_ceiling"] for r in rounds
        ),
        "rounds": rounds,
        "ours_no_draft_img_s": a.n / t_full,
        "draft_time_saved_pct": 100 * (1 - t_draft / t_full),
        "draft_cosine_mean": float(cos.mean()),
        "draft_cosine_min": float(cos.min()),
    }
    for n in a.rss:
        t = make_images(a.cache / f"n{n}", n)
        proc = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(t), str(a.workers)],
            capture_output=True,
            text=True,
            check=True,
        )
        res[f"peak_rss_{n}"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
