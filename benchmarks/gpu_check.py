"""The steps of ``benchmarks/gpu_check.sh``: every path only a GPU exercises, one subcommand each.

Each step writes ``RESULT.md`` (one markdown bullet: the numbers, or ``SKIPPED (reason)``) and
``RESULT.json`` (the raw measurements) and exits 0; it exits non-zero only when something that
should work failed. A package the GPU machine lacks is a skip with the reason, never a crash, so
one missing wheel does not cost the other checks. ``--smoke`` shrinks every size and runs on
the CPU, so the logic is tested where there is no GPU; numbers from it are not GPU numbers.

    python benchmarks/gpu_check.py features --out RES/a --n 20000 --workers 16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TITLES = {
    "a": "(a) fp16 feature extraction",
    "b": "(b) FAISS on the GPU vs faiss-cpu",
    "c": "(c) vLLM server on CUDA, image requests through the vllm backend",
    "d": "(d) training steps under torchrun",
}
WHEEL_HINT = "carry its wheel: benchmarks/gpu_wheels.sh, then WHEELS=.whl"


class Skip(Exception):
    """A check that cannot run here; the message is the reason written to OUT.md."""


class StepFailed(Exception):
    """A check that ran and found something wrong: reported as FAILED with its details."""

    def __init__(self, text: str, details: dict):
        super().__init__(text)
        self.text, self.details = text, details


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def require(module: str) -> Any:
    """Import ``module`` or skip the check, naming what is missing and how to bring it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise Skip(f"`{module}` is not importable ({exc}); {WHEEL_HINT}") from exc


