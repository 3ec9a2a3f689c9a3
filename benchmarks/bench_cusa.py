"""CUSA: training-step time against contrastive-only, and teacher-feature memory.

1. Step time, in interleaved pairs on the same model and batch: a contrastive-only step (the
   baseline), a CUSA step with the teachers' features read from their files (this pipeline),
   and a CUSA step that also runs the text teacher on the batch's captions (the reference:
   ``txt_enc_assisant.encode`` in every step, retrieval.py). The text teacher is
   all-mpnet-base-v2's architecture (MPNet, 12 layers, 768 wide) with random weights: the
   same arithmetic, no download. Reported: median and range of the per-pair ratios.
2. Memory of the image teacher's features: the reference loads a pickled dict of every
   training image's feature into RAM (``np.load(...).item()``); here a memory-mapped .npy.
   Anonymous memory (RssAnon: what cannot be dropped under pressure) after reading every row
   once, for two collection sizes.

    python benchmarks/bench_cusa.py --pairs 5 --steps 2 --batch 16
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from crossmodal.cusa.losses import REFERENCE_SETTINGS  # noqa: E402
from crossmodal.cusa.model import CusaStudent, parameter_groups, variant_settings  # noqa: E402
from crossmodal.cusa.train import train_step  # noqa: E402
from crossmodal.encoders.registry import load_trainable_clip  # noqa: E402

IMAGE_TEACHER_DIM = 49 * 768  # Unicom ViT-B/32 forward_features, flattened
TEXT_TEACHER_DIM = 768  # all-mpnet-base-v2


def student(method: str, model: str):
    torch.manual_seed(0)
    clip = load_trainable_clip({"backend": "open_clip", "model": model, "pretrained": None})
    s = CusaStudent(clip, variant_settings(REFERENCE_SETTINGS, method))
    return s, torch.optim.AdamW(parameter_groups(s, 1e-4), lr=1e-5), clip


def text_teacher():
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    return MPNetModel(MPNetConfig()).eval()  # all-mpnet-base-v2's shape


def batch(n: int, tokenizer):
    g = torch.Generator().manual_seed(0)
    captions = [f"a photo of {k} things on a table near a window" for k in range(n)]
    return (
        torch.randn(n, 3, 224, 224, generator=g),
        tokenizer(captions),
        torch.randn(n, IMAGE_TEACHER_DIM, generator=g),
        torch.randn(n, TEXT_TEACHER_DIM, generator=g),
        torch.arange(n) // 2,
    )


def timed_steps(model, optimizer, data, steps: int, teacher=None) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        if teacher is not None:  # the reference: the text teacher runs inside every step
            with torch.no_grad():
                ids = torch.randint(5, 30000, (data[0].shape[0], 16))
                hidden = teacher(input_ids=ids, attention_mask=torch.ones_like(ids))
                text = hidden.last_hidden_state.mean(1)  # mean pooling
            data = (*data[:3], text, data[4])
        train_step(model, optimizer, data, torch.device("cpu"))
    return (time.perf_counter() - start) / steps


def step_times(pairs: int, steps: int, batch_size: int, model: str) -> dict:
    contrastive, opt_c, clip = student("contrastive", model)
    cusa, opt_u, _ = student("cusa", model)
    mpnet = text_teacher()
    data = batch(batch_size, clip.tokenizer)
    for m, o in ((contrastive, opt_c), (cusa, opt_u)):
        timed_steps(m, o, data, 1)  # warm-up
    rows = []
    for i in range(pairs):
        order = ["contrastive", "cusa", "cusa_online"]
        if i % 2:
            order.reverse()
        t = {}
        for name in order:
            if name == "contrastive":
                t[name] = timed_steps(contrastive, opt_c, data, steps)
            else:
                t[name] = timed_steps(cusa, opt_u, data, steps, mpnet if "online" in name else None)
        rows.append(t)

    def ratio(key: str) -> dict:
        values = [r[key] / r["contrastive"] for r in rows]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "model": f"{model} (random weights), batch {batch_size}, CPU",
        "seconds_per_step": rows,
        "cusa_over_contrastive": ratio("cusa"),
        "cusa_online_teacher_over_contrastive": ratio("cusa_online"),
    }


MEMORY_PROBE = r"""
import json, pickle, sys
import numpy as np

def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

kind, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
before = anon_kb()
if kind == "dict":
    with open(path, "rb") as fh:
        table = pickle.load(fh)
    total = sum(float(table[i][0]) for i in range(n))
else:
    table = np.load(path, mmap_mode="r")
    total = sum(float(np.asarray(table[i], dtype=np.float32)[0]) for i in range(n))
print(json.dumps({"anon_mb": (anon_kb() - before) / 1024}))
"""


def teacher_memory(sizes: list[int], dim: int) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            rng = np.random.default_rng(0)
            arr = np.lib.format.open_memmap(f"{tmp}/t.npy", "w+", np.float32, (n, dim))
            for start in range(0, n, 256):
                arr[start : start + 256] = rng.standard_normal((min(256, n - start), dim))
            arr.flush()
            with open(f"{tmp}/t.pkl", "wb") as fh:
                pickle.dump({i: np.array(arr[i]) for i in range(n)}, fh, protocol=4)
            del arr
            row = {"images": n, "file_mb": n * dim * 4 / 2**20}
            for kind, path in (("dict", f"{tmp}/t.pkl"), ("memmap", f"{tmp}/t.npy")):
                probe = [sys.executable, "-c", MEMORY_PROBE, kind, path, str(n)]
                row[f"{kind}_anon_mb"] = json.loads(subprocess.check_output(probe))["anon_mb"]
            out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--model", default="ViT-B-32")
    ap.add_argument("--memory-sizes", type=int, nargs="+", default=[1000, 4000])
    args = ap.parse_args()
    torch.set_num_threads(2)
    result = {
        "machine": machine(),
        "step_time": step_times(args.pairs, args.steps, args.batch, args.model),
        "teacher_memory": teacher_memory(args.memory_sizes, IMAGE_TEACHER_DIM),
        "settings": dataclasses.asdict(REFERENCE_SETTINGS),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
