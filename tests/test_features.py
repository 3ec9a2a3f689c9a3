"""Feature extraction: schema, provenance, determinism, bad-image accounting, encoders."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from crossmodal.data.prepare import IMAGES_SCHEMA
from crossmodal.encoders import build_encoder
from crossmodal.features import (
    TooManySkipsError,
    _rebatched,
    extract_image_features,
    extract_text_features,
    read_embeddings,
)
from crossmodal.images import load_image
from crossmodal.io import read_provenance

TINY = {"backend": "tiny", "seed": 0}


@pytest.fixture(scope="module")
def tiny():
    return build_encoder(TINY, device="cpu")


def write_images_table(path, rows):
    pq.write_table(
        pa.table(
            {
                "image_id": [r[0] for r in rows],
                "path": [str(r[1]) for r in rows],
                "width": [0] * len(rows),
                "height": [0] * len(rows),
            },
            schema=IMAGES_SCHEMA,
        ),
        path,
    )


@pytest.fixture
def good_images(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(7):
        arr = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)  # COCO-sized
        p = tmp_path / f"img{i}.jpg"
        Image.fromarray(arr).save(p, quality=85)
        rows.append((100 + i, p))
    table = tmp_path / "images.parquet"
    write_images_table(table, rows)
    return table, rows


def test_schema_provenance_and_normalisation(tiny, good_images, tmp_path):
    table, rows = good_images
    out = tmp_path / "f.parquet"
    report = extract_image_features(tiny, table, out, batch_size=3, workers=0, dtype="float16")
    schema = pq.read_schema(out)
    assert schema.field("image_id").type == pa.int64()
    assert schema.field("embedding").type == pa.list_(pa.float16(), 64)
    prov = read_provenance(out)
    assert prov["encoder"] == TINY and prov["dtype"] == "float16" and prov["jpeg_draft"] is True
    assert "Resize" in prov["preprocess"] and prov["package_version"]
    ids, emb = read_embeddings(out)
    assert ids.tolist() == [r[0] for r in rows]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=2e-3)
    assert report.encoded == 7 and report.skipped == []


def test_matches_direct_encoding_and_row_groups_stream(tiny, good_images, tmp_path):
    table, rows = good_images
    out = tmp_path / "f.parquet"
    extract_image_features(tiny, table, out, batch_size=2, workers=2, draft=False, rows_per_group=2)
    _, emb = read_embeddings(out)
    direct = tiny.encode_images([str(r[1]) for r in rows])
    np.testing.assert_allclose(emb, direct, atol=1e-5)
    assert pq.ParquetFile(out).num_row_groups == 4  # 7 rows written as they came, 2 per group


def test_worker_pixels_normalise_bit_identically_to_the_reference_transform(tiny, good_images):
    """The split pipeline (PIL part in workers, byte lookup in the main process) must give
    exactly the tensor of the encoder's own preprocess, so features do not depend on it."""
    _, rows = good_images
    images = [Image.open(r[1]).convert("RGB") for r in rows]
    reference = torch.stack([tiny.preprocess(im) for im in images])
    chw = [np.asarray(tiny.pil_transform(im)).transpose(2, 0, 1) for im in images]
    split = tiny.normalise_uint8(torch.from_numpy(np.ascontiguousarray(np.stack(chw))))
    assert split.dtype == torch.float32 and split.shape == reference.shape
    assert torch.equal(split, reference)
    # the GPU path sends the bytes and normalises on the device; same arithmetic, same bits
    uint8 = torch.from_numpy(np.ascontiguousarray(np.stack(chw)))
    assert torch.equal(tiny._normalise_on_device(uint8), reference)
    # every byte value of every channel, not just the ones these images happen to hold
    every = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    as_pil = Image.fromarray(every[0].permute(1, 2, 0).numpy())
    expect = tiny.preprocess.transforms[-1](tiny.preprocess.transforms[-2](as_pil))
    assert torch.equal(tiny.normalise_uint8(every.contiguous())[0], expect)


