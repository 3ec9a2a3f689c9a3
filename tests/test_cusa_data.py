"""CUSA's data: the reference's caption clean-up, Karpathy split files -> pairs.parquet, the
image-text retrieval registry, and the demo world's split files."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import REPO
from PIL import Image

from crossmodal import paths
from crossmodal.cli import main
from crossmodal.cusa.data import EmptyCaptionError, pre_caption, prepare_itr
from crossmodal.data.demo import make_demo_world
from crossmodal.data.manifest import load_remote
from crossmodal.data.registry import (
    COLLECTIONS,
    DATASETS,
    ITR_DATASETS,
    itr_archives,
    itr_files,
)
from crossmodal.errors import CrossmodalError, DataFormatError
from crossmodal.io import read_provenance

# --- pre_caption (lerogo/aaai24_itr_cusa dataset/utils.py) ----------------------------------


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("A man with a red helmet on a small moped. ", "a man with a red helmet on a small moped"),
        ("Wait, what?! (really) *yes* #1: ok; ~fine", "wait what really yes 1 ok fine"),
        ("He said \"hi\" and 'bye'.", "he said hi and bye"),
        ("A black-and-white cat/dog", "a black and white cat dog"),
        ("<PERSON> rides a bike next to <person>.", "person rides a bike next to person"),
        ("  Two   dogs.\n", "two dogs"),
        ("a\tdog", "a\tdog"),  # a single tab is not a run of two: the reference keeps it
        ("a \t dog", "a dog"),
        ("Ends with a newline\n\n", "ends with a newline"),
    ],
)
def test_pre_caption_matches_the_reference_rules(raw, expected):
    assert pre_caption(raw, 64) == expected


def test_pre_caption_cuts_to_max_words():
    seventy = " ".join(f"w{i}" for i in range(70))
    assert pre_caption(seventy, 64) == " ".join(f"w{i}" for i in range(64))
    sixty_four = " ".join(f"w{i}" for i in range(64))
    assert pre_caption(sixty_four, 64) == sixty_four
    # words are counted after the clean-up: "a-b" is two words
    assert pre_caption("One, two-three four.", 3) == "one two three"


@pytest.mark.parametrize("raw", ["", "   ", "...!?", "- / -", "\n"])
def test_pre_caption_refuses_a_caption_with_nothing_left(raw):
    with pytest.raises(EmptyCaptionError, match="leaves nothing") as info:
        pre_caption(raw, 64)
    # the reference raises ValueError; the CLI prints a CrossmodalError as one line
    assert isinstance(info.value, ValueError) and isinstance(info.value, CrossmodalError)


# --- prepare_itr on a small ALBEF-layout set -------------------------------------------------


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), "white").save(path)


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


TRAIN = [
    {"caption": "A cat on a mat. ", "image": "train2014/COCO_train2014_1.jpg", "image_id": "c_1"},
    {"caption": "A dog-house.", "image": "train2014/COCO_train2014_2.jpg", "image_id": "c_2"},
    {"caption": "The cat, again!", "image": "train2014/COCO_train2014_1.jpg", "image_id": "c_1"},
]
VAL = [{"image": "val2014/COCO_val2014_7.jpg", "caption": ["Val one.", "Val two"]}]
TEST = [
    {"image": "val2014/COCO_val2014_9.jpg", "caption": ["Test nine"]},
    {"image": "val2014/COCO_val2014_8.jpg", "caption": ["Test eight a", "Test eight b"]},
]


@pytest.fixture
def albef(tmp_path):
    """Split files in ALBEF's layout plus the images they name, under tmp_path."""
    images = tmp_path / "images"
    for entries in (TRAIN, VAL, TEST):
        for e in entries:
            _image(images / e["image"])
    files = {
        s: _write(tmp_path / f"{s}.json", e)
        for s, e in (("train", TRAIN), ("val", VAL), ("test", TEST))
    }
    return files, images


def _prepare(files, images, out, max_words=64):
    return prepare_itr(
        files["train"], files["val"], files["test"], images, out, max_words=max_words
    )


def test_prepare_gives_one_row_per_caption_in_split_file_order(albef, tmp_path):
    files, images = albef
    counts = _prepare(files, images, tmp_path / "pairs.parquet")
    assert counts == {"train": (2, 3), "val": (1, 2), "test": (2, 3)}
    table = pq.read_table(tmp_path / "pairs.parquet")
    assert table.column_names == ["image_id", "path", "caption", "text", "split"]
    assert all(str(table.schema.field(c).type) == "string" for c in table.column_names)
    df = table.to_pandas()
    assert df["split"].tolist() == ["train"] * 3 + ["val"] * 2 + ["test"] * 3
    assert df["image_id"].tolist() == [
        "COCO_train2014_1.jpg",
        "COCO_train2014_2.jpg",
        "COCO_train2014_1.jpg",
        "COCO_val2014_7.jpg",
        "COCO_val2014_7.jpg",
        "COCO_val2014_9.jpg",  # test keeps the file's order, not the id order
        "COCO_val2014_8.jpg",
        "COCO_val2014_8.jpg",
    ]
    assert df["caption"].tolist()[:3] == ["A cat on a mat. ", "A dog-house.", "The cat, again!"]
    assert df["text"].tolist() == [
        "a cat on a mat",
        "a dog house",
        "the cat again",
        "val one",
        "val two",
        "test nine",
        "test eight a",
        "test eight b",
    ]
    assert df["path"].tolist()[3] == str(images / "val2014/COCO_val2014_7.jpg")
    assert all((images / p).is_file() for p in df["path"])
    provenance = read_provenance(tmp_path / "pairs.parquet")
    assert provenance["stage"] == "prepare-itr" and provenance["max_words"] == 64