def write_result(out: Path, key: str, status: str, text: str, details: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(f"- **{TITLES[key]}**: {text}\n")
    out.with_suffix(".json").write_text(json.dumps({"status": status, **details}, indent=2))


def run_step(key: str, out: Path, fn: Callable[[], tuple[str, dict]]) -> int:
    """Run one check; a :class:`Skip` becomes ``SKIPPED (reason)``, anything else propagates
    (the shell script reports it as FAILED with the traceback's last line)."""
    try:
        text, details = fn()
    except Skip as why:
        write_result(out, key, "skipped", f"SKIPPED ({why})", {"reason": str(why)})
        return 0
    write_result(out, key, "ok", text, details)
    return 0


# --- (a) feature extraction -------------------------------------------------------------------


def make_collection(folder: Path, n: int, distinct: int, procs: int) -> Path:
    """``n`` JPEG files listed in images.parquet: ``distinct`` generated images (COCO-sized,
    benchmarks/common.py's generator, in ``procs`` processes), hard-linked up to ``n`` files.
    Decoding costs the same per file whether or not two files hold the same bytes."""
    from concurrent.futures import ProcessPoolExecutor

    import pyarrow as pa
    import pyarrow.parquet as pq
    from common import make_images

    from crossmodal.data.prepare import IMAGES_SCHEMA

    table = folder / "images.parquet"
    if table.exists() and pq.read_metadata(table).num_rows == n:
        return table
    distinct = min(distinct, n)
    per = -(-distinct // procs)
    parts = [(folder / f"part{k}", min(per, distinct - k * per), k) for k in range(procs)]
    parts = [p for p in parts if p[1] > 0]
    with ProcessPoolExecutor(len(parts)) as pool:
        futures = [pool.submit(make_images, d, c, (640, 480), s) for d, c, s in parts]
        tables = [f.result() for f in futures]
    sources = [p for t in tables for p in pq.read_table(t).column("path").to_pylist()]
    files = folder / "files"
    files.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        dst = files / f"{i:06d}.jpg"
        if not dst.exists():
            os.link(sources[i % len(sources)], dst)
        paths.append(str(dst))
    pq.write_table(
        pa.table(
            {"image_id": list(range(n)), "path": paths, "width": [640] * n, "height": [480] * n},
            schema=IMAGES_SCHEMA,
        ),
        table,
    )
    return table


def features(a: argparse.Namespace) -> tuple[str, dict]:
    torch = require("torch")
    require("open_clip")
    require("pycocotools")
    device = "cpu" if a.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA GPU visible to torch")
    import pyarrow.parquet as pq
    from bench_features import cpu_profile, decode_ceiling, free_model

    from crossmodal.encoders import build_encoder
    from crossmodal.features import extract_image_features

    t0 = time.perf_counter()
    table = make_collection(Path(a.cache) / f"n{a.n}", a.n, a.distinct, a.workers)
    made_s = time.perf_counter() - t0
    paths = pq.read_table(table).column("path").to_pylist()
    warm = Path(a.cache) / "warmup.parquet"
    pq.write_table(pq.read_table(table).slice(0, min(a.n, 4 * a.batch_size)), warm)
    specs = {"tiny": {"backend": "tiny", "seed": 0}}
    if not a.smoke:  # a real-size model (random weights, no download) next to the tiny one
        specs["ViT-L-14"] = {"backend": "open_clip", "model": "ViT-L-14", "pretrained": None}
    encoders = {name: build_encoder(spec, device=device) for name, spec in specs.items()}
    sizes = {enc.image_size for enc in encoders.values()}
    if len(sizes) != 1:  # one decode ceiling serves every model only at one input size
        raise StepFailed(f"the models' input sizes differ: {sizes}", {"sizes": sorted(sizes)})
    tiny = encoders["tiny"]
    torch.set_num_threads(1)  # the main process: leave every core to the decode workers
    rounds = []
    with tempfile.TemporaryDirectory() as d:

        def run(encoder, name: str, table: Path = table) -> None:
            extract_image_features(
                encoder,
                table,
                Path(d) / f"{name}.parquet",
                batch_size=a.batch_size,
                workers=a.workers,
            )

        for name, enc in encoders.items():  # CUDA context, kernels, worker start-up
            run(enc, f"warm-{name}", warm)
        # Interleaved rounds, each ratio within its round (as bench_features.py does)
        for _ in range(a.rounds):
            ceiling = decode_ceiling(tiny, paths, a.workers, draft=True)
            free = cpu_profile(lambda: run(free_model(tiny), "free"), a.n)
            row = {
                "decode_ceiling_img_s": ceiling,
                "free_model_pct_of_ceiling": 100 * free["img_s"] / ceiling,
            }
            for name, enc in encoders.items():
                full = cpu_profile(lambda enc=enc, name=name: run(enc, name), a.n)
                row[name] = {**full, "pct_of_ceiling": 100 * full["img_s"] / ceiling}
            rounds.append(row)
    ceiling = median(r["decode_ceiling_img_s"] for r in rounds)
    pipeline = median(r["free_model_pct_of_ceiling"] for r in rounds)
    models = {
        name: {
            "precision": enc.precision,
            "device": str(enc.device),
            "median_img_s": median(r[name]["img_s"] for r in rounds),
            "median_pct_of_ceiling": median(r[name]["pct_of_ceiling"] for r in rounds),
        }
        for name, enc in encoders.items()
    }
    parts = [
        f"{name} ({r['precision']}, {r['device']}): {r['median_img_s']:,.0f} img/s = "
        f"{r['median_pct_of_ceiling']:.1f}% of the decode ceiling"
        for name, r in models.items()
    ]
    text = (
        f"{a.n:,} JPEGs 640×480 ({min(a.distinct, a.n):,} distinct), {a.workers} decode workers, "
        f"batch {a.batch_size}, median of {a.rounds} rounds; decode ceiling "
        f"{ceiling:,.0f} img/s; " + "; ".join(parts) + f"; the pipeline alone (free model) "
        f"{pipeline:.1f}% of the ceiling"
    )
    if a.smoke:
        text = "CPU smoke run, not a GPU number: " + text
    details = {"n": a.n, "distinct": a.distinct, "workers": a.workers, "images_made_s": made_s}
    if device == "cuda":
        details["max_cuda_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return text, {**details, "models": models, "rounds": rounds}


# --- (b) FAISS ----------------------------------------------------------------------------------


def clustered(n: int, d: int, queries: int, seed: int = 0):
    """CLIP-like vectors: 1000 clusters, queries near (not on) database points (as
    bench_faiss.py --data clustered)."""
    import numpy as np
    from bench_faiss import unit

    rng = np.random.default_rng(seed)
    centres = unit(rng, 1000, d)
    x = centres[rng.integers(0, 1000, n)] + 0.6 * unit(rng, n, d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.integers(0, n, queries)] + 0.3 * unit(rng, queries, d)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x.astype(np.float32), q.astype(np.float32)


def recall(got, exact) -> tuple[float, float]:
    import numpy as np

    r1 = float(np.mean(got[:, 0] == exact[:, 0]))
    r10 = float(np.mean([len(set(g) & set(e)) / len(e) for g, e in zip(got, exact, strict=True)]))
    return r1, r10


def timed_search(index, q, k: int, exclude=None):
    from crossmodal.index import search

    t = time.perf_counter()
    ids, _ = search(index, q, k, exclude)
    return ids, len(q) / (time.perf_counter() - t)


def faiss_check(a: argparse.Namespace) -> tuple[str, dict]:
    faiss = require("faiss")
    import numpy as np

    from crossmodal.index import IndexParams, build_index, gpu_available, load_index, save_index

    x, q = clustered(a.n, a.d, a.queries)
    ids = np.arange(a.n, dtype=np.int64)
    exclude = [
        [int(i) for i in np.random.default_rng(k).integers(0, a.n, 5)] for k in range(len(q))
    ]
    rows: dict[str, dict] = {}
    exact = exact_ex = None
    with tempfile.TemporaryDirectory() as d:
        for kind, params in (
            ("flat", IndexParams("flat")),
            ("ivf", IndexParams("ivf", nlist=a.nlist, nprobe=a.nprobe)),
        ):
            t = time.perf_counter()
            cpu = build_index(x, ids, params)
            build_s = time.perf_counter() - t
            path = Path(d) / f"{kind}.faiss"
            save_index(cpu, path, {"kind": kind})
            cpu_ids, cpu_qps = timed_search(cpu, q, 10)
            cpu_ex, _ = timed_search(cpu, q, 10, exclude)
            if exact is None:
                exact, exact_ex = cpu_ids, cpu_ex
            rows[f"cpu {kind}"] = {
                "build_s": build_s,
                "qps": cpu_qps,
                "recall_vs_exact": recall(cpu_ids, exact),
            }
            if not gpu_available():
                continue
            t = time.perf_counter()
            gpu = load_index(path, use_gpu=True, nprobe=params.nprobe)
            load_s = time.perf_counter() - t
            gpu_ids, gpu_qps = timed_search(gpu, q, 10)  # first call includes warm-up
            gpu_ids, gpu_qps = timed_search(gpu, q, 10)
            gpu_ex, _ = timed_search(gpu, q, 10, exclude)
            rows[f"gpu {kind} (load_index)"] = {
                "to_gpu_s": load_s,
                "qps": gpu_qps,
                "recall_vs_exact": recall(gpu_ids, exact),
                "recall_vs_cpu_same_kind": recall(gpu_ids, cpu_ids),
                "excluded_ids_returned": int(
                    sum(len(set(g) & set(e)) for g, e in zip(gpu_ex, exclude, strict=True))
                ),
                "recall_with_exclusions_vs_exact": recall(gpu_ex, exact_ex),
            }
        if gpu_available():  # an IVF trained and filled on the GPU itself
            res = faiss.StandardGpuResources()
            cfg = faiss.GpuIndexIVFFlatConfig()
            t = time.perf_counter()
            nlist = max(1, min(a.nlist, a.n // 39))
            ivf = faiss.GpuIndexIVFFlat(res, a.d, nlist, faiss.METRIC_INNER_PRODUCT, cfg)
            ivf.train(x)
            ivf.add(x)
            build_s = time.perf_counter() - t
            ivf.nprobe = min(a.nprobe, nlist)
            _, got = ivf.search(q, 10)
            rows["gpu ivf (built on the GPU)"] = {
                "build_s": build_s,
                "recall_vs_exact": recall(got, exact),
            }
    details = {"n": a.n, "d": a.d, "queries": len(q), "nlist": a.nlist, "nprobe": a.nprobe}
    details |= {"faiss": faiss.__version__, "rows": rows}
    cpu_part = "; ".join(
        f"{k}: {v['qps']:,.0f} q/s, recall@1/@10 vs exact {v['recall_vs_exact'][0]:.3f}/"
        f"{v['recall_vs_exact'][1]:.3f}"
        for k, v in rows.items()
        if k.startswith("cpu")
    )
    if not gpu_available():
        why = "faiss has no GPU support (a faiss-cpu build)"
        if hasattr(faiss, "StandardGpuResources"):
            why = "faiss sees no GPU"
        raise Skip(f"{why}; CPU part only: {cpu_part}")
    gpu_part = "; ".join(
        f"{k}: "
        + (f"{v['qps']:,.0f} q/s, " if "qps" in v else f"built in {v['build_s']:.1f} s, ")
        + f"recall@1/@10 vs CPU exact {v['recall_vs_exact'][0]:.3f}/{v['recall_vs_exact'][1]:.3f}"
        + (f", excluded ids returned: {v['excluded_ids_returned']}" if "qps" in v else "")
        for k, v in rows.items()
        if k.startswith("gpu")
    )
    text = f"faiss {faiss.__version__}, {a.n:,}×{a.d} clustered, {len(q)} queries; "
    return text + gpu_part + "; " + cpu_part, details


# --- (c) vLLM ---------------------------------------------------------------------------------


def vllm_check(a: argparse.Namespace) -> tuple[str, dict]:
    python = a.vllm_python or sys.executable
    probe = subprocess.run(
        [python, "-c", "import vllm, sys; sys.stdout.write(vllm.__version__)"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        raise Skip(
            f"vLLM is not installed in {python} (its CUDA wheel is ~340 MB, over the 64 MiB "
            "that can be carried to this machine); set VLLM_PYTHON to a python that has it"
        )
    require("openai")
    if a.smoke or not cuda_available():
        raise Skip("no CUDA GPU visible to torch" if not a.smoke else "CPU smoke run")
    from PIL import Image

    from crossmodal.generation import build_generator
    from crossmodal.generation.tiny import build_tiny_llava, build_tiny_qwen2_vl
    from crossmodal.generation.types import Message, Request, image, text

    builders = {"llava": build_tiny_llava, "qwen2_vl": build_tiny_qwen2_vl}
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as d:
        picture = Path(d) / "picture.jpg"
        Image.new("RGB", (640, 480), (200, 40, 40)).save(picture)
        for arch, build in builders.items():
            folder = build(Path(d) / arch)
            gen = build_generator(
                {
                    "backend": "vllm",
                    "model": str(folder),
                    "server_command": [python, "-m", "vllm.entrypoints.openai.api_server"],
                    "server_args": a.server_args.split(),
                    "startup_timeout": a.startup_timeout,
                    "max_in_flight": 32,
                }
            )
            reqs = [
                Request(
                    (Message("user", (image(picture), text("Describe the image."))),),
                    max_tokens=16,
                    temperature=0.7,
                    seed=s % 8,
                )
                for s in range(a.requests)
            ]
            try:
                t = time.perf_counter()
                first = gen.generate(reqs[:1])
                ready_s = time.perf_counter() - t
                t = time.perf_counter()
                got = gen.generate(reqs)
                batch_s = time.perf_counter() - t
            except Exception as exc:  # one model's failure must not hide the other's result
                rows[arch] = {"error": f"{type(exc).__name__}: {str(exc)[-800:]}"}
                continue
            finally:
                gen.close()
            ok = [r for r in got if r.ok]
            seeded_same = all(
                got[i].text == got[i + 8].text for i in range(min(8, len(got) - 8)) if got[i].ok
            )
            rows[arch] = {
                "first_answer_incl_startup_s": ready_s,
                "answered": len(ok),
                "requests": len(reqs),
                "req_s": len(reqs) / batch_s,
                "tokens_in_first": first[0].tokens_in if first and first[0].ok else None,
                "same_seed_same_text": seeded_same,
                "errors": sorted({r.error for r in got if not r.ok})[:3],
            }
    parts = []
    for arch, r in rows.items():
        if "error" in r:
            parts.append(f"{arch}: FAILED ({r['error'][:300]})")
        else:
            parts.append(
                f"{arch}: server up and first answer in {r['first_answer_incl_startup_s']:.0f} s, "
                f"{r['answered']}/{r['requests']} image requests answered at {r['req_s']:.1f} "
                f"req/s, same seed same text: {r['same_seed_same_text']}"
            )
    failed = any("error" in r or r["answered"] < r["requests"] for r in rows.values())
    text_ = f"vLLM {probe.stdout.strip()}; " + "; ".join(parts)
    details = {"vllm": probe.stdout.strip(), "server_args": a.server_args, "models": rows}
    if failed:
        raise StepFailed(text_, details)
    return text_, details


# --- (d) training -----------------------------------------------------------------------------


def train_check(a: argparse.Namespace) -> tuple[str, dict]:
    """CUSA on the GPU: step time of CUSA against contrastive-only (ViT-B/32, random weights,
    batch 128: benchmarks/bench_cusa.py), then one epoch of ``cusa-train`` under torchrun with
    NCCL (every visible GPU) on a generated image-text world."""
    import torch

    if not a.smoke and not cuda_available():
        raise Skip("no CUDA GPU visible to torch")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_cusa

    device = "cpu" if a.smoke else "cuda"
    model, batch = ("tiny", 4) if a.smoke else ("ViT-B-32", 128)
    steps = bench_cusa.step_times(2 if a.smoke else 5, 1 if a.smoke else 3, batch, model, device)
    world = bench_cusa.make_world(Path(a.cache) / "itr", 16 if a.smoke else 256)
    gpus = 1 if a.smoke else max(1, torch.cuda.device_count())
    job = bench_cusa.train_job(world, model, 4 if a.smoke else 64, device)
    full = ["torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", "crossmodal"]
    full += ["cusa-train", *job]
    t = time.perf_counter()
    proc = subprocess.run(full, capture_output=True, text=True)
    wall = time.perf_counter() - t
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
    details = {"step_time": steps, "command": full, "returncode": proc.returncode, "wall_s": wall}
    if proc.returncode != 0:
        raise StepFailed(
            f"cusa-train under torchrun exited {proc.returncode}: {tail[-1:]}", details
        )
    r, o = steps["cusa_over_contrastive"], steps["cusa_online_teacher_over_contrastive"]
    text_ = (
        f"CUSA step / contrastive step {r['median']:.3f}x ({r['min']:.3f}-{r['max']:.3f}), "
        f"with the reference's per-step text teacher {o['median']:.3f}x "
        f"({steps['model']}); one cusa-train epoch under torchrun on {gpus} GPU(s): {wall:.0f} s"
    )
    return text_, details


# --- command line -----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("features", "faiss", "vllm", "train"))
    ap.add_argument("--out", type=Path, required=True, help="result path without suffix")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--distinct", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "cm-gpu-check"))
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--vllm-python", default=os.environ.get("VLLM_PYTHON"))
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--startup-timeout", type=float, default=150)
    ap.add_argument(
        "--server-args",
        default="--enforce-eager --gpu-memory-utilization 0.15 --max-model-len 4096",
        help="extra vLLM server flags (eager mode: no CUDA-graph capture, a faster start)",
    )
    a = ap.parse_args()
    key = {"features": "a", "faiss": "b", "vllm": "c", "train": "d"}[a.step]
    fn = {"features": features, "faiss": faiss_check, "vllm": vllm_check, "train": train_check}
    try:
        return run_step(key, a.out, lambda: fn[a.step](a))
    except StepFailed as failed:
        write_result(a.out, key, "failed", f"FAILED: {failed.text}", failed.details)
        return 1


if __name__ == "__main__":
    sys.exit(main())
