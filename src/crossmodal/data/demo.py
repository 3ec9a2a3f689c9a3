"""The demo world: a seeded mini data set in the real COCO and OK-VQA layouts.

Scenes of one to three coloured shapes on a plain background, five captions per image, and
OK-VQA-style questions with ten annotator answers (colour, count, and a small "outside
knowledge" question: which fruit shares a shape's colour), plus image-text retrieval split files
in ALBEF's Karpathy layout over the same images. The data rules read it exactly as they read
COCO, OK-VQA and ALBEF's splits, so the whole DAG runs on two CPU cores in minutes. It proves the
plumbing; accuracy numbers from random models on it mean nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from crossmodal.io import write_json

COLOURS = {
    "red": (200, 30, 30),
    "green": (40, 160, 60),
    "blue": (40, 70, 200),
    "yellow": (230, 210, 40),
    "purple": (130, 50, 160),
    "orange": (240, 140, 20),
}
SHAPES = ("circle", "square", "triangle")
FRUIT = {  # the "knowledge" a model must bring: most, then less common answers
    "red": ("apple", "strawberry", "cherry"),
    "green": ("lime", "kiwi", "apple"),
    "blue": ("blueberry", "blueberries", "plum"),
    "yellow": ("banana", "lemon", "pineapple"),
    "purple": ("grape", "plum", "grapes"),
    "orange": ("orange", "tangerine", "peach"),
}
BACKGROUNDS = {"white": (245, 245, 245), "grey": (190, 190, 190), "beige": (225, 210, 180)}
POSITIONS = ("left", "middle", "right")
WHERE = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}


@dataclass(frozen=True)
class Thing:
    shape: str
    colour: str
    position: str


def _draw(things: list[Thing], background: str, size: tuple[int, int], rng: random.Random):
    w, h = size
    img = Image.new("RGB", size, BACKGROUNDS[background])
    draw = ImageDraw.Draw(img)
    cell = w // 3
    for t in things:
        cx = cell * POSITIONS.index(t.position) + cell // 2 + rng.randint(-cell // 8, cell // 8)
        cy = h // 2 + rng.randint(-h // 6, h // 6)
        r = rng.randint(cell // 4, cell // 3)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLOURS[t.colour]
        if t.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif t.shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def _captions(things: list[Thing], background: str, rng: random.Random) -> list[str]:
    parts = [f"a {t.colour} {t.shape}" for t in things]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    count = NUMBER_WORDS[len(things)]
    plural = "shape" if len(things) == 1 else "shapes"
    located = "; ".join(f"a {t.colour} {t.shape} {WHERE[t.position]}" for t in things)
    options = [
        f"{listed.capitalize()} on a {background} background.",
        f"A picture of {listed}.",
        f"{count.capitalize()} coloured {plural} on a plain {background} surface.",
        f"A simple drawing with {located}.",
        f"Geometric {plural} ({listed}) against {background}.",
        f"An image showing {listed} side by side.",
    ]
    rng.shuffle(options)
    return options[:5]


def _ten_answers(main: str, alternatives: tuple[str, ...], rng: random.Random) -> list[str]:
    """Ten annotator answers: mostly the main one, a few plausible alternatives."""
    n_main = rng.randint(6, 10)
    answers = [main] * n_main + [rng.choice(alternatives or (main,)) for _ in range(10 - n_main)]
    rng.shuffle(answers)
    return answers


def _questions(image_id: int, things: list[Thing], rng: random.Random) -> list[dict]:
    target = rng.choice(things)
    fruit = FRUIT[target.colour]
    others = tuple(c for c in COLOURS if c != target.colour)
    pool = [
        {
            "question": f"Which fruit is usually the same colour as the {target.shape}?",
            "question_type": "four",  # OK-VQA category: "cooking and food"
            "answer_type": "other",
            "answers": _ten_answers(fruit[0], fruit[1:], rng),
        },
        {
            "question": f"What colour is the {target.shape} {WHERE[target.position]}?",
            "question_type": "other",
            "answer_type": "other",
            "answers": _ten_answers(target.colour, others[:1], rng),
        },
        {
            "question": "How many shapes are in the picture?",
            "question_type": "other",
            "answer_type": "number",
            "answers": _ten_answers(
                str(len(things)), (NUMBER_WORDS[len(things)], str(len(things) + 1)), rng
            ),
        },
    ]
    chosen = rng.sample(pool, k=rng.choice((1, 2)))
    out = []
    for k, q in enumerate(chosen):
        q = dict(q, image_id=image_id, question_id=image_id * 10 + k)
        out.append(q)
    return out


def _scene(rng: random.Random) -> tuple[list[Thing], str]:
    n = rng.choice((1, 2, 2, 3))
    positions = rng.sample(POSITIONS, k=n)
    shapes = rng.sample(SHAPES, k=n)  # distinct shapes keep "the circle" unambiguous
    things = [
        Thing(s, rng.choice(list(COLOURS)), p) for s, p in zip(shapes, positions, strict=True)
    ]
    things.sort(key=lambda t: POSITIONS.index(t.position))
    return things, rng.choice(list(BACKGROUNDS))


def make_demo_world(
    root: str | Path,
    *,
    seed: int = 0,
    n_train: int = 200,
    n_val: int = 50,
    image_size: tuple[int, int] = (512, 384),
) -> dict[str, int]:
    """Write the demo world under ``root`` (``coco/``, ``okvqa/``, ``itr/``); return counts."""
    root = Path(root)
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    coco: dict[str, tuple[list[dict], list[dict]]] = {}  # split -> (images, annotations)
    for split, n, first_id in (("train", n_train, 1), ("val", n_val, 500_001)):
        sub = f"{split}2014"
        img_dir = root / "coco" / sub
        img_dir.mkdir(parents=True, exist_ok=True)
        images, annotations, questions, q_annotations = [], [], [], []
        for k in range(n):
            image_id = first_id + k
            things, background = _scene(rng)
            file_name = f"COCO_{sub}_{image_id:012d}.jpg"
            _draw(things, background, image_size, rng).save(img_dir / file_name, quality=90)
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": image_size[0],
                    "height": image_size[1],
                }
            )
            for caption in _captions(things, background, rng):
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image_id, "caption": caption}
                )
            for q in _questions(image_id, things, rng):
                questions.append(
                    {
                        "image_id": image_id,
                        "question": q["question"],
                        "question_id": q["question_id"],
                    }
                )
                q_annotations.append(
                    {
                        "image_id": image_id,
                        "question_id": q["question_id"],
                        "question_type": q["question_type"],
                        "answer_type": q["answer_type"],
                        "confidence": 3,
                        "answers": [
                            {
                                "answer_id": i + 1,
                                "answer": a,
                                "raw_answer": a,
                                "answer_confidence": "yes",
                            }
                            for i, a in enumerate(q["answers"])
                        ],
                    }
                )
        info = {"description": "crossmodal demo world (generated)", "seed": seed}
        write_json(
            root / "coco" / "annotations" / f"captions_{sub}.json",
            {"info": info, "images": images, "annotations": annotations, "licenses": []},
        )
        write_json(
            root / "okvqa" / f"OpenEnded_mscoco_{sub}_questions.json",
            {
                "info": info,
                "questions": questions,
                "data_type": "mscoco",
                "data_subtype": sub,
                "task_type": "Open-Ended",
                "license": {},
            },
        )
        write_json(
            root / "okvqa" / f"mscoco_{sub}_annotations.json",
            {
                "info": info,
                "annotations": q_annotations,
                "data_type": "mscoco",
                "data_subtype": sub,
                "license": {},
            },
        )
        counts[f"{split}_images"] = n
        counts[f"{split}_questions"] = len(questions)
        coco[split] = (images, annotations)
    _write_itr_splits(root / "itr", coco, seed)
    from crossmodal.wca.demo_world import write_classification  # own generator: rest unchanged

    write_classification(root / "cls", seed)
    from crossmodal.cir.demo_world import write_cir_edits  # its own generator: the rest unchanged

    write_cir_edits(root / "cir", seed)
    return counts


def _write_itr_splits(
    folder: Path, coco: dict[str, tuple[list[dict], list[dict]]], seed: int
) -> None:
    """Karpathy-style split files in ALBEF's layout, from the demo's COCO captions.

    ``train.json`` lists every train2014 image's captions, one entry per caption, as ALBEF's
    ``coco_train.json`` does; the val2014 images are shuffled (seeded) into two halves, sorted
    back into id order, and written one entry per image with its five captions to ``val.json``
    and ``test.json`` (the test half takes the odd image out). Image paths are relative to the
    demo's ``coco`` folder, as ALBEF's are to COCO's. A separate generator keeps every other
    demo file byte-identical to what it was before these files existed.
    """

    def by_image(split: str) -> tuple[list[dict], dict[int, list[str]]]:
        images, annotations = coco[split]
        captions: dict[int, list[str]] = {}
        for ann in annotations:
            captions.setdefault(ann["image_id"], []).append(ann["caption"])
        return images, captions

    def path(split: str, image: dict) -> str:
        return f"{split}2014/{image['file_name']}"

    images, captions = by_image("train")
    train = [
        {"caption": c, "image": path("train", img), "image_id": f"demo_{img['id']}"}
        for img in images
        for c in captions[img["id"]]
    ]
    images, captions = by_image("val")
    shuffled = list(images)
    random.Random(f"itr-{seed}").shuffle(shuffled)
    half = len(shuffled) // 2
    halves = {"val": shuffled[:half], "test": shuffled[half:]}
    write_json(folder / "train.json", train)
    for split, chosen in halves.items():
        entries = [
            {"image": path("val", img), "caption": captions[img["id"]]}
            for img in sorted(chosen, key=lambda i: i["id"])
        ]
        write_json(folder / f"{split}.json", entries)