def test_worker_chunks_are_regrouped_into_full_encoder_batches():
    """Chunks of 3 with skips in between become batches of exactly 4, in input order, and
    every chunk's errors are reported even when a chunk has nothing decodable."""
    chunks = [
        ([0, 1, 2], torch.full((3, 1), 1), ["RGB"] * 3, []),
        ([4], torch.full((1, 1), 2), ["L"], [(3, "corrupt"), (5, "empty")]),
        ([], None, [], [(6, "missing")]),
        ([7, 8, 9], torch.full((3, 1), 3), ["RGB"] * 3, []),
        ([10], torch.full((1, 1), 4), ["RGB"], []),
    ]
    seen = []
    batches = [  # each yielded tensor is a view of one reused buffer: copy to keep it
        (idx, px.clone())
        for idx, px in _rebatched(iter(chunks), 4, lambda n, m, e: seen.append((n, e)))
    ]
    assert [b[0] for b in batches] == [[0, 1, 2, 4], [7, 8, 9, 10]]
    assert batches[0][1].flatten().tolist() == [1, 1, 1, 2]
    assert batches[1][1].flatten().tolist() == [3, 3, 3, 4]
    assert [n for n, _ in seen] == [3, 3, 1, 3, 1]  # every path accounted for, 11 in all
    assert [e for _, errs in seen for e in errs] == [(3, "corrupt"), (5, "empty"), (6, "missing")]
    short = list(_rebatched(iter(chunks[:2]), 8, lambda *_: None))
    assert [b[0] for b in short] == [[0, 1, 2, 4]]  # the last batch may be short


def test_two_runs_give_identical_bytes(tiny, good_images, tmp_path):
    table, _ = good_images
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    extract_image_features(tiny, table, a, batch_size=4, workers=2)
    extract_image_features(build_encoder(TINY, device="cpu"), table, b, batch_size=4, workers=2)
    assert a.read_bytes() == b.read_bytes()


def test_draft_decoding_is_close_to_full_decoding(tiny, good_images, tmp_path):
    table, _ = good_images
    extract_image_features(tiny, table, tmp_path / "d.parquet", workers=0, draft=True)
    extract_image_features(tiny, table, tmp_path / "f.parquet", workers=0, draft=False)
    _, d = read_embeddings(tmp_path / "d.parquet")
    _, f = read_embeddings(tmp_path / "f.parquet")
    cos = (d * f).sum(axis=1)
    assert (cos > 0.9).all() and not np.array_equal(d, f)  # draft really changed the pixels


@pytest.fixture
def bad_images(tmp_path):
    rng = np.random.default_rng(1)
    ok = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    ok.save(tmp_path / "ok.jpg")
    jpeg = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 50)
    (tmp_path / "empty.jpg").write_bytes(b"")
    ok.convert("CMYK").save(tmp_path / "cmyk.jpg")
    ok.convert("L").save(tmp_path / "gray.jpg")
    Image.new("RGBA", (40, 30), (255, 0, 0, 128)).save(tmp_path / "alpha.png")
    names = [
        "ok.jpg",
        "truncated.jpg",
        "corrupt.jpg",
        "empty.jpg",
        "cmyk.jpg",
        "gray.jpg",
        "alpha.png",
        "missing.jpg",
    ]
    table = tmp_path / "images.parquet"
    write_images_table(table, [(i, tmp_path / n) for i, n in enumerate(names)])
    return table


def test_bad_images_are_counted_not_dropped(tiny, bad_images, tmp_path):
    out = tmp_path / "f.parquet"
    report = extract_image_features(
        tiny, bad_images, out, batch_size=3, workers=2, max_skip_fraction=0.5
    )
    ids, _ = read_embeddings(out)
    assert ids.tolist() == [0, 4, 5, 6]  # ok, CMYK, grayscale, RGBA converted like CLIP does
    saved = json.loads(out.with_suffix(".skips.json").read_text())
    reasons = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in saved["skipped"]}
    assert set(reasons) == {"truncated.jpg", "corrupt.jpg", "empty.jpg", "missing.jpg"}
    assert reasons["missing.jpg"] == "missing file" and reasons["empty.jpg"] == "empty file"
    assert saved["total"] == 8 and saved["encoded"] == 4 and saved["skipped_count"] == 4
    assert saved["converted_modes"] == {"CMYK": 1, "L": 1, "RGBA": 1}
    assert report.encoded + len(report.skipped) == report.total


