"""A tiny image-text retrieval world for CUSA tests: drawn images, captions, teacher files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from crossmodal.cusa.teachers import ids_sha256

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (40, 60, 220),
    "yellow": (230, 210, 40),
}
SHAPES = ("circle", "square", "triangle")
SPLITS = {"train": 8, "val": 2, "test": 2}


def _draw(path: Path, colour: tuple[int, int, int], shape: str, size: int = 64) -> None:
    im = Image.new("RGB", (size, size), (245, 245, 245))
    d = ImageDraw.Draw(im)
    box = (12, 12, size - 12, size - 12)
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    else:
        d.polygon([(size // 2, 10), (10, size - 10), (size - 10, size - 10)], fill=colour)
    im.save(path)


def make_pairs(root: Path, captions_per_image: int = 3) -> Path:
    """pairs.parquet over 12 drawn images (8 train, 2 val, 2 test), several captions each."""
    root.mkdir(parents=True, exist_ok=True)
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    rows: dict[str, list] = {k: [] for k in ("image_id", "path", "caption", "text", "split")}
    k = 0
    for split, n in SPLITS.items():
        for _ in range(n):
            colour, shape = combos[k]
            image_id = f"img_{k:03d}"
            path = root / f"{image_id}.png"
            _draw(path, COLOURS[colour], shape)
            for j in range(captions_per_image):
                caption = [
                    f"A {colour} {shape}.",
                    f"a {shape} that is {colour}",
                    f"{colour} {shape}",
                ][j % 3]
                rows["image_id"].append(image_id)
                rows["path"].append(str(path))
                rows["caption"].append(caption)
                rows["text"].append(caption.lower().replace(".", "").strip())
                rows["split"].append(split)
            k += 1
    out = root / "pairs.parquet"
    pq.write_table(pa.table(rows), out)
    return out


def make_teachers(pairs: Path, folder: Path, dim: int = 16, seed: int = 0) -> dict[str, Path]:
    """Random teacher features in the layout of the teacher stages (rows and sidecars)."""
    table = pq.read_table(pairs).to_pydict()
    train = [i for i, s in enumerate(table["split"]) if s == "train"]
    ids: list[str] = []
    for i in train:
        if table["image_id"][i] not in ids:
            ids.append(table["image_id"][i])
    rng = np.random.default_rng(seed)
    out = {}
    for kind, n in (("image", len(ids)), ("text", len(train))):
        arr = rng.standard_normal((n, dim)).astype(np.float32)
        path = folder / f"{kind}.npy"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(path, arr)
        meta = {"rows": n, "dim": dim, "dtype": "float32"}
        if kind == "image":
            meta["ids"] = ids
        else:
            meta["ids_sha256"] = ids_sha256([table["text"][i] for i in train])
        (folder / f"{kind}.json").write_text(json.dumps(meta))
        out[f"{kind}_teacher"] = path
        out[f"{kind}_teacher_meta"] = folder / f"{kind}.json"
    return out
