"""Image-text retrieval pairs: Karpathy split files in ALBEF's layout -> ``pairs.parquet``.

Input: the three split files of a data set (``crossmodal.data.registry.ITR_DATASETS``) and the
folder their image paths start from. ALBEF's layout (salesforce/ALBEF, ``data.tar.gz``; read by
its dataset/caption_dataset.py): the train file holds one entry per caption,
``{"caption": str, "image": "val2014/COCO_val2014_000000522418.jpg", "image_id": "coco_522418"}``;
the val and test files hold one entry per image, ``{"image": ..., "caption": [str, ...]}``.

Output: one row per (image, caption), in the split files' order (train, then val, then test;
within a val/test image, its captions in list order), with the columns

- ``image_id`` (str): the image's file name, e.g. ``COCO_val2014_000000522418.jpg``,
- ``path`` (str): the image folder joined with the split file's image path,
- ``caption`` (str): the caption exactly as the split file gives it,
- ``text`` (str): ``pre_caption(caption, max_words)``, what the student and the text teacher read,
- ``split`` (str): train, val or test.

Why the file name is the image id: the val/test entries carry no id, so the id has to come from
the image path, and the CUSA reference (lerogo/aaai24_itr_cusa, README "Data Preprocessing" and
dataset_example/new_*.json) uses exactly the file name as ``image_id`` in every split. It is the
same for the same image in every split, and it names the image on its own (COCO's file names
carry their folder, Flickr30k's are unique). ALBEF's own train ``image_id`` (``coco_522418``) is
not kept: it is only checked to name one image, and each image to carry one of them.

Nothing is dropped silently: a missing image, a malformed entry, an image in two splits (or
twice in val/test) or a caption that ``pre_caption`` empties is an error naming the file and
the entry. Test images keep the split file's order; the reference's test loader sorts them by
image id instead, which changes no recall (``itr_eval`` pairs rows and columns by id).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow as pa

from crossmodal import stages
from crossmodal.errors import DataFormatError
from crossmodal.io import read_json, write_table

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
COLUMNS = ("image_id", "path", "caption", "text", "split")
SHOWN = 5  # missing images named in an error; the rest are counted


class EmptyCaptionError(DataFormatError, ValueError):
    """``pre_caption`` left nothing of a caption (the reference raises ValueError here)."""


def pre_caption(caption: str, max_words: int) -> str:
    """The CUSA reference's caption clean-up, kept exactly: lerogo/aaai24_itr_cusa,
    dataset/utils.py ``pre_caption`` (called with ``max_words=64`` by its datasets).

    Lower-case; each of ``, . ' ! ? " ( ) * # : ; ~`` becomes a space; ``-`` and ``/`` become
    spaces; ``<person>`` becomes ``person``; runs of two or more whitespace characters become one
    space (a single tab or newline stays); trailing newlines and then surrounding spaces are
    removed; the text is cut to its first ``max_words`` space-separated words. A caption with
    nothing left raises ``EmptyCaptionError``, as the reference raises ValueError.
    """
    raw = caption
    caption = (
        re.sub(r"([,.'!?\"()*#:;~])", " ", caption.lower())
        .replace("-", " ")
        .replace("/", " ")
        .replace("<person>", "person")
    )
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    if not caption:
        raise EmptyCaptionError(f"pre_caption leaves nothing of the caption {raw!r}")
    return caption


@dataclass(frozen=True)
class _Entry:
    """One image of a split file with its captions, and where it was read (for messages)."""

    image: str  # path relative to the image folder, as the split file gives it
    captions: tuple[str, ...]
    where: str  # "FILE: entry N"
    albef_id: str | None = None  # ALBEF's train image_id, only checked


def image_id(image: str) -> str:
    """The image id of a split file's image path: its file name (see the module docstring)."""
    return PurePosixPath(image).name


