"""The crop sampler's geometry and seeding, and the crop feature cache."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageDraw

from crossmodal.data.prepare import IMAGES_SCHEMA
from crossmodal.encoders import build_encoder
from crossmodal.errors import CrossmodalError
from crossmodal.wca.crops import (
    TooManyCropSkipsError,
    extract_crop_features,
    read_crop_features,
    sample_crop_boxes,
)

TINY = {"backend": "tiny", "seed": 0}


@pytest.fixture(scope="module")
def tiny():
    return build_encoder(TINY, device="cpu")


def check_boxes(boxes, width, height, alpha):
    short = min(width, height)
    left, top, right, bottom = boxes.T
    side = right - left
    assert (side == bottom - top).all(), "square"
    assert (side >= max(1, int(alpha * short))).all() and (side <= int(0.9 * short)).all()
    assert (left >= 0).all() and (top >= 0).all()
    assert (right <= width).all() and (bottom <= height).all()


@pytest.mark.parametrize("alpha", [0.1, 0.5, 0.7, 0.9])
def test_boxes_are_squares_of_the_drawn_size_inside_the_image(alpha):
    rng = np.random.default_rng(1)
    for image_id in range(200):
        width, height = (int(v) for v in rng.integers(1, 900, 2))
        boxes = sample_crop_boxes(width, height, 20, alpha, 3, image_id)
        assert boxes.shape == (20, 4)
        check_boxes(boxes, width, height, alpha)


def test_sides_spread_over_the_alpha_to_0_9_range():
    boxes = np.concatenate([sample_crop_boxes(1000, 600, 100, 0.5, 0, i) for i in range(50)])
    side = boxes[:, 2] - boxes[:, 0]
    assert side.min() < 310 and side.max() > 530  # [300, 540) of the 600-pixel short side
    assert abs(side.mean() - 420) < 5
    assert len(np.unique(boxes[:, 0])) > 100 and len(np.unique(boxes[:, 1])) > 30


def test_boxes_depend_on_seed_and_image_only():
    a = sample_crop_boxes(640, 480, 30, 0.5, 42, 7)
    np.testing.assert_array_equal(a, sample_crop_boxes(640, 480, 30, 0.5, 42, 7))
    assert not np.array_equal(a, sample_crop_boxes(640, 480, 30, 0.5, 42, 8))
    assert not np.array_equal(a, sample_crop_boxes(640, 480, 30, 0.5, 43, 7))
    # the first crops do not change when more are drawn
    np.testing.assert_array_equal(a[:10], sample_crop_boxes(640, 480, 10, 0.5, 42, 7))


def _boxes_for(ids):
    return {i: sample_crop_boxes(300 + i, 200 + 2 * i, 8, 0.1, 5, i).tolist() for i in ids}


def test_same_boxes_for_any_worker_count_and_order():
    ids = list(range(40))
    serial = _boxes_for(ids)
    with ProcessPoolExecutor(2) as pool:
        parts = list(pool.map(_boxes_for, [ids[1::2][::-1], ids[::2]]))
    merged = {**parts[0], **parts[1]}
    assert merged == serial


def test_degenerate_sizes_and_bad_settings():
    assert (
        sample_crop_boxes(3, 2, 5, 0.1, 0, 1)[:, 2:] - sample_crop_boxes(3, 2, 5, 0.1, 0, 1)[:, :2]
        == 1
    ).all()
    for kwargs, match in [
        ({"alpha": 0.95}, r"alpha 0.95 is outside \(0, 0.9\]"),
        ({"alpha": 0.0}, "alpha 0.0"),
        ({"n_crops": 0}, "n_crops must be at least 1"),
        ({"image_id": -1}, "non-negative"),
    ]:
        args = {"width": 10, "height": 10, "n_crops": 3, "alpha": 0.5, "seed": 0, "image_id": 1}
        with pytest.raises(CrossmodalError, match=match):
            sample_crop_boxes(**{**args, **kwargs})


def draw_shape(path, kind, color, size):
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    w, h = size
    box = (w * 0.2, h * 0.2, w * 0.8, h * 0.8)
    if kind == "circle":
        draw.ellipse(box, fill=color)
    elif kind == "square":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([(w / 2, h * 0.15), (w * 0.85, h * 0.85), (w * 0.15, h * 0.85)], fill=color)
    img.save(path)


def write_images(tmp_path, n_per_class=2, extra_rows=()):
    shapes = [("circle", "red"), ("square", "green"), ("triangle", "blue")]
    rows, labels = [], []
    for label, (kind, color) in enumerate(shapes):
        for k in range(n_per_class):
            image_id = 10 * label + k
            path = tmp_path / f"{kind}{k}.png"
            draw_shape(path, (kind), color, (96 + 16 * k, 64 + 8 * label))
            rows.append((image_id, str(path)))
            labels.append((image_id, label))
    rows += list(extra_rows)
    table = tmp_path / "images.parquet"
    pq.write_table(
        pa.table(
            {
                "image_id": [r[0] for r in rows],
                "path": [r[1] for r in rows],
                "width": [0] * len(rows),
                "height": [0] * len(rows),
            },
            schema=IMAGES_SCHEMA,
        ),
        table,
    )
    return table, rows, labels


def test_cached_views_equal_encoding_each_crop_directly(tiny, tmp_path):
    table, rows, _ = write_images(tmp_path)
    out, meta_path = tmp_path / "crops.npy", tmp_path / "crops.json"
    settings = {"n_crops": 4, "alpha": 0.3, "seed": 9, "dtype": "float32", "batch_size": 4}
    meta = extract_crop_features(
        tiny, table, out, meta_path, workers=0, max_skip_fraction=0.0, max_pixels=10**7, **settings
    )
    views, info = read_crop_features(out, meta_path)
    assert info == meta == json.loads(meta_path.read_text())
    assert views.shape == (6, 5, tiny.dim) and views.dtype == np.float32
    assert info["image_ids"] == [r[0] for r in rows]
    assert info["encoder"]["backend"] == "tiny" and info["alpha"] == 0.3
    np.testing.assert_allclose(np.linalg.norm(views, axis=-1), 1.0, atol=1e-5)
    for row, (image_id, path) in enumerate(rows[:2]):
        image = Image.open(path).convert("RGB")
        boxes = sample_crop_boxes(image.width, image.height, 4, 0.3, 9, image_id)
        crops = [image] + [image.crop(tuple(int(v) for v in b)) for b in boxes]
        direct = tiny.encode_pixels(torch.stack([tiny.preprocess(c) for c in crops]))
        np.testing.assert_allclose(views[row], direct, atol=1e-5)


def test_worker_count_does_not_change_the_cache_and_skips_are_listed(tiny, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    table, rows, _ = write_images(tmp_path, extra_rows=[(99, str(bad))])
    common = {
        "n_crops": 3,
        "alpha": 0.1,
        "seed": 1,
        "dtype": "float16",
        "max_skip_fraction": 0.2,
        "max_pixels": 10**7,
    }
    a = extract_crop_features(
        tiny, table, tmp_path / "a.npy", tmp_path / "a.json", batch_size=2, workers=0, **common
    )
    b = extract_crop_features(
        tiny, table, tmp_path / "b.npy", tmp_path / "b.json", batch_size=3, workers=2, **common
    )
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert a["image_ids"] == b["image_ids"] == [r[0] for r in rows[:-1]]
    assert a["skipped_count"] == 1 and a["skipped"][0]["image_id"] == 99
    assert "not an image" in a["skipped"][0]["reason"]
    assert np.load(tmp_path / "a.npy").shape == (6, 4, tiny.dim)
    assert np.load(tmp_path / "a.npy").dtype == np.float16

    with pytest.raises(TooManyCropSkipsError, match="broken.png"):
        extract_crop_features(
            tiny,
            table,
            tmp_path / "c.npy",
            tmp_path / "c.json",
            batch_size=2,
            workers=0,
            **{**common, "max_skip_fraction": 0.0},
        )
    assert not (tmp_path / "c.npy").exists() and not (tmp_path / "c.json").exists()
