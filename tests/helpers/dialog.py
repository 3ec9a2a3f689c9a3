"""A small dialogue-retrieval world on disk: dialogues, photos and descriptors, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
from PIL import Image

from crossmodal.dialog.data import PhotoStatus, status_table
from crossmodal.dialog.descriptor import KEYS, descriptor_text
from crossmodal.dialog.stage import DESCRIPTORS_SCHEMA
from crossmodal.io import write_table

COLOURS = {
    "red": (220, 20, 20),
    "green": (20, 200, 20),
    "blue": (20, 20, 220),
    "yellow": (230, 230, 20),
    "purple": (150, 20, 150),
    "cyan": (20, 200, 200),
    "orange": (240, 140, 10),
    "grey": (120, 120, 120),
}


def make_world(
    root: Path, dead: tuple[str, ...] = (), left_out: dict[str, str] | None = None
) -> dict[str, Path]:
    """One dialogue per colour, each sharing a photo of that colour; ``dead`` photos failed;
    ``left_out``: dialogues the preparation left out (recorded in the table's provenance)."""
    root.mkdir(parents=True, exist_ok=True)
    photos, dialogues, descriptors = [], [], []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        path = root / f"{name}.png"
        img = Image.new("RGB", (32, 32), rgb)
        img.paste((255 - rgb[0], 255 - rgb[1], 255 - rgb[2]), (8 * (i % 4), 0, 8 * (i % 4) + 8, 32))
        img.save(path)
        failed = name in dead
        photos.append(
            PhotoStatus(
                name,
                f"http://x/{name}.jpg",
                "failed" if failed else "ok",
                "" if failed else str(path),
                1,
                "HTTP 404" if failed else "",
            )
        )
        dialogues.append(
            {
                "split": "train",
                "dialogue_id": i,
                "turns": [f"User 0: look at my {name} thing"],
                "photo_description": f"Objects in the photo: {name}",
                "photo_url": f"http://x/{name}.jpg",
                "photo_id": name,
            }
        )
        values = dict.fromkeys(KEYS, "")
        values["main subject"] = f"a {name} square"
        descriptors.append(
            {
                "dialogue_id": i,
                "status": "ok",
                "values": json.dumps(values),
                "text": descriptor_text(values),
                "answer": json.dumps(values),
                "problem": "",
            }
        )
    out = {
        "dialogues": root / "dialogues.parquet",
        "photos": root / "photos.parquet",
        "descriptors": root / "descriptors.parquet",
    }
    from crossmodal.dialog.data import DIALOGUES_SCHEMA

    table = pa.Table.from_pylist(dialogues, schema=DIALOGUES_SCHEMA)
    write_table(out["dialogues"], table, {"left_out": left_out or {}})
    write_table(out["photos"], status_table(photos), {})
    write_table(
        out["descriptors"], pa.Table.from_pylist(descriptors, schema=DESCRIPTORS_SCHEMA), {}
    )
    return out