def test_max_words_reaches_the_text_column(albef, tmp_path):
    files, images = albef
    _prepare(files, images, tmp_path / "p.parquet", max_words=2)
    texts = pq.read_table(tmp_path / "p.parquet").column("text").to_pylist()
    assert texts[0] == "a cat" and texts[-1] == "test eight"


def test_missing_images_are_named_and_counted(albef, tmp_path):
    files, images = albef
    (images / "val2014/COCO_val2014_7.jpg").unlink()
    (images / "train2014/COCO_train2014_2.jpg").unlink()
    with pytest.raises(DataFormatError) as info:
        _prepare(files, images, tmp_path / "p.parquet")
    message = str(info.value)
    assert "2 of 5 images" in message
    assert str(images / "val2014/COCO_val2014_7.jpg") in message
    assert str(images / "train2014/COCO_train2014_2.jpg") in message
    assert "data.mirrors" in message
    assert not (tmp_path / "p.parquet").exists()


def test_an_empty_caption_names_split_entry_and_row(albef, tmp_path):
    files, images = albef
    _write(files["test"], [TEST[0], {"image": TEST[1]["image"], "caption": ["ok", "?!"]}])
    with pytest.raises(EmptyCaptionError) as info:
        _prepare(files, images, tmp_path / "p.parquet")
    message = str(info.value)
    assert f"{files['test']}: entry 1 caption[1]" in message
    assert "test split" in message and "pairs row 7" in message and "'?!'" in message


def test_an_image_in_two_splits_is_an_error(albef, tmp_path):
    files, images = albef
    _write(files["test"], [*TEST, {"image": VAL[0]["image"], "caption": ["again"]}])
    with pytest.raises(DataFormatError, match=r"already appears in the val split"):
        _prepare(files, images, tmp_path / "p.parquet")


def test_an_eval_image_listed_twice_is_an_error(albef, tmp_path):
    files, images = albef
    _write(files["val"], [VAL[0], VAL[0]])
    with pytest.raises(DataFormatError, match=r"entry 1: .*already appears in the val split"):
        _prepare(files, images, tmp_path / "p.parquet")


def test_one_albef_image_id_for_two_images_is_an_error(albef, tmp_path):
    files, images = albef
    _write(files["train"], [*TRAIN, {**TRAIN[1], "image_id": "c_1"}])
    with pytest.raises(DataFormatError, match=r"entry 3: image_id 'c_1'.*contradicts"):
        _prepare(files, images, tmp_path / "p.parquet")


@pytest.mark.parametrize(
    "split,entries,needle",
    [
        ("val", [{"image": "val2014/COCO_val2014_7.jpg", "caption": "one"}], "non-empty list"),
        ("val", [{"image": "val2014/COCO_val2014_7.jpg", "caption": []}], "non-empty list"),
        ("train", [{"image": "train2014/COCO_train2014_1.jpg"}], "missing key(s) ['caption']"),
        ("train", [{"image": 3, "caption": "x"}], "'image' must be a string"),
        ("test", [], "lists no entries"),
        ("test", {"images": []}, "expected a JSON list"),
    ],
)
def test_malformed_split_files_name_the_file_and_entry(albef, tmp_path, split, entries, needle):
    files, images = albef
    _write(files[split], entries)
    with pytest.raises(DataFormatError) as info:
        _prepare(files, images, tmp_path / "p.parquet")
    assert str(files[split]) in str(info.value) and needle in str(info.value)


def test_a_split_file_elsewhere_in_the_archive_is_pointed_at(tmp_path):
    (tmp_path / "albef" / "other").mkdir(parents=True)
    (tmp_path / "albef" / "other" / "coco_val.json").write_text("[]")
    wanted = tmp_path / "albef" / "data" / "coco_val.json"
    with pytest.raises(DataFormatError) as info:
        prepare_itr(wanted, wanted, wanted, tmp_path, tmp_path / "p.parquet", max_words=64)
    message = str(info.value)
    assert "split file not found" in message
    assert str(tmp_path / "albef" / "other" / "coco_val.json") in message


# --- registry ---------------------------------------------------------------------------------


