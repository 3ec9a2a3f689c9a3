"""Which image collections and question sets exist, and where their files live.

Paths are relative to the resources root. The Snakefile reads this registry to wire download,
extract and prepare rules, so adding a data set is one entry here and nothing in the rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Collection:
    """A folder of images, optionally with COCO caption annotations."""

    root: str  # resources-relative folder that archives extract into
    images: str  # image folder inside root
    captions: str | None  # COCO captions JSON inside root (also lists every image)
    archives: tuple[str, ...] = ()  # manifest names that provide it; empty = generated
    mirror_key: str = "coco"


@dataclass(frozen=True)
class Split:
    collection: str
    questions: str  # file inside the dataset root
    annotations: str | None = None  # OK-VQA format keeps answers in a second file


@dataclass(frozen=True)
class Dataset:
    format: str  # "okvqa" or "aokvqa"
    root: str
    splits: dict[str, Split] = field(default_factory=dict)
    archives: tuple[str, ...] = ()
    mirror_key: str = ""


COLLECTIONS: dict[str, Collection] = {
    "coco_train2014": Collection(
        "coco",
        "train2014",
        "annotations/captions_train2014.json",
        ("train2014.zip", "annotations_trainval2014.zip"),
    ),
    "coco_val2014": Collection(
        "coco",
        "val2014",
        "annotations/captions_val2014.json",
        ("val2014.zip", "annotations_trainval2014.zip"),
    ),
    "coco_train2017": Collection(
        "coco",
        "train2017",
        "annotations/captions_train2017.json",
        ("train2017.zip", "annotations_trainval2017.zip"),
    ),
    "coco_val2017": Collection(
        "coco",
        "val2017",
        "annotations/captions_val2017.json",
        ("val2017.zip", "annotations_trainval2017.zip"),
    ),
    "demo_train2014": Collection(
        "demo/coco", "train2014", "annotations/captions_train2014.json", mirror_key=""
    ),
    "demo_val2014": Collection(
        "demo/coco", "val2014", "annotations/captions_val2014.json", mirror_key=""
    ),
}

_OKVQA_ARCHIVES = (
    "OpenEnded_mscoco_train2014_questions.json.zip",
    "OpenEnded_mscoco_val2014_questions.json.zip",
    "mscoco_train2014_annotations.json.zip",
    "mscoco_val2014_annotations.json.zip",
)


def _okvqa_splits(prefix: str) -> dict[str, Split]:
    return {
        s: Split(
            f"{prefix}_{s}2014",
            f"OpenEnded_mscoco_{s}2014_questions.json",
            f"mscoco_{s}2014_annotations.json",
        )
        for s in ("train", "val")
    }


DATASETS: dict[str, Dataset] = {
    "okvqa": Dataset("okvqa", "okvqa", _okvqa_splits("coco"), _OKVQA_ARCHIVES, "okvqa"),
    "aokvqa": Dataset(
        "aokvqa",
        "aokvqa",
        {
            "train": Split("coco_train2017", "aokvqa_v1p0_train.json"),
            "val": Split("coco_val2017", "aokvqa_v1p0_val.json"),
        },
        ("aokvqa_v1p0.tar.gz",),
        "aokvqa",
    ),
    "demo": Dataset("okvqa", "demo/okvqa", _okvqa_splits("demo")),
}


def collection(name: str) -> Collection:
    """Look up a collection, with an error that lists the known ones."""
    try:
        return COLLECTIONS[name]
    except KeyError:
        raise KeyError(f"unknown image collection {name!r}; known: {sorted(COLLECTIONS)}") from None


def dataset(name: str) -> Dataset:
    """Look up a dataset, with an error that lists the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None