def test_skip_ceiling_fails_naming_the_files(tiny, bad_images, tmp_path):
    out = tmp_path / "f.parquet"
    with pytest.raises(TooManySkipsError) as info:
        extract_image_features(tiny, bad_images, out, workers=0, max_skip_fraction=0.1)
    msg = str(info.value)
    assert "4 of 8 images" in msg and "truncated.jpg" in msg and "missing.jpg" in msg
    assert not out.exists()  # no output that Snakemake could take for finished
    assert out.with_suffix(".skips.json").exists()  # but the report is kept for the user


def test_text_features_keep_ids_and_order(tiny, tmp_path):
    texts = ["a red circle", "two blue squares", "", "a yellow triangle on the left"]
    pq.write_table(pa.table({"question_id": [9, 3, 7, 1], "question": texts}), tmp_path / "q.pq")
    out = tmp_path / "t.parquet"
    extract_text_features(
        tiny, tmp_path / "q.pq", out, id_column="question_id", text_column="question", chunk=3
    )
    ids, emb = read_embeddings(out, "question_id")
    assert ids.tolist() == [9, 3, 7, 1]
    np.testing.assert_allclose(emb, tiny.encode_texts(texts), atol=1e-6)


def test_open_clip_backend_loads_a_local_checkpoint(tiny, tmp_path):
    """The real open_clip path: model name + pretrained checkpoint file."""
    import open_clip

    model = open_clip.create_model("crossmodal-tiny")
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), ckpt)
    enc = build_encoder(
        {"backend": "open_clip", "model": "crossmodal-tiny", "pretrained": str(ckpt)}, device="cpu"
    )
    ref = model.eval()
    with torch.no_grad():
        tok = open_clip.get_tokenizer("crossmodal-tiny")(["a red circle"])
        expect = ref.encode_text(tok)
    expect = (expect / expect.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(enc.encode_texts(["a red circle"]), expect, atol=1e-5)


def _clip_tokenizer_files(folder):
    """vocab.json + merges.txt in CLIP's layout, derived from open_clip's shipped BPE file."""
    from open_clip.tokenizer import bytes_to_unicode

    bpe = resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe) as fh:
        merges = fh.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges))


def _tiny_hf_clip(tmp_path):
    """A random-weight transformers CLIP folder: model, tokenizer, image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "vocab_size": 49408,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
            "image_size": 64,
            "patch_size": 16,
        },
        projection_dim=24,
    )
    CLIPModel(config).save_pretrained(tmp_path)
    _clip_tokenizer_files(tmp_path)
    CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")).save_pretrained(
        tmp_path
    )
    CLIPImageProcessor(
        size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}
    ).save_pretrained(tmp_path)


def test_hf_backend_loads_a_local_folder(tmp_path):
    """The real transformers path: CLIPModel + tokenizer + image processor from a folder."""
    from transformers import CLIPImageProcessor

    _tiny_hf_clip(tmp_path)
    enc = build_encoder({"backend": "hf", "model": str(tmp_path)}, device="cpu")
    assert enc.dim == 24 and enc.image_size == 64
    img = tmp_path / "x.jpg"
    Image.new("RGB", (80, 60), (200, 30, 30)).save(img)
    a = enc.encode_images([str(img), str(img)])
    t = enc.encode_texts(["a red image", "a blue image"])
    assert a.shape == (2, 24) and t.shape == (2, 24)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(t[0], t[1])
    # Our preprocessing follows the folder's image processor: at most one byte level apart
    # (resampling rounding), on almost no pixels.
    yy, xx = np.mgrid[0:90, 0:120]
    photo = np.stack([(xx * 2 + yy) % 256, (yy * 3) % 256, (xx * 5) % 256], -1).astype(np.uint8)
    photo = Image.fromarray(photo)
    theirs = CLIPImageProcessor.from_pretrained(tmp_path)(images=photo, return_tensors="pt")
    diff = (enc.preprocess(photo) - theirs["pixel_values"][0]).abs()
    one_level = 1 / 255 / min(CLIPImageProcessor().image_std)
    assert diff.max().item() <= one_level + 1e-6 and diff.mean().item() < 1e-3


def write_big_png(path, width: int, height: int) -> None:
    """A valid all-black 1-bit PNG of any size, written row block by row block: a 20000x20000
    file is 49 kB on disk and never exists in memory (it would need 400 MB decoded)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data)
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    row = b"\x00" + bytes((width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 1000) for _ in range(height // 1000)]
    parts += [comp.compress(row * (height % 1000)), comp.flush()]
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)))
        fh.write(chunk(b"IDAT", b"".join(parts)))
        fh.write(chunk(b"IEND", b""))