def test_registry_files_and_archives():
    assert set(ITR_DATASETS) == {"coco_karpathy", "flickr30k", "demo"}
    assert itr_archives("coco_karpathy") == (
        "data.tar.gz",
        "train2014.zip",
        "annotations_trainval2014.zip",
        "val2014.zip",
    )
    assert itr_archives("flickr30k") == ("data.tar.gz",) and itr_archives("demo") == ()
    assert itr_files("coco_karpathy", {}) == {
        "train_json": "resources/albef/data/coco_train.json",
        "val_json": "resources/albef/data/coco_val.json",
        "test_json": "resources/albef/data/coco_test.json",
        "image_root": "resources/coco",
    }
    flickr = itr_files("flickr30k", {"flickr30k": "/data/f30k"})
    assert flickr["image_root"] == "/data/f30k"
    assert flickr["test_json"] == "resources/albef/data/flickr30k_test.json"
    with pytest.raises(KeyError, match="known: \\['coco_karpathy', 'demo', 'flickr30k'\\]"):
        itr_archives("coco")


def test_flickr30k_without_its_image_folder_says_which_key_to_set():
    with pytest.raises(CrossmodalError, match=r"set data\.mirrors\.flickr30k .*flickr30k-images/"):
        itr_files("flickr30k", {"flickr30k": None})


def test_itr_archives_are_in_the_manifest_and_agree_with_other_owners():
    """archive_roots / archive_mirror_key map an archive to one root and one mirror key: every
    owner of an archive must agree on both, and every archive must be downloadable."""
    manifest = REPO / paths.MANIFEST
    owners: dict[str, set[tuple[str, str]]] = {}
    for owner in (*COLLECTIONS.values(), *DATASETS.values(), *ITR_DATASETS.values()):
        for name in owner.archives:
            owners.setdefault(name, set()).add((owner.root, owner.mirror_key))
    assert all(len(o) == 1 for o in owners.values()), owners
    for name in ITR_DATASETS["coco_karpathy"].archives:
        remote = load_remote(manifest, name)
        assert remote.url.endswith("/ALBEF/data.tar.gz") and remote.min_size


# --- the demo world ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_pairs(tmp_path_factory):
    """The demo world made where the pipeline makes it, prepared with the registry's paths."""
    work = tmp_path_factory.mktemp("work")
    make_demo_world(work / paths.DEMO_ROOT, seed=5, n_train=6, n_val=5, image_size=(64, 48))
    files = {k: work / v for k, v in itr_files("demo", {}).items()}
    out = work / paths.fill(paths.ITR_PAIRS, dataset="demo")
    counts = prepare_itr(**files, out=out, max_words=64)
    return work, counts, pq.read_table(out).to_pandas()


def test_demo_prepares_into_disjoint_splits_with_five_captions(demo_pairs):
    work, counts, df = demo_pairs
    assert counts == {"train": (6, 30), "val": (2, 10), "test": (3, 15)}
    assert df["split"].drop_duplicates().tolist() == ["train", "val", "test"]
    by_split = {s: set(g["image_id"]) for s, g in df.groupby("split")}
    assert not (by_split["train"] & by_split["val"])
    assert not (by_split["train"] & by_split["test"])
    assert not (by_split["val"] & by_split["test"])
    assert df.groupby("image_id").size().eq(5).all()
    assert all(i.startswith("COCO_train2014_") for i in by_split["train"])
    assert all(i.startswith("COCO_val2014_") for i in by_split["val"] | by_split["test"])
    # the same captions as the demo's COCO annotations, image by image
    coco = json.loads(
        (work / paths.DEMO_ROOT / "coco/annotations/captions_val2014.json").read_text()
    )
    names = {img["id"]: img["file_name"] for img in coco["images"]}
    expected: dict[str, list[str]] = {}
    for ann in coco["annotations"]:
        expected.setdefault(names[ann["image_id"]], []).append(ann["caption"])
    evaluated = df[df["split"] != "train"]
    assert {i: g["caption"].tolist() for i, g in evaluated.groupby("image_id")} == expected


def test_demo_split_files_are_seeded(tmp_path):
    def split_files(root, seed):
        make_demo_world(root, seed=seed, n_train=2, n_val=6, image_size=(32, 32))
        return [(root / "itr" / f"{s}.json").read_bytes() for s in ("train", "val", "test")]

    assert split_files(tmp_path / "a", 1) == split_files(tmp_path / "b", 1)


def test_prepare_itr_command_line(demo_pairs, tmp_path, capsys):
    work, _, df = demo_pairs
    files = itr_files("demo", {})
    args = ["prepare-itr", "--sources", str(work / paths.DEMO_DONE)]
    for key, value in files.items():
        args += [f"--{key.replace('_', '-')}", str(work / value)]
    out = tmp_path / "pairs.parquet"
    assert main([*args, "--max-words", "3", "--pairs", str(out)]) == 0
    texts = pq.read_table(out).column("text").to_pylist()
    assert len(texts) == len(df) and all(len(t.split(" ")) <= 3 for t in texts)
    (work / files["image_root"] / "val2014").rename(work / "moved")
    try:
        assert main([*args, "--max-words", "3", "--pairs", str(tmp_path / "x.parquet")]) == 2
    finally:
        (work / "moved").rename(work / files["image_root"] / "val2014")
    err = capsys.readouterr().err
    assert "5 of 11 images" in err and "Traceback" not in err
