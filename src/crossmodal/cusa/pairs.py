"""Reading a prepared image-text table (pairs.parquet) for training and evaluation.

pairs.parquet has one row per (image, caption): ``image_id``, ``path``, ``caption`` (raw),
``text`` (the reference's ``pre_caption``, what the models read) and ``split``. Training reads
the rows of one split in file order; evaluation groups captions by image, images sorted by id
as the reference's test dataset does (dataset/cross_coco_dataset.py: ``sorted(tmpData.keys())``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from crossmodal.errors import DataFormatError

COLUMNS = ("image_id", "path", "caption", "text", "split")


@dataclass(frozen=True)
class SplitRows:
    """The rows of one split, in file order, with each row's image index.

    ``image_ids`` lists the split's images in first-appearance order; ``image_index[i]`` is the
    position of row i's image in it (the reference's ``img_ids`` mapping, the contrastive
    loss's ``idx``)."""

    image_ids: list[str]
    paths: list[str]  # per image, aligned with image_ids
    row_image: list[str]  # per row
    texts: list[str]  # per row
    image_index: list[int]  # per row


@dataclass(frozen=True)
class EvalSplit:
    """Images sorted by id, their captions in file order, texts grouped by image."""

    image_ids: list[str]
    paths: list[str]
    texts: list[str]
    text_image: list[str]  # the image id of each text


def read_split_rows(pairs: str | Path, split: str) -> SplitRows:
    """Rows of ``split`` in file order; an empty split is an error naming the file."""
    table = pq.read_table(pairs, columns=list(COLUMNS))
    table = table.filter(pc.equal(table["split"], split))
    if table.num_rows == 0:
        raise DataFormatError(f"{pairs}: no rows with split {split!r}")
    row_image = table["image_id"].to_pylist()
    row_path = table["path"].to_pylist()
    first: dict[str, int] = {}
    paths: list[str] = []
    for image_id, path in zip(row_image, row_path, strict=True):
        if image_id not in first:
            first[image_id] = len(first)
            paths.append(path)
        elif paths[first[image_id]] != path:
            raise DataFormatError(
                f"{pairs}: image {image_id!r} has two paths ({paths[first[image_id]]!r} and "
                f"{path!r}); one id must name one file"
            )
    return SplitRows(
        image_ids=list(first),
        paths=paths,
        row_image=row_image,
        texts=table["text"].to_pylist(),
        image_index=[first[i] for i in row_image],
    )


def read_eval_split(pairs: str | Path, split: str) -> EvalSplit:
    """One evaluation split: images sorted by id, each image's texts in file order."""
    rows = read_split_rows(pairs, split)
    by_image: dict[str, list[str]] = {i: [] for i in rows.image_ids}
    for image_id, text in zip(rows.row_image, rows.texts, strict=True):
        by_image[image_id].append(text)
    order = sorted(range(len(rows.image_ids)), key=lambda k: rows.image_ids[k])
    image_ids = [rows.image_ids[k] for k in order]
    texts = [t for i in image_ids for t in by_image[i]]
    text_image = [i for i in image_ids for _ in by_image[i]]
    return EvalSplit(image_ids, [rows.paths[k] for k in order], texts, text_image)