@pytest.fixture
def huge_images(tmp_path):
    Image.new("RGB", (64, 48), (10, 200, 30)).save(tmp_path / "ok.png")
    write_big_png(tmp_path / "bomb.png", 20000, 20000)  # above PIL's own error threshold
    write_big_png(tmp_path / "scan.png", 12000, 12000)  # 144 MP: PIL would decode it in full
    table = tmp_path / "images.parquet"
    write_images_table(
        table, [(1, tmp_path / "ok.png"), (2, tmp_path / "bomb.png"), (3, tmp_path / "scan.png")]
    )
    return table


def test_oversized_images_are_counted_skips_decided_from_the_header(tiny, huge_images, tmp_path):
    out = tmp_path / "f.parquet"
    report = extract_image_features(tiny, huge_images, out, workers=2, max_skip_fraction=0.7)
    ids, _ = read_embeddings(out)
    assert ids.tolist() == [1]
    reasons = {s["image_id"]: s["reason"] for s in report.skipped}
    assert reasons == {
        2: "too large: 20000x20000 = 400.0 MP > max_pixels 40.0 MP (features.max_pixels)",
        3: "too large: 12000x12000 = 144.0 MP > max_pixels 40.0 MP (features.max_pixels)",
    }
    saved = json.loads(out.with_suffix(".skips.json").read_text())
    assert saved["skipped_count"] == 2 and saved["encoded"] == 1
    assert read_provenance(out)["max_pixels"] == 40_000_000


def test_oversized_images_count_against_the_skip_ceiling(tiny, huge_images, tmp_path):
    out = tmp_path / "f.parquet"
    with pytest.raises(TooManySkipsError, match=r"bomb.png: too large: 20000x20000"):
        extract_image_features(tiny, huge_images, out, workers=0, max_skip_fraction=0.0)
    assert not out.exists()


def test_max_pixels_is_the_one_limit(tmp_path):
    """A raised limit decodes what PIL's own check would refuse; no limit leaves PIL's check,
    whose error and warning are skips too, never exceptions."""
    scan = tmp_path / "scan.png"
    write_big_png(scan, 12000, 12000)
    small = load_image(scan, max_pixels=100)
    assert small.error is not None and "max_pixels 0.0 MP" in small.error
    write_big_png(scan, 3000, 3000)
    assert load_image(scan, max_pixels=10_000_000).image.size == (3000, 3000)
    bomb = tmp_path / "bomb.png"
    write_big_png(bomb, 20000, 20000)
    pil_error = load_image(bomb, max_pixels=None)
    assert pil_error.image is None and "decompression-bomb" in pil_error.error
    write_big_png(bomb, 12000, 12000)  # above PIL's warning threshold only
    pil_warning = load_image(bomb, max_pixels=None)
    assert pil_warning.image is None and "decompression-bomb" in pil_warning.error
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # PIL's global left as it was


def _pixels(path) -> np.ndarray:
    res = load_image(path)
    assert res.error is None, res.error
    rgb = np.asarray(res.image)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0]


