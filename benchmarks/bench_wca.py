"""WCA crop features: crops/s against the reference's loop, cache size, and scoring cost.

Baseline: a re-creation of the reference's loop (JinhaoLee/WCA ``main.py:47-82`` and
``helper.py:251-273``): a DataLoader over the images whose loader decodes one image, draws M
crops (NumPy global side, torchvision ``RandomCrop`` position) and runs every view through the
encoder's preprocessing in the worker; one forward per batch of images x (1 + M) views;
features L2-normalised and kept in memory, then pickled. Ours: ``extract_crop_features`` (uint8
views from the workers, regrouped into encoder batches, a memory-mapped ``.npy``). Same images,
same encoder, same M, batch size and workers; pairs interleaved with alternating order, the
ratio taken per pair. Then: the cache's size per 1,000 images, and 20 WCA runs of scoring over
the cached features (``wca_accuracies``) as a fraction of the crop-extraction time.

    python benchmarks/bench_wca.py --n 32 --crops 60 --pairs 5
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, make_images  # noqa: E402

from crossmodal.encoders import build_encoder  # noqa: E402
from crossmodal.wca import scoring  # noqa: E402
from crossmodal.wca.crops import extract_crop_features  # noqa: E402

TINY = {"backend": "tiny", "seed": 0}


class ReferenceViews(Dataset):
    """main.py's custom_loader: decode, draw M crops, preprocess every view, in the worker."""

    def __init__(self, paths: list[str], preprocess, n_crops: int, alpha: float):
        self.paths, self.preprocess, self.n_crops, self.alpha = paths, preprocess, n_crops, alpha

    def __len__(self) -> int:
        return len(self.paths)

    def random_crop(self, img: Image.Image) -> Image.Image:  # main.py:47-62
        side = int(np.random.uniform(low=self.alpha, high=0.9) * min(img.size))
        return transforms.RandomCrop(side)(img)

    def __getitem__(self, i: int):
        img = Image.open(self.paths[i]).convert("RGB")
        views = [self.preprocess(img)] + [
            self.preprocess(self.random_crop(img)) for _ in range(self.n_crops)
        ]
        return torch.stack(views), 0


@torch.inference_mode()
def reference_loop(encoder, paths, n_crops, alpha, batch_size, workers, out: Path) -> float:
    """Seconds for the reference's precompute (helper.py:251-273) on ``paths``."""
    start = time.perf_counter()
    loader = DataLoader(
        ReferenceViews(paths, encoder.preprocess, n_crops, alpha),
        batch_size=batch_size,
        num_workers=workers,
        shuffle=False,
    )
    feats = []
    for images, _ in loader:
        b, v = images.shape[:2]
        emb = encoder.encode_pixels(images.view(b * v, *images.shape[2:]))
        feats.append(torch.as_tensor(emb).view(b, v, -1).half())
    with out.open("wb") as fh:
        pickle.dump(torch.cat(feats), fh)
    return time.perf_counter() - start


def ours(encoder, table, n_crops, alpha, batch_size, workers, out: Path) -> float:
    start = time.perf_counter()
    extract_crop_features(
        encoder,
        table,
        out,
        out.with_suffix(".json"),
        n_crops=n_crops,
        alpha=alpha,
        seed=42,
        batch_size=batch_size,
        workers=workers,
        dtype="float16",
        max_skip_fraction=0.0,
        max_pixels=10**9,
    )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32, help="images")
    ap.add_argument("--crops", type=int, default=60, help="M (ImageNet's; 100 elsewhere)")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--classes", type=int, default=1000, help="classes scored (ImageNet's)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--sampled", type=int, default=60)
    ap.add_argument("--size", type=int, nargs=2, default=(500, 375), help="image width height")
    args = ap.parse_args()
    torch.manual_seed(0)
    np.random.seed(0)
    encoder = build_encoder(TINY, device="cpu", precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        table = make_images(tmp / "images", args.n, size=tuple(args.size))
        paths = pq.read_table(table).column("path").to_pylist()
        views = args.n * (1 + args.crops)
        common = (args.crops, 0.5, args.batch_size, args.workers)
        ours(encoder, table, *common, tmp / "warm.npy")  # warm-up: page cache, threads
        ratios, ours_s, ref_s = [], [], []
        for pair in range(args.pairs):
            order = ("ours", "ref") if pair % 2 == 0 else ("ref", "ours")
            times = {}
            for who in order:
                if who == "ours":
                    times[who] = ours(encoder, table, *common, tmp / f"ours{pair}.npy")
                else:
                    times[who] = reference_loop(encoder, paths, *common, tmp / f"ref{pair}.pkl")
            ours_s.append(times["ours"])
            ref_s.append(times["ref"])
            ratios.append(times["ref"] / times["ours"])  # = ours crops/s over the reference's
        cache = tmp / "ours0.npy"
        cache_bytes = cache.stat().st_size
        ref_bytes = (tmp / "ref0.pkl").stat().st_size
        cached = np.load(cache, mmap_mode="r")
        labels = np.random.default_rng(0).integers(0, args.classes, args.n)
        z = scoring.normalize(np.random.default_rng(1).standard_normal((args.classes, encoder.dim)))
        indices = scoring.draw_crop_indices(42, args.runs, args.crops, args.sampled)
        score_s = []
        for _ in range(args.pairs):
            start = time.perf_counter()
            scoring.wca_accuracies(cached, labels, z, indices, 4.0)
            score_s.append(time.perf_counter() - start)
    result = {
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "encoder": "tiny (random-weight open_clip, CPU, fp32)",
        "image_size": args.size,
        "images": args.n,
        "crops_per_image": args.crops,
        "views_per_trial": views,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "ours_crops_per_s_median": views / median(ours_s),
        "reference_crops_per_s_median": views / median(ref_s),
        "ratio_per_pair": [round(r, 3) for r in ratios],
        "ratio_median": median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "cache_dim": encoder.dim,
        "cache_mb_per_1000_images": cache_bytes / args.n * 1000 / 1e6,
        "reference_pickle_mb_per_1000_images": ref_bytes / args.n * 1000 / 1e6,
        "cache_mb_per_1000_images_vitb32_formula": 1000 * (1 + args.crops) * 512 * 2 / 1e6,
        "scoring_runs": args.runs,
        "scoring_classes": args.classes,
        "scoring_s_median": median(score_s),
        "scoring_fraction_of_extraction": median(score_s) / median(ours_s),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
