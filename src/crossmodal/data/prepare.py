"""Turn extracted data sets into the Parquet tables every later stage reads.

- ``images.parquet`` per collection: image_id, path, width, height.
- ``captions.parquet`` per collection: image_id, caption (one row per caption).
- ``questions.parquet`` per dataset split: question_id, image_id, question, question_type,
  answer_type, answers (the ten annotator answers); A-OKVQA adds choices, correct_choice_idx,
  direct_answers, difficult_direct_answer and rationales.

Malformed input raises DataFormatError naming the file (and the record) rather than a KeyError
deep inside pandas.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pyarrow as pa
from pycocotools.coco import COCO

from crossmodal.errors import DataFormatError
from crossmodal.io import read_json, write_table

IMAGES_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
    ]
)
CAPTIONS_SCHEMA = pa.schema([("image_id", pa.int64()), ("caption", pa.string())])


def _require(obj: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected an object, got {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataFormatError(f"{where}: missing key(s) {missing}")


def load_coco(captions_json: str | Path) -> COCO:
    """Load COCO annotations with pycocotools, after checking the JSON ourselves.

    pycocotools would raise a bare JSONDecodeError or KeyError without the file name.
    """
    data = read_json(captions_json)
    _require(data, ("images", "annotations"), str(captions_json))
    for i, img in enumerate(data["images"]):
        _require(img, ("id", "file_name", "width", "height"), f"{captions_json}: images[{i}]")
    for i, ann in enumerate(data["annotations"]):
        _require(ann, ("image_id", "caption"), f"{captions_json}: annotations[{i}]")
        ann.setdefault("id", i + 1)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
        coco.createIndex()
    return coco


def prepare_collection(
    image_dir: str | Path,
    captions_json: str | Path,
    images_out: str | Path,
    captions_out: str | Path,
) -> tuple[int, int]:
    """Write images.parquet and captions.parquet for one collection; return their row counts."""
    image_dir = Path(image_dir)
    coco = load_coco(captions_json)
    ids = sorted(coco.imgs)
    imgs = [coco.imgs[i] for i in ids]
    images = pa.table(
        {
            "image_id": [int(i["id"]) for i in imgs],
            "path": [str(image_dir / i["file_name"]) for i in imgs],
            "width": [int(i["width"]) for i in imgs],
            "height": [int(i["height"]) for i in imgs],
        },
        schema=IMAGES_SCHEMA,
    )
    anns = sorted(coco.anns.values(), key=lambda a: (a["image_id"], a["id"]))
    captions = pa.table(
        {
            "image_id": [int(a["image_id"]) for a in anns],
            "caption": [str(a["caption"]).strip() for a in anns],
        },
        schema=CAPTIONS_SCHEMA,
    )
    source = {"captions_json": str(captions_json), "image_dir": str(image_dir)}
    write_table(images_out, images, {"stage": "prepare-collection", **source})
    write_table(captions_out, captions, {"stage": "prepare-collection", **source})
    return images.num_rows, captions.num_rows


OKVQA_SCHEMA = pa.schema(
    [
        ("question_id", pa.int64()),
        ("image_id", pa.int64()),
        ("question", pa.string()),
        ("question_type", pa.string()),
        ("answer_type", pa.string()),
        ("answers", pa.list_(pa.string())),
    ]
)


def prepare_okvqa(questions_json: str | Path, annotations_json: str | Path, out: str | Path) -> int:
    """Join OK-VQA (VQA-format) questions and annotations by question_id; write questions.parquet.

    The answers are attached by question_id, never by list position.
    """
    qdata = read_json(questions_json)
    adata = read_json(annotations_json)
    _require(qdata, ("questions",), str(questions_json))
    _require(adata, ("annotations",), str(annotations_json))
    by_qid: dict[int, dict] = {}
    for i, ann in enumerate(adata["annotations"]):
        where = f"{annotations_json}: annotations[{i}]"
        _require(ann, ("question_id", "answers", "question_type", "answer_type"), where)
        if not isinstance(ann["answers"], list) or not all(
            isinstance(a, dict) and "answer" in a for a in ann["answers"]
        ):
            raise DataFormatError(f"{where}: 'answers' must be a list of {{'answer': ...}}")
        by_qid[int(ann["question_id"])] = ann
    rows: dict[str, list] = {name: [] for name in OKVQA_SCHEMA.names}
    for i, q in enumerate(sorted(qdata["questions"], key=lambda q: q.get("question_id", -1))):
        _require(q, ("question_id", "image_id", "question"), f"{questions_json}: questions[{i}]")
        qid = int(q["question_id"])
        ann = by_qid.get(qid)
        if ann is None:
            raise DataFormatError(
                f"{annotations_json}: no annotation for question_id {qid} of {questions_json}"
            )
        rows["question_id"].append(qid)
        rows["image_id"].append(int(q["image_id"]))
        rows["question"].append(str(q["question"]))
        rows["question_type"].append(str(ann["question_type"]))
        rows["answer_type"].append(str(ann["answer_type"]))
        rows["answers"].append([str(a["answer"]) for a in ann["answers"]])
    table = pa.table(rows, schema=OKVQA_SCHEMA)
    write_table(
        out,
        table,
        {
            "stage": "prepare-questions",
            "format": "okvqa",
            "questions": str(questions_json),
            "annotations": str(annotations_json),
        },
    )
    return table.num_rows


AOKVQA_SCHEMA = pa.schema(
    [
        ("question_id", pa.string()),
        ("image_id", pa.int64()),
        ("question", pa.string()),
        ("question_type", pa.string()),
        ("answer_type", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("choices", pa.list_(pa.string())),
        ("correct_choice_idx", pa.int32()),
        ("direct_answers", pa.list_(pa.string())),
        ("difficult_direct_answer", pa.bool_()),
        ("rationales", pa.list_(pa.string())),
    ]
)


def prepare_aokvqa(dataset_json: str | Path, out: str | Path) -> int:
    """A-OKVQA's single JSON list -> questions.parquet (test split: answers left empty/null).

    A-OKVQA has no question or answer types; ``answers`` repeats ``direct_answers`` so that
    every dataset offers the same ten-answer column to the VQA scorer.
    """
    data = read_json(dataset_json)
    if not isinstance(data, list):
        raise DataFormatError(f"{dataset_json}: expected a JSON list of questions")
    rows: dict[str, list] = {name: [] for name in AOKVQA_SCHEMA.names}
    for i, q in enumerate(sorted(data, key=lambda q: str(q.get("question_id", "")))):
        where = f"{dataset_json}: [{i}]"
        _require(q, ("question_id", "image_id", "question", "choices"), where)
        direct = [str(a) for a in q.get("direct_answers", [])]
        rows["question_id"].append(str(q["question_id"]))
        rows["image_id"].append(int(q["image_id"]))
        rows["question"].append(str(q["question"]))
        rows["question_type"].append(None)
        rows["answer_type"].append(None)
        rows["answers"].append(direct)
        rows["choices"].append([str(c) for c in q["choices"]])
        idx = q.get("correct_choice_idx")
        rows["correct_choice_idx"].append(None if idx is None else int(idx))
        rows["direct_answers"].append(direct)
        rows["difficult_direct_answer"].append(bool(q.get("difficult_direct_answer", False)))
        rows["rationales"].append([str(r) for r in q.get("rationales", [])])
    table = pa.table(rows, schema=AOKVQA_SCHEMA)
    write_table(
        out, table, {"stage": "prepare-questions", "format": "aokvqa", "source": str(dataset_json)}
    )
    return table.num_rows
