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


def student_spec(model: str) -> dict:
    """An open_clip model name with random weights, or ``tiny`` (the test model)."""
    if model == "tiny":
        return {"backend": "tiny", "seed": 0}
    return {"backend": "open_clip", "model": model, "pretrained": None}


def student(method: str, model: str, device: torch.device):
    torch.manual_seed(0)
    clip = load_trainable_clip(student_spec(model), device=str(device))
    s = CusaStudent(clip, variant_settings(REFERENCE_SETTINGS, method)).to(device)
    return s, torch.optim.AdamW(parameter_groups(s, 1e-4), lr=1e-5), clip


def text_teacher(device: torch.device):
    from transformers import MPNetConfig, MPNetModel

    torch.manual_seed(0)
    return MPNetModel(MPNetConfig()).eval().to(device)  # all-mpnet-base-v2's shape


def batch(n: int, tokenizer, device: torch.device):
    g = torch.Generator().manual_seed(0)
    captions = [f"a photo of {k} things on a table near a window" for k in range(n)]
    data = (
        torch.randn(n, 3, 224, 224, generator=g),
        tokenizer(captions),
        torch.randn(n, IMAGE_TEACHER_DIM, generator=g),
        torch.randn(n, TEXT_TEACHER_DIM, generator=g),
        torch.arange(n) // 2,
    )
    return tuple(t.to(device) for t in data)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(model, optimizer, data, steps: int, device: torch.device, teacher=None) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        if teacher is not None:  # the reference: the text teacher runs inside every step
            with torch.no_grad():
                ids = torch.randint(5, 30000, (data[0].shape[0], 16), device=device)
                hidden = teacher(input_ids=ids, attention_mask=torch.ones_like(ids))
                text = hidden.last_hidden_state.mean(1)  # mean pooling
            data = (*data[:3], text, data[4])
        train_step(model, optimizer, data, device)
    _sync(device)
    return (time.perf_counter() - start) / steps


def step_times(pairs: int, steps: int, batch_size: int, model: str, device: str = "cpu") -> dict:
    dev = torch.device(device)
    contrastive, opt_c, clip = student("contrastive", model, dev)
    cusa, opt_u, _ = student("cusa", model, dev)
    mpnet = text_teacher(dev)
    data = batch(batch_size, clip.tokenizer, dev)
    for m, o in ((contrastive, opt_c), (cusa, opt_u)):
        timed_steps(m, o, data, 1, dev)  # warm-up
    rows = []
    for i in range(pairs):
        order = ["contrastive", "cusa", "cusa_online"]
        if i % 2:
            order.reverse()
        t = {}
        for name in order:
            if name == "contrastive":
                t[name] = timed_steps(contrastive, opt_c, data, steps, dev)
            else:
                teacher = mpnet if "online" in name else None
                t[name] = timed_steps(cusa, opt_u, data, steps, dev, teacher)
        rows.append(t)

    def ratio(key: str) -> dict:
        values = [r[key] / r["contrastive"] for r in rows]
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    return {
        "model": f"{model} (random weights), batch {batch_size}, {device}",
        "seconds_per_step": rows,
        "cusa_over_contrastive": ratio("cusa"),
        "cusa_online_teacher_over_contrastive": ratio("cusa_online"),
    }


def make_world(folder: Path, n_images: int) -> dict[str, Path]:
    """A generated image-text world for a training run: JPEGs, pairs.parquet (5 captions per
    image; 80% train, 10% val, 10% test) and random teacher files in the stages' layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from common import make_images

    from crossmodal.cusa.teachers import ids_sha256

    images = pq.read_table(make_images(folder / "images", n_images)).to_pydict()
    rows: dict[str, list] = {k: [] for k in ("image_id", "path", "caption", "text", "split")}
    for k, path in enumerate(images["path"]):
        split = "train" if k < 0.8 * n_images else "val" if k < 0.9 * n_images else "test"
        for j in range(5):
            text = f"image {k} caption {j} shows shapes of colour {k % 7}"
            rows["image_id"].append(f"img{k}")
            rows["path"].append(path)
            rows["caption"].append(text)
            rows["text"].append(text)
            rows["split"].append(split)
    pairs = folder / "pairs.parquet"
    pq.write_table(pa.table(rows), pairs)
    train = [i for i, s in enumerate(rows["split"]) if s == "train"]
    ids = list(dict.fromkeys(rows["image_id"][i] for i in train))
    rng = np.random.default_rng(0)
    files = {"pairs": pairs}
    for kind, n, dim in (("image", len(ids), IMAGE_TEACHER_DIM), ("text", len(train), 768)):
        np.save(folder / f"{kind}.npy", rng.standard_normal((n, dim)).astype(np.float32))
        meta = {"rows": n, "dim": dim, "dtype": "float32"}
        meta.update(
            {"ids": ids}
            if kind == "image"
            else {"ids_sha256": ids_sha256([rows["text"][i] for i in train])}
        )
        (folder / f"{kind}.json").write_text(json.dumps(meta))
        files[f"{kind}_teacher"] = folder / f"{kind}.npy"
        files[f"{kind}_teacher_meta"] = folder / f"{kind}.json"
    return files


def train_job(world: dict[str, Path], model: str, batch_size: int, device: str) -> list[str]:
    """``cusa-train`` arguments for one epoch of CUSA on a generated world."""
    from crossmodal import stages
    from crossmodal.jobs import to_args

    out = world["pairs"].parent / "run"
    job = stages.CusaTrain(
        **world,
        model=out / "model.pt",
        history=out / "history.json",
        student=student_spec(model),
        method="cusa",
        loss=dataclasses.asdict(REFERENCE_SETTINGS),
        epochs=1,
        batch_size=batch_size,
        lr=1e-5,
        min_lr=1e-6,
        weight_decay=1e-4,
        seed=23,
        select="val",
        device=device,
        workers=4,
        eval_batch_size=128,
        checkpoints=out / "checkpoints",
        checkpoint_every=0,
    )
    return to_args(job)


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
