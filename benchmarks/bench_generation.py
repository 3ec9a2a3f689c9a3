"""ReCoD loop-synchronous batches vs one request at a time (the seed's pattern).

Seed pattern: for each image, for each loop: embed its sentences, search, send one request.
Ours: for each loop, embed every target's sentences at once, one batched search, one batch of
requests through the generator. Same tiny models and data; ratio within one run.

    python benchmarks/bench_generation.py --targets 24 --loops 4
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

from crossmodal import workflow  # noqa: E402
from crossmodal.config import validate_config  # noqa: E402
from crossmodal.data.demo import make_demo_world  # noqa: E402
from crossmodal.data.prepare import prepare_collection  # noqa: E402
from crossmodal.encoders import build_encoder  # noqa: E402
from crossmodal.features import extract_image_features, read_embeddings  # noqa: E402
from crossmodal.generation import build_generator  # noqa: E402
from crossmodal.generation.tiny import build_tiny_llava  # noqa: E402
from crossmodal.index import IndexParams, build_index  # noqa: E402
from crossmodal.recod.loop import DescribeSettings, describe_base, describe_recod  # noqa: E402
from crossmodal.recod.retrieval import retrieve  # noqa: E402


def demo_settings(method: str, n_descriptions: int) -> DescribeSettings:
    """The demo VLM's describe settings (schema defaults), with 16-token answers."""
    config = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    config["vlms"]["tiny_llava"]["max_tokens"] = 16
    config["describe"]["n_descriptions"] = n_descriptions
    config = validate_config(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")
    return DescribeSettings.from_dict(
        workflow.describe_settings(config, "tiny_llava", method, "val")
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", type=int, default=24)
    ap.add_argument("--loops", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=24)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp())
    make_demo_world(root, seed=0, n_train=200, n_val=a.targets, image_size=(320, 240))
    for s in ("train", "val"):
        prepare_collection(
            root / f"coco/{s}2014",
            root / f"coco/annotations/captions_{s}2014.json",
            root / f"{s}.parquet",
            root / f"{s}_caps.parquet",
        )
    enc = build_encoder({"backend": "tiny", "seed": 0}, device="cpu")
    extract_image_features(enc, root / "train.parquet", root / "f.parquet", workers=0)
    ids, x = read_embeddings(root / "f.parquet")
    index = build_index(x, ids, IndexParams("flat"))
    import pyarrow.parquet as pq

    caps: dict[int, list[str]] = {}
    for row in pq.read_table(root / "train_caps.parquet").to_pylist():
        caps.setdefault(row["image_id"], []).append(row["caption"])
    paths = {r["image_id"]: r["path"] for r in pq.read_table(root / "train.parquet").to_pylist()}
    targets = [(r["image_id"], r["path"]) for r in pq.read_table(root / "val.parquet").to_pylist()]
    gen = build_generator(
        {"backend": "transformers", "model": str(build_tiny_llava(root / "vlm")), "device": "cpu"}
    )
    settings = demo_settings("recod", a.loops + 1)
    # loop 0 is the base run's first description (not timed: both patterns share it)
    base = describe_base(demo_settings("base", 1), targets, gen.generate)
    first = {r.image_id: r.text for r in base}

    def ret(descs, exclude):
        return retrieve(enc, index, descs, exclude)

    t = time.perf_counter()
    for target in targets:  # the seed: one image, one request at a time
        describe_recod(settings, [target], gen.generate, ret, caps, paths, first)
    t_seed = time.perf_counter() - t
    t = time.perf_counter()
    describe_recod(settings, targets, gen.generate, ret, caps, paths, first)
    t_ours = time.perf_counter() - t
    batched = build_generator(
        {
            "backend": "transformers",
            "model": str(root / "vlm"),
            "device": "cpu",
            "batch_size": a.batch_size,
        }
    )
    t = time.perf_counter()
    describe_recod(settings, targets, batched.generate, ret, caps, paths, first)
    t_batched = time.perf_counter() - t
    n = len(targets) * a.loops
    result = {
        "machine": machine(),
        "targets": len(targets),
        "requests": n,
        "seed_pattern_req_s": n / t_seed,
        "loop_synchronous_exact_req_s": n / t_ours,
        "loop_synchronous_batched_req_s": n / t_batched,
        "batch_size": a.batch_size,
        "ratio_exact_vs_seed": t_seed / t_ours,
        "ratio_batched_vs_seed": t_seed / t_batched,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
