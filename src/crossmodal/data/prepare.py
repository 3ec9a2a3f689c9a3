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


def _list_of(data: Any, key: str, path: str | Path) -> list:
    """``data[key]``, which must be a JSON list."""
    _require(data, (key,), str(path))
    if not isinstance(data[key], list):
        raise DataFormatError(f"{path}: {key!r} must be a list, got {type(data[key]).__name__}")
    return data[key]


def _int_id(value: Any, key: str, where: str) -> int:
    """An integer id; JSON true/false, floats, strings and null are refused, not coerced."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataFormatError(f"{where}: {key} must be an integer, got {value!r}")
    return value


def _refuse_duplicate(seen: dict[Any, str], qid: Any, where: str, path: str | Path) -> None:
    """Record where ``qid`` was seen; a second occurrence is an error naming both places."""
    if qid in seen:
        raise DataFormatError(
            f"{path}: question_id {qid!r} appears twice ({seen[qid]} and {where}); each "
            "question must appear once: remove or renumber the duplicate"
        )
    seen[qid] = where


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
    questions = _okvqa_questions(questions_json)
    by_qid = _okvqa_annotations(annotations_json)
    rows: dict[str, list] = {name: [] for name in OKVQA_SCHEMA.names}
    for qid in sorted(questions):
        q = questions[qid]
        ann = by_qid.get(qid)
        if ann is None:
            raise DataFormatError(
                f"{annotations_json}: no annotation for question_id {qid} of {questions_json}; "
                "use the annotations file of the same split, or remove the question"
            )
        rows["question_id"].append(qid)
        rows["image_id"].append(q["image_id"])
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


def _okvqa_questions(path: str | Path) -> dict[int, dict]:
    """Questions by integer id, each checked: an object, integer ids, no id twice."""
    where_seen: dict[Any, str] = {}
    questions: dict[int, dict] = {}
    for i, q in enumerate(_list_of(read_json(path), "questions", path)):
        where = f"{path}: questions[{i}]"
        _require(q, ("question_id", "image_id", "question"), where)
        qid = _int_id(q["question_id"], "question_id", where)
        q = dict(q, image_id=_int_id(q["image_id"], "image_id", f"{where} (question_id {qid})"))
        _refuse_duplicate(where_seen, qid, f"questions[{i}]", path)
        questions[qid] = q
    return questions


def _okvqa_annotations(path: str | Path) -> dict[int, dict]:
    """Annotations by integer id, each checked: an object with a non-empty answer list, no id
    twice (a second one would silently replace the real answers)."""
    where_seen: dict[Any, str] = {}
    by_qid: dict[int, dict] = {}
    for i, ann in enumerate(_list_of(read_json(path), "annotations", path)):
        where = f"{path}: annotations[{i}]"
        _require(ann, ("question_id", "answers", "question_type", "answer_type"), where)
        qid = _int_id(ann["question_id"], "question_id", where)
        answers = ann["answers"]
        if not isinstance(answers, list) or not all(
            isinstance(a, dict) and "answer" in a for a in answers
        ):
            raise DataFormatError(
                f"{where} (question_id {qid}): 'answers' must be a list of {{'answer': ...}}"
            )
        if not answers:
            raise DataFormatError(
                f"{where}: question_id {qid} has an empty 'answers' list, so it cannot be "
                "scored; add its annotators' answers or remove the question and its annotation"
            )
        _refuse_duplicate(where_seen, qid, f"annotations[{i}]", path)
        by_qid[qid] = ann
    return by_qid


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
    rows: dict[str, list] = {name: [] for name in AOKVQA_SCHEMA.names}
    questions = _aokvqa_questions(dataset_json)
    for qid in sorted(questions):
        q = questions[qid]
        direct = [str(a) for a in q.get("direct_answers", [])]
        rows["question_id"].append(qid)
        rows["image_id"].append(q["image_id"])
        rows["question"].append(str(q["question"]))
        rows["question_type"].append(None)
        rows["answer_type"].append(None)
        rows["answers"].append(direct)
        rows["choices"].append([str(c) for c in q["choices"]])
        rows["correct_choice_idx"].append(q.get("correct_choice_idx"))
        rows["direct_answers"].append(direct)
        rows["difficult_direct_answer"].append(bool(q.get("difficult_direct_answer", False)))
        rows["rationales"].append([str(r) for r in q.get("rationales", [])])
    table = pa.table(rows, schema=AOKVQA_SCHEMA)
    write_table(
        out, table, {"stage": "prepare-questions", "format": "aokvqa", "source": str(dataset_json)}
    )
    return table.num_rows


def _aokvqa_questions(path: str | Path) -> dict[str, dict]:
    """A-OKVQA questions by (string) id, each checked.

    A test-split question has no ``direct_answers`` and no ``correct_choice_idx``; when they
    are present they must be usable: a non-empty answer list, an index into ``choices``.
    """
    data = read_json(path)
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of questions")
    where_seen: dict[Any, str] = {}
    questions: dict[str, dict] = {}
    for i, q in enumerate(data):
        where = f"{path}: [{i}]"
        _require(q, ("question_id", "image_id", "question", "choices"), where)
        raw_id = q["question_id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or raw_id == "":
            raise DataFormatError(
                f"{where}: question_id must be a non-empty string, got {raw_id!r}"
            )
        qid = str(raw_id)
        where = f"{where} (question_id {qid!r})"
        q = dict(q, image_id=_int_id(q["image_id"], "image_id", where))
        choices = q["choices"]
        if not isinstance(choices, list) or not choices:
            raise DataFormatError(f"{where}: 'choices' must be a non-empty list")
        idx = q.get("correct_choice_idx")
        if idx is not None and (
            isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(choices)
        ):
            raise DataFormatError(
                f"{where}: correct_choice_idx {idx!r} is not an index into its "
                f"{len(choices)} choices"
            )
        if "direct_answers" in q and (
            not isinstance(q["direct_answers"], list) or not q["direct_answers"]
        ):
            raise DataFormatError(
                f"{where}: 'direct_answers' is empty or not a list, so it cannot be scored; "
                "give its answers, or leave the key out for an unanswered (test-split) question"
            )
        _refuse_duplicate(where_seen, qid, f"[{i}]", path)
        questions[qid] = q
    return questions
