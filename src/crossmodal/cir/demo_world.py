"""The demo world's compositional retrieval data: add / remove edits of its shape scenes.

A query is a scene of the demo world (one to three coloured shapes, each in its own third of
the picture), a text such as "remove the red circle and add a blue square", and a target: the
same scene with the named shape replaced by the named new one in its place. Written in the
Rayan challenge's layout under ``resources/demo/cir/``:

* ``{train,test}/data.csv`` (``query_image, query_text, target_image``) and
  ``{train,test}/images/``;
* ``prompt_templates.json`` and ``objects.txt`` in the reference's formats, from the demo's own
  vocabulary (every colour x shape is an object, "red circle"), for the tiny tagger. The query
  texts are drawn from the same templates, so a tagger trained on them parses the queries.

A generator of its own (seeded from the world's seed) keeps every other demo file
byte-identical to what it was before these files existed.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from crossmodal.data.demo import BACKGROUNDS, COLOURS, POSITIONS, SHAPES, Thing, _draw

IMAGE_SIZE = (96, 72)  # small: the tiny CLIP resizes to 224 anyway, and the demo stays fast
SPLITS = {"train": 160, "test": 60}
TEMPLATES = (
    "Remove the <negative_object> and add a <positive_object>.",
    "Add a <positive_object> and remove the <negative_object>.",
    "Replace the <negative_object> with a <positive_object>.",
    "Take away the <negative_object>, then put a <positive_object> in its place.",
    "Swap the <negative_object> for a <positive_object>!",
    "Get rid of the <negative_object> and insert a <positive_object>.",
    "I want a <positive_object> instead of the <negative_object>.",
    "Delete the <negative_object>; draw a <positive_object> there.",
    "Could you remove the <negative_object> and include a <positive_object>?",
    "Put a <positive_object> where the <negative_object> is.",
)


def objects() -> list[str]:
    """Every object of the demo world: a colour and a shape ("red circle")."""
    return [f"{colour} {shape}" for colour in COLOURS for shape in SHAPES]


def _edit(rng: random.Random) -> tuple[list[Thing], list[Thing], str, Thing, Thing]:
    """A scene, the edited scene, its background, the removed and the added thing."""
    n = rng.choice((1, 2, 2, 3))
    positions = rng.sample(POSITIONS, k=n)
    shapes = rng.sample(SHAPES, k=n)
    scene = [Thing(s, rng.choice(list(COLOURS)), p) for s, p in zip(shapes, positions, strict=True)]
    scene.sort(key=lambda t: POSITIONS.index(t.position))
    removed = rng.choice(scene)
    others = {t.shape for t in scene if t is not removed}
    # A shape the rest of the scene lacks keeps "the circle" unambiguous in both images.
    free = [s for s in SHAPES if s not in others]
    while True:
        added = Thing(rng.choice(free), rng.choice(list(COLOURS)), removed.position)
        if (added.shape, added.colour) != (removed.shape, removed.colour):
            break
    target = [added if t is removed else t for t in scene]
    return scene, target, rng.choice(list(BACKGROUNDS)), removed, added


def _text(template: str, removed: Thing, added: Thing) -> str:
    return template.replace("<negative_object>", f"{removed.colour} {removed.shape}").replace(
        "<positive_object>", f"{added.colour} {added.shape}"
    )


def write_cir_edits(folder: str | Path, seed: int) -> dict[str, int]:
    """Write the edits, the templates and the objects under ``folder``; return query counts."""
    folder = Path(folder)
    rng = random.Random(f"cir-{seed}")
    counts = {}
    for split, n in SPLITS.items():
        images = folder / split / "images"
        images.mkdir(parents=True, exist_ok=True)
        rows = []
        for k in range(n):
            scene, target, background, removed, added = _edit(rng)
            ref_name, tgt_name = f"{split}_{k:04d}_ref.png", f"{split}_{k:04d}_tgt.png"
            _draw(scene, background, IMAGE_SIZE, rng).save(images / ref_name)
            _draw(target, background, IMAGE_SIZE, rng).save(images / tgt_name)
            rows.append((ref_name, _text(rng.choice(TEMPLATES), removed, added), tgt_name))
        with (folder / split / "data.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(("query_image", "query_text", "target_image"))
            writer.writerows(rows)
        counts[f"cir_{split}_queries"] = n
    records = [{"template": t, "model": "crossmodal demo"} for t in TEMPLATES]
    (folder / "prompt_templates.json").write_text(json.dumps(records, indent=1) + "\n")
    (folder / "objects.txt").write_text("\n".join(objects()) + "\n")
    return counts
