"""Classification data sets for WCA: layouts, prepared tables, class names, word lists,
resource downloads against the committed manifest, and the wiring's per-data-set choices."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.jobs import demo_config
from PIL import Image

from crossmodal import paths, stages, workflow
from crossmodal.data.manifest import load_remote
from crossmodal.data.run import run_download
from crossmodal.errors import ChecksumError, CrossmodalError, DataFormatError
from crossmodal.wca import data, wiring
from crossmodal.wca.data import (
    CLS_DATASETS,
    TooManyMissingImagesError,
    prepare_classification,
    read_name_list,
    read_words,
)

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / paths.MANIFEST
# The reference's prompts/oxford_pet/clip-e.json at the pinned commit, byte for byte.
PET_TEMPLATES = b'[\n    "a photo of a {}, a type of pet."\n]'


def _image(path: Path, size=(20, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path)


def _outputs(tmp_path: Path) -> dict[str, Path]:
    names = ("images", "labels", "classes", "descriptor_classes", "words", "templates")
    out = {k: tmp_path / "out" / f"{k}.x" for k in (*names, "descriptors", "report")}
    return out


def _prepare(tmp_path, layout, root, names, max_missing=0.0, descriptor=None):
    return prepare_classification(
        layout=layout,
        root=root,
        class_names=names,
        descriptor_names=descriptor or names,
        words=["w"],
        templates=["a {}."],
        descriptors={n: ["d"] for n in names},
        out=_outputs(tmp_path),
        max_missing_fraction=max_missing,
    )


def test_an_imagefolder_tree_becomes_images_labels_and_classes(tmp_path):
    root = tmp_path / "val"
    for cls, files in {"n02": ["b.jpg", "a.JPEG"], "n01": ["c.png"], "n03": []}.items():
        (root / cls).mkdir(parents=True)
        for f in files:
            _image(root / cls / f, size=(30, 17))
    (root / "n01" / "notes.txt").write_text("not an image")
    report = _prepare(tmp_path, "imagefolder", root, ["one", "two", "three"])
    out = _outputs(tmp_path)
    images = pq.read_table(out["images"]).to_pylist()
    labels = pq.read_table(out["labels"]).to_pylist()
    # classes are the sorted folders, files sorted inside each; ids follow that order
    assert [Path(r["path"]).relative_to(root).as_posix() for r in images] == [
        "n01/c.png",
        "n02/a.JPEG",
        "n02/b.jpg",
    ]
    assert [(r["width"], r["height"]) for r in images] == [(30, 17)] * 3
    assert labels == [
        {"image_id": 0, "label": 0},
        {"image_id": 1, "label": 1},
        {"image_id": 2, "label": 1},
    ]
    assert json.loads(out["classes"].read_text()) == ["one", "two", "three"]
    assert report["images_per_class"] == {"one": 1, "two": 2, "three": 0}
    assert report["classes_without_images"] == ["three"]
    with pytest.raises(DataFormatError, match="3 classes in the imagefolder layout but 2 class"):
        _prepare(tmp_path, "imagefolder", root, ["one", "two"])


def _dtd_tree(tmp_path: Path) -> Path:
    root = tmp_path / "dtd"
    listed = ["striped/s1.jpg", "banded/b1.jpg", "banded/b2.jpg", "striped/s2.jpg"]
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "test1.txt").write_text("\n".join(listed) + "\n")
    for rel in listed:
        if rel != "banded/b2.jpg":  # listed by the split, missing on disk
            _image(root / "images" / rel)
    (root / "images" / "striped" / "s2.jpg").write_bytes(b"not a jpeg")
    return root


def test_missing_and_unreadable_files_are_listed_with_counts_never_dropped_silently(tmp_path):
    root = _dtd_tree(tmp_path)
    with pytest.raises(TooManyMissingImagesError, match=r"2 of 4 images") as info:
        _prepare(tmp_path, "dtd", root, ["banded", "striped"])
    assert "banded/b2.jpg: missing" in str(info.value)
    assert "s2.jpg: unreadable header" in str(info.value)
    report = _prepare(tmp_path, "dtd", root, ["banded", "striped"], max_missing=0.5)
    assert (report["listed"], report["kept"], report["left_out_count"]) == (4, 2, 2)
    assert {Path(m["path"]).name: m["reason"] for m in report["left_out"]} == {
        "b2.jpg": "missing",
        "s2.jpg": "unreadable header (UnidentifiedImageError)",
    }
    labels = pq.read_table(_outputs(tmp_path)["labels"]).to_pylist()
    # ids are the split file's order; DTD's classes are its sorted folder names
    assert labels == [{"image_id": 0, "label": 1}, {"image_id": 1, "label": 0}]
    on_disk = json.loads(_outputs(tmp_path)["report"].read_text())
    assert on_disk["left_out_by_reason"] == {
        "missing": 1,
        "unreadable header (UnidentifiedImageError)": 1,
    }


def test_official_split_files_of_each_layout(tmp_path):
    cub = tmp_path / "CUB_200_2011"
    (cub / "images.txt").parent.mkdir(parents=True)
    (cub / "images.txt").write_text("1 001.A/x.jpg\n2 002.B/y.jpg\n3 002.B/z.jpg\n")
    (cub / "train_test_split.txt").write_text("1 0\n2 1\n3 0\n")
    (cub / "image_class_labels.txt").write_text("1 1\n2 2\n3 2\n")
    assert data.LAYOUTS["cub"](cub) == (["images/001.A/x.jpg", "images/002.B/z.jpg"], [0, 1], 200)
    pet = tmp_path / "pet"
    (pet / "annotations").mkdir(parents=True)
    (pet / "annotations" / "test.txt").write_text("Abyssinian_1 1 1 1\nbeagle_7 5 2 3\n")
    assert data.LAYOUTS["oxford_pet"](pet) == (
        ["images/Abyssinian_1.jpg", "images/beagle_7.jpg"],
        [0, 4],
        37,
    )
    food = tmp_path / "food-101"
    (food / "meta").mkdir(parents=True)
    (food / "meta" / "test.json").write_text(
        json.dumps({"waffles": ["waffles/1"], "pho": ["pho/2"]})
    )
    assert data.LAYOUTS["food101"](food) == (
        ["images/pho/2.jpg", "images/waffles/1.jpg"],
        [0, 1],
        2,
    )
    places = tmp_path / "places"
    places.mkdir()
    (places / "places365_val.txt").write_text("Places365_val_00000001.jpg 165\n")
    assert data.LAYOUTS["place365"](places) == (
        ["val_large/Places365_val_00000001.jpg"],
        [165],
        365,
    )
    v2 = tmp_path / "v2"
    for k in ("10", "2"):
        _image(v2 / k / "a.jpeg")
    assert data.LAYOUTS["imagenetv2"](v2) == (["2/a.jpeg", "10/a.jpeg"], [2, 10], 1000)


def test_imagenet_names_come_from_the_reference_utils_without_running_it(tmp_path):
    utils = tmp_path / "utils.py"
    utils.write_text(
        "import os\nos.remove('nothing')\n"
        "openai_imagenet_classes = ['tench', 'eft']\nimagenet_classes = ['tench', 'newt']\n"
    )
    assert read_name_list(utils, "imagenet_classes") == ["tench", "newt"]
    assert read_name_list(utils, "openai_imagenet_classes") == ["tench", "eft"]
    with pytest.raises(DataFormatError, match="one assignment to 'missing'"):
        read_name_list(utils, "missing")


def test_the_reference_word_pickle_loads_and_nothing_else_does(tmp_path):
    words = tmp_path / "word_list.pkl"
    words.write_bytes(pickle.dumps([np.str_("alpha"), np.str_("beta")]))
    assert read_words(words) == ["alpha", "beta"]

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "nope"),))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(DataFormatError, match="shutil.rmtree"):
        read_words(evil)


def test_a_reference_file_downloads_through_a_mirror_against_the_committed_checksum(
    file_server, tmp_path
):
    name = "wca_oxford_pet_clip-e.json"
    manifest = tmp_path / "manifests" / "downloads.json"
    manifest.parent.mkdir()
    shutil.copy(MANIFEST, manifest)
    assert load_remote(manifest, name).sha256 is not None  # pinned, never recorded
    file_server.files[name] = PET_TEMPLATES

    def job(into: Path) -> stages.Download:
        return stages.Download(
            manifest=manifest,
            name=name,
            file=into / name,
            retries=0,
            timeout=5,
            mirror=file_server.url,
        )

    run_download(job(tmp_path / "ok"))
    assert json.loads((tmp_path / "ok" / name).read_text()) == ["a photo of a {}, a type of pet."]
    file_server.files[name] = PET_TEMPLATES.replace(b"pet", b"cat")
    with pytest.raises(ChecksumError, match="sha256"):
        run_download(job(tmp_path / "bad"))
    assert not (tmp_path / "bad" / name).exists()
    assert not (manifest.parent / "recorded-checksums.json").exists()


def test_every_download_is_in_the_manifest_and_wired_to_the_download_rule():
    files = json.loads(MANIFEST.read_text())["files"]
    roots = workflow.archive_roots()
    for ds in CLS_DATASETS.values():
        for name in ds.archives:
            assert name in files and name in roots
            assert {"md5", "sha256", "min_size"} & set(files[name]), name
    for name in data.resource_files():
        assert name in roots and workflow.archive_mirror_key(name) == "wca"
        assert files[name]["url"].startswith(data.REFERENCE), name
        assert {"sha256", "min_size"} & set(files[name]), name


def test_wiring_choices_per_data_set():
    reference_crops = {"default": 100, "imagenet": 60}
    config = demo_config(wca={"datasets": ["imagenet", "place365"], "n_crops": reference_crops})
    with pytest.raises(CrossmodalError, match="set data.mirrors.imagenet"):
        data.image_root("imagenet", config["data"]["mirrors"])
    assert data.image_root("imagenet", {"imagenet": "/data/in1k"}) == "/data/in1k/val"
    assert data.image_root("oxford_pet", {}) == "resources/oxford_pet"
    assert wiring.alpha(config, "place365") == 0.7 and wiring.n_crops(config, "imagenet") == 60
    reference = demo_config(wca={"reference_alpha": True, "n_crops": reference_crops})
    assert wiring.crop_files(reference, "cub", "tiny")["crops"].endswith("alpha0.1_m100.npy")
    stage = workflow.stages_for(config)["zeroshot"]

    class W:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    # ImageNet: CLIP-D and Waffle read the OpenAI class names their files are keyed by
    clip_d = stage.inputs(W(dataset="imagenet", encoder="tiny", method="clip-d"))
    cupl = stage.inputs(W(dataset="imagenet", encoder="tiny", method="cupl"))
    assert clip_d["classes"].endswith("descriptor_classes.json")
    assert cupl["classes"].endswith("/classes.json")
    assert cupl["prompts"] == "results/zeroshot/imagenet/descriptions/tiny_lm.json"
    published = demo_config(wca={"describe": {"llm": None}})
    assert wiring.descriptions_file(published, "cub") == "resources/downloads/wca_cub_cupl.json"
    with pytest.raises(CrossmodalError, match="set wca.describe.llm"):
        wiring.descriptions_file(published, "demo")


def _settings(config) -> dict[tuple[str, str], str]:
    """Every WCA rule's settings (what Snakemake compares to decide a rerun), by rule and
    wildcard combination of the demo."""

    class W:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    stages_ = workflow.stages_for(config)
    found = {
        ("prepare_classification", ""): stages_["prepare_classification"].settings(
            W(dataset="demo")
        ),
        ("wca_crops", ""): stages_["wca_crops"].settings(
            W(collection="cls_demo", encoder="tiny", alpha="0.5", n_crops="8")
        ),
        ("wca_describe_classes", ""): stages_["wca_describe_classes"].settings(
            W(dataset="demo", llm="tiny_lm")
        ),
    }
    for method in config["wca"]["methods"]:
        found[("zeroshot", method)] = stages_["zeroshot"].settings(
            W(dataset="demo", encoder="tiny", method=method)
        )
    return found


@pytest.mark.parametrize(
    "change,touched",
    [
        ({"n_runs": 7}, {("zeroshot", "wca")}),
        ({"text_scale": 1.0}, {("zeroshot", "wca")}),
        ({"seed": 1}, {("wca_crops", ""), ("zeroshot", "wca"), ("zeroshot", "waffle")}),
        ({"describe": {"llm": "tiny_lm", "n_per_prompt": 3}}, {("wca_describe_classes", "")}),
        ({"max_missing_fraction": 0.1}, {("prepare_classification", "")}),
    ],
)
def test_a_setting_reruns_only_the_jobs_that_read_it(change, touched):
    base = _settings(demo_config())
    changed = _settings(demo_config(wca=change))
    assert {k for k in base if base[k] != changed[k]} == touched


def test_names_the_wca_block_points_to_must_exist():
    with pytest.raises(CrossmodalError, match=r"wca.encoders: \['b32'\] are not entries"):
        workflow.stages_for(demo_config(wca={"encoders": ["b32"]}))
    with pytest.raises(CrossmodalError, match="wca.describe.llm: 'gpt' is not an entry"):
        workflow.stages_for(demo_config(wca={"describe": {"llm": "gpt"}}))