def test_16_bit_images_scale_to_8_bits(tmp_path):
    values = np.array([[0, 257, 1000, 32896, 65280, 65535]], dtype=np.uint16)
    expected = [0, 1, 4, 128, 254, 255]  # v / 257, rounded
    Image.fromarray(values).save(tmp_path / "a.png")  # opens as I;16
    Image.fromarray(values.astype(">u2")).save(tmp_path / "b.tif")  # opens as I;16B
    assert load_image(tmp_path / "a.png").original_mode == "I;16"
    assert load_image(tmp_path / "b.tif").original_mode == "I;16B"
    assert _pixels(tmp_path / "a.png").tolist() == [expected]
    assert _pixels(tmp_path / "b.tif").tolist() == [expected]


def test_32_bit_and_float_images_scale_by_their_range(tmp_path):
    ints = np.array([[-(2**31), -1, 0, 2**30, 2**31 - 1]], dtype=np.int32)
    Image.fromarray(ints).save(tmp_path / "i.tif")  # signed 32-bit samples: mode I
    assert load_image(tmp_path / "i.tif").original_mode == "I"
    assert _pixels(tmp_path / "i.tif").tolist() == [[0, 127, 128, 191, 255]]
    floats = np.array([[0.0, 0.25, 0.5, 1.0, 3.0, -1.0, np.nan]], dtype=np.float32)
    Image.fromarray(floats).save(tmp_path / "f.tif")
    assert load_image(tmp_path / "f.tif").original_mode == "F"
    assert _pixels(tmp_path / "f.tif").tolist() == [[0, 64, 128, 255, 255, 0, 0]]


def test_16_bit_image_encodes_like_its_8_bit_original(tiny, tmp_path):
    """A grey photo widened to 16 bits (v * 257) gives the same features, counted as I;16."""
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    table = tmp_path / "images.parquet"
    write_images_table(table, [(1, tmp_path / "grey8.png"), (2, tmp_path / "grey16.png")])
    report = extract_image_features(tiny, table, tmp_path / "f.parquet", workers=0)
    _, emb = read_embeddings(tmp_path / "f.parquet")
    np.testing.assert_array_equal(emb[0], emb[1])
    assert report.converted_modes == {"I;16": 1, "L": 1}


def test_a_transformers_clip_fine_tunes_with_the_encoders_embeddings(tmp_path):
    """load_trainable_clip on an hf entry: the same embeddings as the encoder (fixed-length
    ids with the mask up to the first end-of-text token), and a training step reaches it."""
    from crossmodal.cusa.losses import REFERENCE_SETTINGS
    from crossmodal.cusa.model import CusaStudent
    from crossmodal.encoders.registry import load_trainable_clip

    _tiny_hf_clip(tmp_path)
    spec = {"backend": "hf", "model": str(tmp_path)}
    enc = build_encoder(spec, device="cpu")
    clip = load_trainable_clip(spec, device="cpu")
    texts = ["a red image", "a blue image of a much longer caption than the first"]
    with torch.no_grad():
        ours = clip.model.eval().encode_text(clip.tokenizer(texts))
    ours = (ours / ours.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(ours, enc.encode_texts(texts), atol=1e-5)
    img = tmp_path / "x.jpg"
    Image.new("RGB", (80, 60), (200, 30, 30)).save(img)
    pixels = torch.stack([clip.preprocess(Image.open(img))])
    with torch.no_grad():
        image = clip.model.encode_image(pixels)
    image = (image / image.norm(dim=-1, keepdim=True)).numpy()
    np.testing.assert_allclose(image, enc.encode_images([str(img)]), atol=1e-5)

    student = CusaStudent(clip, REFERENCE_SETTINGS)
    assert not clip.model.logit_scale.requires_grad  # unused by CUSA: frozen
    batch = (
        torch.cat([pixels, pixels.flip(-1)]),
        clip.tokenizer(texts),
        torch.randn(2, 8),
        torch.randn(2, 8),
        torch.tensor([0, 1]),
    )
    student.train()(*batch).total.backward()
    grad = clip.model.model.text_model.embeddings.token_embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0