def _str(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataFormatError(f"{where}: {key!r} must be a string, got {value!r}")
    return value


def _object(item: Any, keys: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise DataFormatError(f"{where}: expected an object, got {type(item).__name__}")
    missing = [k for k in keys if k not in item]
    if missing:
        raise DataFormatError(f"{where}: missing key(s) {missing}")
    return item


def _read_split_file(path: Path, split: str) -> list[Any]:
    """The list a split file holds; a missing file names where a file of that name lies."""
    if not path.is_file():
        raise DataFormatError(f"{path}: {split} split file not found{_found_elsewhere(path)}")
    data = read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    if not data:
        raise DataFormatError(f"{path}: the {split} split file lists no entries")
    return data


def _found_elsewhere(path: Path) -> str:
    """A hint when the archive placed the file elsewhere than the registry says."""
    base = next((p for p in (path.parent.parent, path.parent) if p.is_dir()), None)
    found = sorted(base.rglob(path.name))[:3] if base is not None else []
    if found:
        return (
            f"; a file of that name lies at {', '.join(map(str, found))}: the archive's layout "
            "differs from the split paths in crossmodal.data.registry.ITR_DATASETS, correct them"
        )
    return (
        "; the split files come from the data set's archive (its download and extract stages) "
        "or from the demo world: run those first"
    )


def _train_entries(path: Path) -> Iterator[_Entry]:
    """Train entries, one per caption: ``{"caption", "image", "image_id"}``."""
    for i, item in enumerate(_read_split_file(path, "train")):
        where = f"{path}: entry {i}"
        item = _object(item, ("caption", "image"), where)
        albef_id = item.get("image_id")
        yield _Entry(
            image=_str(item["image"], "image", where),
            captions=(_str(item["caption"], "caption", where),),
            where=where,
            albef_id=None if albef_id is None else str(albef_id),
        )


def _eval_entries(path: Path, split: str) -> Iterator[_Entry]:
    """Val/test entries, one per image: ``{"image", "caption": [...]}``."""
    for i, item in enumerate(_read_split_file(path, split)):
        where = f"{path}: entry {i}"
        item = _object(item, ("caption", "image"), where)
        captions = item["caption"]
        if not isinstance(captions, list) or not captions:
            raise DataFormatError(
                f"{where}: 'caption' must be a non-empty list of the image's captions in a "
                f"{split} split file, got {captions!r}"
            )
        yield _Entry(
            image=_str(item["image"], "image", where),
            captions=tuple(_str(c, f"caption[{k}]", where) for k, c in enumerate(captions)),
            where=where,
        )


class _Images:
    """Checks that tie images, ids and splits together across all three split files."""

    def __init__(self) -> None:
        self.path_of: dict[str, str] = {}  # image_id -> image path
        self.split_of: dict[str, tuple[str, str]] = {}  # image_id -> (split, where first seen)
        self.albef_image: dict[str, str] = {}  # ALBEF train image_id -> image path
        self.albef_id: dict[str, str] = {}  # image path -> ALBEF train image_id

    def add(self, entry: _Entry, split: str) -> str:
        iid = image_id(entry.image)
        known = self.path_of.setdefault(iid, entry.image)
        if known != entry.image:
            raise DataFormatError(
                f"{entry.where}: image {entry.image!r} has the file name of {known!r}; image "
                "ids are file names, so two images may not share one"
            )
        seen = self.split_of.get(iid)
        if seen is None:
            self.split_of[iid] = (split, entry.where)
        elif seen[0] != split or split != "train":
            raise DataFormatError(
                f"{entry.where}: image {entry.image!r} already appears in the {seen[0]} split "
                f"({seen[1]}); each image belongs to one split, and val/test list it once"
            )
        if entry.albef_id is not None:
            self._check_albef_id(entry)
        return iid

    def _check_albef_id(self, entry: _Entry) -> None:
        image = self.albef_image.setdefault(entry.albef_id, entry.image)
        albef_id = self.albef_id.setdefault(entry.image, entry.albef_id)
        if image != entry.image or albef_id != entry.albef_id:
            raise DataFormatError(
                f"{entry.where}: image_id {entry.albef_id!r} with image {entry.image!r} "
                f"contradicts an earlier entry (image_id {albef_id!r}, image {image!r}); "
                "one image_id must name one image"
            )


def _check_images_exist(images: dict[str, str], image_root: Path) -> None:
    """Every image the split files name must be a file under the image folder."""
    missing = [image for image in images.values() if not (image_root / image).is_file()]
    if missing:
        shown = ", ".join(str(image_root / m) for m in missing[:SHOWN])
        raise DataFormatError(
            f"{len(missing)} of {len(images)} images the split files name are missing under "
            f"{image_root} (first: {shown}). The image folder must hold the split files' image "
            f"paths (e.g. {missing[0]}): for COCO run the train2014/val2014 downloads; for "
            "images you provide, point data.mirrors.NAME (e.g. data.mirrors.flickr30k) at the "
            "folder that holds them"
        )


def prepare_itr(
    train_json: str | Path,
    val_json: str | Path,
    test_json: str | Path,
    image_root: str | Path,
    out: str | Path,
    *,
    max_words: int,
) -> dict[str, tuple[int, int]]:
    """Write pairs.parquet from the three split files; return {split: (images, pairs)}."""
    files = {"train": Path(train_json), "val": Path(val_json), "test": Path(test_json)}
    image_root = Path(image_root)
    entries = {
        "train": list(_train_entries(files["train"])),
        "val": list(_eval_entries(files["val"], "val")),
        "test": list(_eval_entries(files["test"], "test")),
    }
    images = _Images()
    columns: dict[str, list[str]] = {c: [] for c in COLUMNS}
    counts: dict[str, tuple[int, int]] = {}
    for split in SPLITS:
        ids = set()
        for entry in entries[split]:
            iid = images.add(entry, split)
            ids.add(iid)
            for k, caption in enumerate(entry.captions):
                row = len(columns["text"])
                columns["text"].append(_clean(caption, max_words, entry, k, split, row))
                columns["image_id"].append(iid)
                columns["path"].append(str(image_root / entry.image))
                columns["caption"].append(caption)
                columns["split"].append(split)
        counts[split] = (len(ids), sum(len(e.captions) for e in entries[split]))
    _check_images_exist(images.path_of, image_root)
    table = pa.table({c: pa.array(v, pa.string()) for c, v in columns.items()})
    provenance = {
        "stage": "prepare-itr",
        **{f"{s}_json": str(p) for s, p in files.items()},
        "image_root": str(image_root),
        "max_words": max_words,
        "pre_caption": "lerogo/aaai24_itr_cusa dataset/utils.py",
    }
    write_table(out, table, provenance)
    return counts


def _clean(caption: str, max_words: int, entry: _Entry, k: int, split: str, row: int) -> str:
    """``pre_caption``, with an error that names the split, the entry and the pairs row."""
    try:
        return pre_caption(caption, max_words)
    except EmptyCaptionError as exc:
        which = "" if split == "train" else f" caption[{k}]"
        raise EmptyCaptionError(
            f"{entry.where}{which} ({split} split, pairs row {row}): {exc}; no words are left "
            "once punctuation is removed: fix or remove the caption in the split file"
        ) from exc


def run_prepare_itr(job: stages.PrepareItr) -> None:
    counts = prepare_itr(
        job.train_json,
        job.val_json,
        job.test_json,
        job.image_root,
        job.pairs,
        max_words=job.max_words,
    )
    for split, (n_images, n_pairs) in counts.items():
        log.info("%s: %d images, %d captions", split, n_images, n_pairs)
