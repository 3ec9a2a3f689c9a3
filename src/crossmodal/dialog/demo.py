"""The demo world's dialogues: short chats that lead up to sharing one of its generated photos.

Written in PhotoChat's layout (``{split}/{split}_00.json`` lists of dialogues with
``share_photo`` turns), so the demo runs exactly the stages PhotoChat runs. Each photo is a
shape of one colour on a background of another, drawn at a random place and size; the chat
before the photo names the three (with filler turns), so a model that learns to read the
dialogue can find the photo. Photos lie in a folder read like ``data.mirrors.photochat``
(``{photo_id}.png``); their URLs point nowhere (``demo.invalid``), as nothing is fetched.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from crossmodal.io import atomic_path, write_json

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 30),
    "blue": (30, 60, 220),
    "yellow": (235, 220, 30),
    "purple": (140, 40, 170),
    "orange": (245, 140, 20),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "bar")
OPENERS = ("hey, how are you?", "hi! long time no talk", "what are you up to today?")
FILLERS = ("that sounds fun", "oh really?", "nice, tell me more", "haha cool")
URL = "https://demo.invalid/photochat/{photo_id}.png"


def _draw(shape: str, fg: tuple[int, ...], bg: tuple[int, ...], rng: random.Random, size: int):
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    s = rng.randint(size // 3, size // 2)
    x, y = rng.randint(0, size - s), rng.randint(0, size - s)
    if shape == "circle":
        d.ellipse((x, y, x + s, y + s), fill=fg)
    elif shape == "square":
        d.rectangle((x, y, x + s, y + s), fill=fg)
    elif shape == "triangle":
        d.polygon([(x, y + s), (x + s, y + s), (x + s // 2, y)], fill=fg)
    else:
        d.rectangle((x, y + s // 3, x + s, y + 2 * s // 3), fill=fg)
    return img


def _dialogue(dialogue_id: int, colour: str, shape: str, bg: str, photo_id: str, rng) -> dict:
    turns = [
        (1, rng.choice(OPENERS)),
        (0, f"I just painted a {colour} {shape}"),
        (1, rng.choice(FILLERS)),
        (0, f"the background is {bg}, I love how the {colour} {shape} stands out"),
        (1, "can I see it?"),
    ]
    dialogue: list[dict[str, Any]] = [
        {"message": m, "share_photo": False, "user_id": u} for u, m in turns
    ]
    dialogue.append({"message": "", "share_photo": True, "user_id": 0})
    dialogue.append({"message": "wow, looks great!", "share_photo": False, "user_id": 1})
    return {
        "dialogue": dialogue,
        "dialogue_id": dialogue_id,
        "photo_description": f"Objects in the photo: {colour.title()} {shape.title()}",
        "photo_url": URL.format(photo_id=photo_id),
    }


def make_dialog_demo(
    train: Path, test: Path, photos: Path, seed: int, n_train: int, n_test: int, size: int = 64
) -> dict[str, Any]:
    """Write the two shards and the photos; ``photos`` is the folder's marker file."""
    rng = random.Random(seed)
    folder = Path(photos).parent
    folder.mkdir(parents=True, exist_ok=True)
    shards: dict[str, list[dict]] = {"train": [], "test": []}
    names = list(COLOURS)
    for i in range(n_train + n_test):
        split = "train" if i < n_train else "test"
        colour, bg = rng.sample(names, 2)
        shape = rng.choice(SHAPES)
        photo_id = f"demo{i:04d}"
        with atomic_path(folder / f"{photo_id}.png") as tmp:
            _draw(shape, COLOURS[colour], COLOURS[bg], rng, size).save(tmp, format="PNG")
        dialogue_id = i if split == "train" else i - n_train
        shards[split].append(_dialogue(dialogue_id, colour, shape, bg, photo_id, rng))
    for split, path in (("train", train), ("test", test)):
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(shards[split], indent=2) + "\n")
    summary = {"seed": seed, "train": n_train, "test": n_test, "photos": n_train + n_test}
    write_json(photos, summary)
    return summary


def run_make_dialog_demo(job) -> dict[str, Any]:
    """The ``make-dialog-demo`` stage."""
    return make_dialog_demo(job.train, job.test, job.photos, job.seed, job.n_train, job.n_test)
