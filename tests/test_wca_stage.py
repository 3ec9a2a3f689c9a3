"""The wca-crops, zeroshot and zeroshot-summary commands end to end on drawn shapes."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_wca_crops import write_images

from crossmodal.cli import main
from crossmodal.encoders import build_encoder
from crossmodal.wca import scoring
from crossmodal.wca.crops import read_crop_features

TINY = {"backend": "tiny", "seed": 0}
CLASSES = ["red circle", "green_square", "blue triangle"]  # wordified: "green square"
N_CROPS = 5
WCA_OPTIONS = [
    "--seed", "3", "--n-runs", "20", "--n-sampled", "8", "--image-scale", "4.0",
    "--text-scale", "2.0",
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    images, rows, labels = write_images(root)
    pq.write_table(
        pa.table({"image_id": [i for i, _ in labels], "label": [c for _, c in labels]}),
        root / "labels.parquet",
    )
    files = {
        "classes": CLASSES,
        "clip-e": ["a photo of a {}.", "a drawing of a {}.", "a {} shape."],
        "clip-d": {
            "red circle": ["a round outline", "red colour"],
            "green square": ["four equal sides", "has right angles", "green colour"],
            "blue triangle": ["three corners"],
            "unused class": ["ignored"],
        },
        "cupl": {
            "red circle": ["A red circle is round.", "A red disc on white."],
            "green square": ["A green square has four sides."],
            "blue triangle": ["A blue triangle points up.", "Three blue corners.", "A wedge."],
        },
        "words": ["apple", "bridge", "candle", "dolphin", "ember", "forest"],
    }
    for name, content in files.items():
        (root / f"{name}.json").write_text(json.dumps(content))
    crops, meta = root / "crops.npy", root / "crops.json"
    argv = [
        "wca-crops", "--images", str(images), "--crops", str(crops), "--meta", str(meta),
        "--encoder", json.dumps(TINY), "--n-crops", str(N_CROPS), "--alpha", "0.5",
        "--seed", "0", "--batch-size", "4", "--workers", "0", "--dtype", "float32",
        "--precision", "fp32", "--device", "cpu", "--max-skip-fraction", "0",
        "--max-pixels", "1000000",
    ]  # fmt: skip
    assert main(argv) == 0
    return root


def zeroshot(world, method, out, *extra, encoder=TINY, labels=None):
    prompt = {"clip-e": "clip-e", "clip-d": "clip-d", "waffle": "clip-d"}.get(method, "cupl")
    argv = [
        "zeroshot", "--method", method, "--crops", str(world / "crops.npy"),
        "--crops-meta", str(world / "crops.json"),
        "--labels", str(labels or world / "labels.parquet"),
        "--classes", str(world / "classes.json"), "--result", str(out),
        "--encoder", json.dumps(encoder), "--encoder-name", "tiny",
        "--precision", "fp32", "--device", "cpu", *extra,
    ]  # fmt: skip
    if method != "clip":
        argv += ["--prompts", str(world / f"{prompt}.json")]
    return main(argv)


METHOD_OPTIONS = {
    "clip": [],
    "clip-e": [],
    "clip-d": [],
    "waffle": ["--words", "WORDS", "--seed", "1"],
    "cupl": [],
    "wca": WCA_OPTIONS,
}


def test_every_method_end_to_end_and_the_summary(world, tmp_path):
    results = []
    for method, options in METHOD_OPTIONS.items():
        options = [str(world / "words.json") if o == "WORDS" else o for o in options]
        out = tmp_path / f"{method}.json"
        assert zeroshot(world, method, out, *options) == 0
        results.append(out)
        record = json.loads(out.read_text())
        assert record["method"] == method and record["encoder"] == "tiny"
        assert record["n_images"] == 6 and record["n_left_out"] == 0 and record["n_classes"] == 3
        runs = record["runs"]
        assert len(runs) == (20 if method == "wca" else 1)
        assert all(
            0.0 <= r <= 100.0 and (r * 6 / 100) == pytest.approx(round(r * 6 / 100)) for r in runs
        )
        assert record["mean"] == pytest.approx(np.mean(runs))
        assert record["std"] == pytest.approx(np.std(runs))
    assert json.loads(results[2].read_text())["n_texts"] == 6  # clip-d: 2 + 3 + 1 descriptors
    assert json.loads(results[3].read_text())["n_texts"] == 90  # waffle: 30 per class

    summary, plot = tmp_path / "summary.json", tmp_path / "summary.png"
    argv = ["zeroshot-summary", "--results", *map(str, results), "--title", "shapes"]
    argv += ["--config-hash", "0123456789abcdef"]
    assert main([*argv, "--summary", str(summary), "--plot", str(plot)]) == 0
    rows = json.loads(summary.read_text())["rows"]
    assert [r["method"] for r in rows] == list(METHOD_OPTIONS)
    keys = {"method", "encoder", "mean", "std", "runs", "n_images", "n_left_out", "config_hash"}
    assert set(rows[0]) == keys and rows[0]["config_hash"] == "0123456789abcdef"
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_scores_equal_a_direct_computation(world, tmp_path):
    """The command's numbers equal the scoring functions applied by hand to the cache."""
    encoder = build_encoder(TINY, device="cpu")
    views, meta = read_crop_features(world / "crops.npy", world / "crops.json")
    labels = np.array([i // 10 for i in meta["image_ids"]])
    names = ["red circle", "green square", "blue triangle"]

    clip = encoder.encode_texts([f"a photo of a {c}." for c in names])
    assert zeroshot(world, "clip", tmp_path / "clip.json") == 0
    expected = scoring.top1(views[:, 0] @ clip.T, labels)
    assert json.loads((tmp_path / "clip.json").read_text())["runs"] == [expected]

    cupl = json.loads((world / "cupl.json").read_text())
    flat = [t for c in names for t in cupl[c]]
    z = scoring.weighted_class_vectors(encoder.encode_texts(flat), np.array([2, 1, 3]), clip, 2.0)
    indices = scoring.draw_crop_indices(3, 20, N_CROPS, 8)
    expected_runs = [
        scoring.top1(u @ z.T, labels)
        for u in scoring.wca_image_vectors(views, scoring.index_counts(indices, N_CROPS), 4.0)
    ]
    assert zeroshot(world, "wca", tmp_path / "a.json", *WCA_OPTIONS) == 0
    assert json.loads((tmp_path / "a.json").read_text())["runs"] == expected_runs
    assert zeroshot(world, "wca", tmp_path / "b.json", *WCA_OPTIONS) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


def test_wrong_options_encoder_and_labels_are_refused(world, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert zeroshot(world, "clip", out, "--seed", "1") == 2
    assert "not read by this method ['seed']" in capsys.readouterr().err
    assert zeroshot(world, "wca", out, "--seed", "1") == 2
    assert "missing ['image_scale', 'n_runs', 'n_sampled', 'text_scale']" in capsys.readouterr().err
    assert zeroshot(world, "clip", out, encoder={"backend": "tiny", "seed": 1}) == 2
    assert "the crops were encoded with" in capsys.readouterr().err
    partial = tmp_path / "labels.parquet"
    pq.write_table(pa.table({"image_id": [0, 1], "label": [0, 0]}), partial)
    assert zeroshot(world, "clip", out, labels=partial) == 2
    assert "no label for 4 image(s)" in capsys.readouterr().err
    assert not out.exists()
