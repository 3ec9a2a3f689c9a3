"""Shared helpers for the benchmarks: synthetic COCO-sized images and machine facts."""

from __future__ import annotations

import os
import platform
import random
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFilter

from crossmodal.data.prepare import IMAGES_SCHEMA


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    return f"{date.today().isoformat()}, {os.cpu_count()} cores ({cpu}), {platform.system()}"


def make_images(folder: Path, n: int, size=(640, 480), seed: int = 0) -> Path:
    """n photo-like JPEGs (smooth gradients, shapes, mild noise) at COCO's typical size."""
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "images.parquet"
    if table.exists() and pq.read_metadata(table).num_rows == n:
        return table
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for i in range(n):
        base = np.stack(
            [(xx * rng.random() + yy * rng.random()) % 256 for _ in range(3)], axis=-1
        ).astype(np.uint8)
        img = Image.fromarray(base)
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randint(2, 6)):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            box = (x0, y0, x0 + rng.randint(20, 200), y0 + rng.randint(20, 200))
            draw.ellipse(box, fill=tuple(rng.randrange(256) for _ in range(3)))
        img = img.filter(ImageFilter.GaussianBlur(1))
        noise = nrng.integers(-8, 8, (h, w, 3))
        img = Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))
        p = folder / f"{i:06d}.jpg"
        img.save(p, quality=90)
        paths.append(str(p))
    pq.write_table(
        pa.table(
            {"image_id": list(range(n)), "path": paths, "width": [w] * n, "height": [h] * n},
            schema=IMAGES_SCHEMA,
        ),
        table,
    )
    return table
