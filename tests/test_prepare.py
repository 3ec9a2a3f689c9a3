"""Preparing the demo world and real-format files into Parquet tables."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from crossmodal.cli import main
from crossmodal.data.demo import make_demo_world
from crossmodal.data.prepare import prepare_aokvqa, prepare_collection, prepare_okvqa
from crossmodal.errors import DataFormatError
from crossmodal.io import read_provenance


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    counts = make_demo_world(root, seed=3, n_train=12, n_val=5, image_size=(96, 64))
    return root, counts


def test_demo_collection_counts_and_types(demo, tmp_path):
    root, counts = demo
    n_img, n_cap = prepare_collection(
        root / "coco" / "train2014",
        root / "coco" / "annotations" / "captions_train2014.json",
        tmp_path / "images.parquet",
        tmp_path / "captions.parquet",
    )
    assert (n_img, n_cap) == (12, 60)  # five captions per image
    images = pq.read_table(tmp_path / "images.parquet")
    assert images.schema.field("image_id").type == "int64"
    assert images.schema.field("width").type == "int32"
    df = images.to_pandas()
    assert df["image_id"].is_unique and df["image_id"].is_monotonic_increasing
    assert (df["width"] == 96).all() and (df["height"] == 64).all()
    assert all((root / "coco" / "train2014").joinpath(p.split("/")[-1]).is_file() for p in df.path)
    caps = pq.read_table(tmp_path / "captions.parquet").to_pandas()
    assert caps.groupby("image_id").size().eq(5).all()
    assert read_provenance(tmp_path / "images.parquet")["stage"] == "prepare-collection"


def test_demo_questions_have_ten_answers(demo, tmp_path):
    root, counts = demo
    n = prepare_okvqa(
        root / "okvqa" / "OpenEnded_mscoco_val2014_questions.json",
        root / "okvqa" / "mscoco_val2014_annotations.json",
        tmp_path / "q.parquet",
    )
    assert n == counts["val_questions"] and 5 <= n <= 10
    df = pq.read_table(tmp_path / "q.parquet").to_pandas()
    assert df["answers"].map(len).eq(10).all()
    assert set(df["answer_type"]) <= {"other", "number"}
    assert df["question_id"].dtype == "int64" and df["image_id"].between(500_001, 500_005).all()


def test_demo_is_deterministic(tmp_path):
    a = make_demo_world(tmp_path / "a", seed=7, n_train=3, n_val=2, image_size=(64, 64))
    b = make_demo_world(tmp_path / "b", seed=7, n_train=3, n_val=2, image_size=(64, 64))
    assert a == b
    for rel in [
        "coco/train2014/COCO_train2014_000000000002.jpg",
        "okvqa/mscoco_val2014_annotations.json",
    ]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_okvqa_answers_attached_by_question_id(tmp_path):
    """Annotation order differs from question order: answers must follow the id."""
    qs = {
        "questions": [
            {"question_id": 1, "image_id": 9, "question": "a?"},
            {"question_id": 2, "image_id": 9, "question": "b?"},
        ]
    }
    anns = {
        "annotations": [
            {
                "question_id": 2,
                "question_type": "t",
                "answer_type": "other",
                "answers": [{"answer": "two"}] * 10,
            },
            {
                "question_id": 1,
                "question_type": "t",
                "answer_type": "other",
                "answers": [{"answer": "one"}] * 10,
            },
        ]
    }
    (tmp_path / "q.json").write_text(json.dumps(qs))
    (tmp_path / "a.json").write_text(json.dumps(anns))
    prepare_okvqa(tmp_path / "q.json", tmp_path / "a.json", tmp_path / "out.parquet")
    df = pq.read_table(tmp_path / "out.parquet").to_pandas().set_index("question_id")
    assert df.loc[1, "answers"][0] == "one" and df.loc[2, "answers"][0] == "two"


def test_aokvqa_format(tmp_path):
    data = [
        {
            "question_id": "x1",
            "image_id": 5,
            "question": "why?",
            "choices": ["a", "b"],
            "correct_choice_idx": 1,
            "direct_answers": ["b"] * 10,
            "difficult_direct_answer": True,
            "rationales": ["r1", "r2", "r3"],
        },
        {"question_id": "x0", "image_id": 6, "question": "what?", "choices": ["c", "d"]},
    ]
    (tmp_path / "ao.json").write_text(json.dumps(data))
    assert prepare_aokvqa(tmp_path / "ao.json", tmp_path / "ao.parquet") == 2
    df = pq.read_table(tmp_path / "ao.parquet").to_pandas().set_index("question_id")
    assert df.loc["x1", "correct_choice_idx"] == 1 and bool(df.loc["x1", "difficult_direct_answer"])
    assert list(df.loc["x1", "rationales"]) == ["r1", "r2", "r3"]
    assert list(df.loc["x0", "direct_answers"]) == []  # test split: no answers, kept as empty


@pytest.mark.parametrize(
    "content,needle",
    [
        ('{"images": [}', "malformed JSON"),
        ('{"images": []}', "missing key(s) ['annotations']"),
        ('{"images": [{"id": 1}], "annotations": []}', "images[0]"),
    ],
)
def test_malformed_annotations_name_the_file(tmp_path, capsys, content, needle):
    bad = tmp_path / "captions_broken.json"
    bad.write_text(content)
    with pytest.raises(DataFormatError) as info:
        prepare_collection(tmp_path, bad, tmp_path / "i.parquet", tmp_path / "c.parquet")
    assert str(bad) in str(info.value) and needle in str(info.value)
    # through the CLI: one clear line, exit status 2, no traceback
    code = main(
        [
            "prepare-collection",
            "--sources",
            str(bad),
            "--image-dir",
            str(tmp_path),
            "--captions-json",
            str(bad),
            "--images",
            str(tmp_path / "i.parquet"),
            "--captions",
            str(tmp_path / "c.parquet"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "i.parquet").exists()


def test_question_without_annotation_is_an_error(tmp_path):
    (tmp_path / "q.json").write_text(
        json.dumps({"questions": [{"question_id": 5, "image_id": 1, "question": "?"}]})
    )
    (tmp_path / "a.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataFormatError, match="no annotation for question_id 5"):
        prepare_okvqa(tmp_path / "q.json", tmp_path / "a.json", tmp_path / "o.parquet")


def _okvqa_files(tmp_path, questions, annotations):
    (tmp_path / "q.json").write_text(json.dumps({"questions": questions}))
    (tmp_path / "a.json").write_text(json.dumps({"annotations": annotations}))
    return tmp_path / "q.json", tmp_path / "a.json"


def _q(qid, image_id=9):
    return {"question_id": qid, "image_id": image_id, "question": "what?"}


def _ann(qid, answers=("red",) * 10):
    return {
        "question_id": qid,
        "question_type": "what",
        "answer_type": "other",
        "answers": [{"answer": a} for a in answers],
    }


@pytest.mark.parametrize(
    "questions,annotations,which,needle",
    [
        # an empty answer list: vqa-eval would divide by zero after every generation had run
        ([_q(1)], [_ann(1, answers=())], "a", "question_id 1 has an empty 'answers' list"),
        # a second annotation would silently replace the real answers
        ([_q(1)], [_ann(1), _ann(1, answers=("x",) * 10)], "a", "question_id 1 appears twice"),
        ([_q(1), _q(1)], [_ann(1)], "q", "question_id 1 appears twice"),
        ([_q("one")], [_ann(1)], "q", "question_id must be an integer, got 'one'"),
        ([_q(1.5)], [_ann(1)], "q", "question_id must be an integer, got 1.5"),
        ([_q(1, image_id=None)], [_ann(1)], "q", "image_id must be an integer, got None"),
        ([_q(1)], [_ann("1")], "a", "question_id must be an integer, got '1'"),
        ([_q(1), ["not", "an", "object"]], [_ann(1)], "q", "questions[1]: expected an object"),
        ([_q(1)], [_ann(1), 7], "a", "annotations[1]: expected an object, got int"),
    ],
)
def test_bad_okvqa_records_are_refused_naming_file_and_id(
    tmp_path, questions, annotations, which, needle
):
    qfile, afile = _okvqa_files(tmp_path, questions, annotations)
    with pytest.raises(DataFormatError, match=re.escape(needle)) as info:
        prepare_okvqa(qfile, afile, tmp_path / "o.parquet")
    assert str(qfile if which == "q" else afile) in str(info.value)
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize(
    "record,needle",
    [
        ({"direct_answers": []}, "'direct_answers' is empty"),
        ({"correct_choice_idx": 2}, "correct_choice_idx 2 is not an index into its 2 choices"),
        ({"choices": []}, "'choices' must be a non-empty list"),
        ({"question_id": None}, "question_id must be a non-empty string, got None"),
        ({"image_id": "5"}, "image_id must be an integer, got '5'"),
    ],
)
def test_bad_aokvqa_records_are_refused(tmp_path, record, needle):
    base = {"question_id": "x1", "image_id": 5, "question": "why?", "choices": ["a", "b"]}
    (tmp_path / "ao.json").write_text(json.dumps([dict(base, **record)]))
    with pytest.raises(DataFormatError, match=re.escape(needle)) as info:
        prepare_aokvqa(tmp_path / "ao.json", tmp_path / "ao.parquet")
    assert str(tmp_path / "ao.json") in str(info.value)


def test_aokvqa_duplicate_and_non_object_entries(tmp_path):
    q = {"question_id": "x1", "image_id": 5, "question": "why?", "choices": ["a", "b"]}
    (tmp_path / "ao.json").write_text(json.dumps([q, q]))
    with pytest.raises(
        DataFormatError, match=r"question_id 'x1' appears twice \(\[0\] and \[1\]\)"
    ):
        prepare_aokvqa(tmp_path / "ao.json", tmp_path / "ao.parquet")
    (tmp_path / "ao.json").write_text(json.dumps([q, "x2"]))
    with pytest.raises(DataFormatError, match=r"\[1\]: expected an object, got str"):
        prepare_aokvqa(tmp_path / "ao.json", tmp_path / "ao.parquet")
