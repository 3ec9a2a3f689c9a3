"""The demo world's labelled classes for zero-shot classification (WCA and its baselines)."""

from __future__ import annotations

import random
from pathlib import Path

from crossmodal.data.demo import BACKGROUNDS, COLOURS, SHAPES, Thing, _draw
from crossmodal.io import write_json

PER_CLASS = 10
IMAGE_SIZE = (128, 96)
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "a {} on a plain background."]
DESCRIPTORS = {
    "circle": ["a round outline", "no corners", "a single curved edge"],
    "square": ["four equal sides", "four right angles", "straight edges"],
    "triangle": ["three sides", "three corners", "a pointed top"],
}
WORDS = ["apple", "river", "stone", "cloud", "paper", "window", "garden", "silver", "forest"]


def write_classification(folder: str | Path, seed: int) -> int:
    """A labelled image set in ImageFolder layout; returns the number of images.

    ``images/<shape>/NNN.jpg``: one shape of a random colour on a random background, the class
    is the shape; ``classes.json`` (class names in label order), CLIP-E templates
    (``clip-e.json``), CLIP-D descriptors (``clip-d.json``) and Waffle's word list
    (``words.json``), written by hand for these classes. CuPL's descriptions come from the
    demo's LLM through the generation layer (``wca-describe-classes``). Its own generator keeps
    every other demo file byte-identical to what it was before these files existed.
    """
    folder = Path(folder)
    rng = random.Random(f"cls-{seed}")
    for shape in SHAPES:
        out = folder / "images" / shape
        out.mkdir(parents=True, exist_ok=True)
        for k in range(PER_CLASS):
            thing = Thing(shape, rng.choice(list(COLOURS)), "middle")
            background = rng.choice(list(BACKGROUNDS))
            _draw([thing], background, IMAGE_SIZE, rng).save(out / f"{k:03d}.jpg", quality=90)
    write_json(folder / "classes.json", list(SHAPES))
    write_json(folder / "clip-e.json", TEMPLATES)
    write_json(folder / "clip-d.json", DESCRIPTORS)
    write_json(folder / "words.json", WORDS)
    return PER_CLASS * len(SHAPES)
