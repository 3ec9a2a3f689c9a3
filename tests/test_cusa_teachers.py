"""CUSA's teacher features: row alignment, outputs, storage types, sidecars, memory-mapped
reading, unreadable images, the text teacher's once-per-text encoding, the tiny sentence
transformer, and what float16 storage does to the loss."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from crossmodal.cli import main as cli_main
from crossmodal.cusa.losses import (
    REFERENCE_SETTINGS,
    CusaBatch,
    CusaLoss,
    HeadOutputs,
    teacher_similarity,
)
from crossmodal.cusa.teachers import (
    TeacherError,
    build_image_teacher,
    build_tiny_sentence_transformer,
    build_unicom_teacher,
    extract_image_teacher,
    extract_text_teacher,
    ids_sha256,
    load_sentence_transformer,
    npy_rows,
    open_teacher,
    teacher_file_bytes,
    teacher_npy_bytes,
    unique_train_images,
)

TINY = {"backend": "tiny", "seed": 0}
COLOURS = {"a": (220, 30, 30), "b": (30, 200, 40), "c": (20, 40, 230), "d": (240, 240, 20)}
# (image_id, caption text, split): image a has three captions, two of them the same text;
# text "a shape" is shared by images b and c; the val/test rows must not reach the teachers.
ROWS = [
    ("b", "a green square", "train"),
    ("a", "a red circle", "train"),
    ("b", "a shape", "train"),
    ("a", "a red circle", "train"),
    ("c", "a shape", "train"),
    ("a", "the red circle on white", "train"),
    ("d", "a yellow star", "val"),
    ("c", "a blue triangle", "train"),
    ("d", "a yellow star", "test"),
]
TRAIN_IMAGES = ["b", "a", "c"]  # first appearance among the train rows
TRAIN_TEXTS = [text for _, text, split in ROWS if split == "train"]


def write_pairs(root: Path, rows=ROWS, broken: set[str] = frozenset()) -> Path:
    """pairs.parquet as the prepare stage writes it, with one small image per id."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    for image_id, colour in COLOURS.items():
        path = root / "images" / f"{image_id}.jpg"
        if image_id in broken:
            path.write_bytes(b"\xff\xd8 not a jpeg")
        else:
            image = Image.new("RGB", (48, 40), colour)
            image.paste((255, 255, 255), (0, 0, 12 + 8 * len(image_id), 10))
            image.save(path)
    table = pa.table(
        {
            "image_id": [r[0] for r in rows],
            "path": [str(root / "images" / f"{r[0]}.jpg") for r in rows],
            "caption": [r[1].capitalize() + "." for r in rows],
            "text": [r[1] for r in rows],
            "split": [r[2] for r in rows],
        }
    )
    pq.write_table(table, root / "pairs.parquet")
    return root / "pairs.parquet"


@pytest.fixture(scope="module")
def tiny_st(tmp_path_factory) -> Path:
    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("st") / "tiny-st", seed=0)


@pytest.fixture(scope="module")
def tokens_encoder():
    return build_image_teacher(TINY, "tokens", "cpu")


def image_teacher(encoder, pairs: Path, tmp_path: Path, dtype: str = "float32", workers: int = 0):
    out, meta = tmp_path / f"image.{dtype}.npy", tmp_path / f"image.{dtype}.json"
    sidecar = extract_image_teacher(
        encoder, pairs, out, meta, batch_size=2, workers=workers, dtype=dtype
    )
    return out, meta, sidecar


# --- image teacher ------------------------------------------------------------------------------


def test_image_rows_are_the_unique_train_images_in_first_appearance_order(tmp_path, tokens_encoder):
    pairs = write_pairs(tmp_path)
    assert unique_train_images(pairs)[0] == TRAIN_IMAGES
    out, meta, sidecar = image_teacher(tokens_encoder, pairs, tmp_path, workers=2)
    array, read_meta = open_teacher(out, meta)
    assert read_meta == json.loads(meta.read_text()) and read_meta["ids"] == TRAIN_IMAGES
    assert array.shape == (3, tokens_encoder.dim)
    # each row is that image encoded on its own (through the full PIL transform, no workers)
    for row, image_id in enumerate(TRAIN_IMAGES):
        alone = tokens_encoder.encode_images([str(tmp_path / "images" / f"{image_id}.jpg")])
        np.testing.assert_allclose(array[row], alone[0], rtol=0, atol=1e-5)
    assert not np.allclose(array[0], array[1])  # different images, different rows


def test_tokens_are_flattened_patch_tokens_and_pooled_is_the_unit_embedding(
    tmp_path, tokens_encoder
):
    pairs = write_pairs(tmp_path)
    # the tiny ViT: 224 / 32 = 7x7 patches of width 64, class token left out
    assert tokens_encoder.token_shape == (49, 64) and tokens_encoder.dim == 49 * 64
    tokens, _, side_t = image_teacher(tokens_encoder, pairs, tmp_path / "t")
    pooled_encoder = build_image_teacher(TINY, "pooled", "cpu")
    pooled, _, side_p = image_teacher(pooled_encoder, pairs, tmp_path / "p")
    t, p = np.load(tokens), np.load(pooled)
    assert t.shape == (3, 3136) and side_t["token_shape"] == [49, 64]
    assert p.shape == (3, 64) and side_p["token_shape"] is None
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)
    assert np.linalg.norm(t, axis=1).min() > 2.0  # tokens are not normalised
    # the tokens are the visual tower's last-layer tokens after ln_post, as open_clip gives them
    from crossmodal.encoders.registry import load_trainable_clip

    model = load_trainable_clip(TINY).model.eval()
    model.visual.output_tokens = True
    image = tokens_encoder.preprocess(Image.open(tmp_path / "images" / "b.jpg"))
    with torch.inference_mode():
        expected = model.visual(image[None])[1].flatten(1).numpy()
    np.testing.assert_allclose(t[0], expected[0], atol=1e-5)


def test_float16_storage_halves_the_file_and_keeps_the_values(tmp_path, tokens_encoder):
    pairs = write_pairs(tmp_path)
    f32, _, _ = image_teacher(tokens_encoder, pairs, tmp_path, "float32")
    f16, meta16, side16 = image_teacher(tokens_encoder, pairs, tmp_path, "float16")
    a32, a16 = np.load(f32), np.load(f16)
    assert a16.dtype == np.float16 and side16["dtype"] == "float16"
    np.testing.assert_allclose(a16.astype(np.float32), a32, rtol=1e-3, atol=1e-3)
    for path, dtype in ((f32, "float32"), (f16, "float16")):
        assert teacher_file_bytes(path) == teacher_npy_bytes(3, 3136, dtype)
    assert (
        teacher_npy_bytes(3, 3136, "float16") - 128
        == (teacher_npy_bytes(3, 3136, "float32") - 128) // 2
    )


def test_sidecar_records_shape_ids_and_provenance(tmp_path, tokens_encoder):
    pairs = write_pairs(tmp_path)
    job_dir = tmp_path / "out"
    rc = cli_main(
        [
            "cusa-image-teacher",
            *("--pairs", str(pairs), "--features", str(job_dir / "image.tiny.npy")),
            *("--meta", str(job_dir / "image.tiny.json"), "--teacher", json.dumps(TINY)),
            *("--output", "tokens", "--batch-size", "2", "--workers", "0"),
            *("--dtype", "float16", "--precision", "auto", "--device", "cpu"),
            *("--max-pixels", "1000000"),
        ]
    )
    assert rc == 0
    meta = json.loads((job_dir / "image.tiny.json").read_text())
    assert {k: meta[k] for k in ("kind", "rows", "dim", "dtype", "output", "ids")} == {
        "kind": "image",
        "rows": 3,
        "dim": 3136,
        "dtype": "float16",
        "output": "tokens",
        "ids": TRAIN_IMAGES,
    }
    assert meta["ids_sha256"] == ids_sha256(TRAIN_IMAGES)
    prov = meta["provenance"]
    assert prov["stage"] == "cusa-image-teacher" and prov["teacher"] == TINY
    assert len(prov["code"]) == 16 and int(prov["code"], 16) >= 0
    assert prov["source"] == str(pairs) and prov["max_pixels"] == 1_000_000
    assert prov["torch_version"] == torch.__version__ and "Normalize" in prov["preprocess"]


def test_the_teacher_file_is_read_memory_mapped_and_checked(tmp_path, tokens_encoder):
    pairs = write_pairs(tmp_path)
    out, meta, _ = image_teacher(tokens_encoder, pairs, tmp_path)
    array, _ = open_teacher(
        out, meta, expect_rows=3, expect_ids_sha256=ids_sha256(unique_train_images(pairs)[0])
    )
    assert isinstance(array, np.memmap) and not array.flags.writeable
    with pytest.raises(TeacherError, match="rows, training expects 4"):
        open_teacher(out, meta, expect_rows=4)
    with pytest.raises(TeacherError, match="other ids or texts"):
        open_teacher(out, meta, expect_ids_sha256=ids_sha256(["a", "b", "c"]))
    sidecar = json.loads(meta.read_text())
    meta.write_text(json.dumps({**sidecar, "dtype": "float16"}))
    with pytest.raises(TeacherError, match="rerun the teacher stage"):
        open_teacher(out, meta)


def test_an_unreadable_training_image_is_an_error_naming_it_and_leaves_no_file(
    tmp_path, tokens_encoder
):
    pairs = write_pairs(tmp_path, broken={"c"})
    with pytest.raises(TeacherError, match=r"1 of 3 training images.*\n  c \(.*c\.jpg\)"):
        image_teacher(tokens_encoder, pairs, tmp_path)
    assert not list(tmp_path.glob("image.*"))
    # a broken image outside the train split does not matter
    pairs = write_pairs(tmp_path / "val", broken={"d"})
    _, _, sidecar = image_teacher(tokens_encoder, pairs, tmp_path / "val")
    assert sidecar["ids"] == TRAIN_IMAGES


def test_an_image_id_with_two_paths_and_a_table_without_train_rows_are_errors(tmp_path):
    pairs = write_pairs(tmp_path)
    table = pq.read_table(pairs).to_pydict()
    table["path"][3] = table["path"][3].replace("a.jpg", "d.jpg")
    pq.write_table(pa.table(table), pairs)
    with pytest.raises(TeacherError, match="train image 'a' has two paths"):
        unique_train_images(pairs)
    pairs = write_pairs(tmp_path, rows=[r for r in ROWS if r[2] != "train"])
    with pytest.raises(TeacherError, match=r"no 'train' rows \(splits present: \['test', 'val'\]"):
        unique_train_images(pairs)


class _Features(torch.nn.Module):
    """Stands in for Unicom's forward_features: patch embedding, LayerNorm, flattened."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 8, kernel_size=32, stride=32)
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.patch(x).flatten(2).transpose(1, 2))
        return tokens.reshape(x.shape[0], -1)


@pytest.mark.parametrize("kind", ["torch.export", "torchscript", "pickled"])
def test_unicom_teacher_runs_an_exported_model(tmp_path, kind):
    torch.manual_seed(0)
    module = _Features().eval()
    x = torch.zeros(2, 3, 224, 224)
    if kind == "torch.export":
        path = tmp_path / "unicom.pt2"
        batch = {"x": {0: torch.export.Dim("batch")}}
        torch.export.save(torch.export.export(module, (x,), dynamic_shapes=batch), path)
    elif kind == "torchscript":
        path = tmp_path / "unicom.pt"
        torch.jit.trace(module, x).save(str(path))
    else:  # the whole module pickled: its class must be importable where the stage runs
        path = tmp_path / "unicom.pt"
        torch.save(module, path)
    spec = {"backend": "unicom", "path": str(path), "image_size": 224}
    encoder = build_unicom_teacher(spec, "cpu")
    assert encoder.dim == 49 * 8 and encoder.token_shape == (49 * 8,)
    pairs = write_pairs(tmp_path)
    out, _, sidecar = image_teacher(encoder, pairs, tmp_path)  # batches of 2 and of 1
    image = encoder.preprocess(Image.open(tmp_path / "images" / "a.jpg"))
    with torch.inference_mode():
        expected = module(image[None]).numpy()
    np.testing.assert_allclose(np.load(out)[1], expected[0], atol=1e-5)
    assert len(sidecar["provenance"]["encoder"]["sha256"]) == 64


def test_unicom_teacher_without_its_file_or_with_a_state_dict_says_what_to_do(tmp_path):
    spec = {"backend": "unicom", "path": str(tmp_path / "missing.pt"), "image_size": 224}
    with pytest.raises(TeacherError, match=r"missing\.pt not found.*TorchScript.*open_clip"):
        build_image_teacher(spec, "tokens", "cpu")
    torch.save(_Features().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(TeacherError, match="holds a .*state dict"):
        build_image_teacher({**spec, "path": str(tmp_path / "weights.pt")}, "tokens", "cpu")
    with pytest.raises(TeacherError, match="gives 'tokens'"):
        build_image_teacher(spec, "pooled", "cpu")


# --- text teacher -------------------------------------------------------------------------------


class CountingModel:
    """A sentence transformer that records every text it is asked to encode."""

    def __init__(self, model) -> None:
        self.model, self.seen = model, []

    def get_embedding_dimension(self) -> int:
        return self.model.get_embedding_dimension()

    def encode(self, texts, **kwargs):
        assert kwargs["normalize_embeddings"] is False
        self.seen.extend(texts)
        return self.model.encode(texts, **kwargs)


@pytest.mark.parametrize("chunk", [2, 4096])
def test_text_rows_are_the_train_rows_and_each_text_is_encoded_once(tmp_path, tiny_st, chunk):
    pairs = write_pairs(tmp_path)
    model = CountingModel(
        load_sentence_transformer({"model": str(tiny_st), "revision": None}, "cpu")
    )
    out, meta = tmp_path / "text.npy", tmp_path / "text.json"
    sidecar = extract_text_teacher(
        model, pairs, out, meta, batch_size=2, dtype="float32", chunk=chunk
    )
    assert sorted(model.seen) == sorted(set(TRAIN_TEXTS))  # 5 distinct of 7 train rows
    array, read = open_teacher(out, meta, expect_ids_sha256=ids_sha256(TRAIN_TEXTS))
    assert array.shape == (7, 32) and read["unique_texts"] == 5 and sidecar["kind"] == "text"
    for row, text in enumerate(TRAIN_TEXTS):
        alone = model.model.encode([text], normalize_embeddings=False)
        np.testing.assert_allclose(array[row], alone[0], rtol=0, atol=1e-5)
    assert np.abs(np.linalg.norm(array, axis=1) - 1).max() > 1e-3  # not normalised


def test_text_teacher_stage_from_the_command_line_in_float16(tmp_path, tiny_st):
    pairs = write_pairs(tmp_path)
    out, meta = tmp_path / "text.tiny.npy", tmp_path / "text.tiny.json"
    teacher = {"model": str(tiny_st), "revision": None}
    argv = [
        "cusa-text-teacher",
        *("--pairs", str(pairs), "--features", str(out), "--meta", str(meta)),
        *("--teacher", json.dumps(teacher), "--batch-size", "4", "--dtype", "float16"),
        *("--precision", "auto", "--device", "cpu", "--model", str(tiny_st / "modules.json")),
    ]
    assert cli_main(argv) == 0
    array, read = open_teacher(out, meta, expect_rows=7)
    assert array.dtype == np.float16 and read["dtype"] == "float16"
    assert read["provenance"]["teacher"] == teacher
    assert read["provenance"]["normalize_embeddings"] is False


def test_tiny_sentence_transformer_is_seeded_and_loads_offline(tmp_path, tiny_st):
    again = build_tiny_sentence_transformer(tmp_path / "again", seed=0)
    other = build_tiny_sentence_transformer(tmp_path / "other", seed=1)
    script = (
        "import sys, numpy as np\n"
        "from sentence_transformers import SentenceTransformer\n"
        "texts = ['a red circle', 'Zebra crossing, 42!']\n"
        "out = [SentenceTransformer(f, device='cpu').encode(texts) for f in sys.argv[1:]]\n"
        "print(out[0].shape, np.array_equal(out[0], out[1]), np.allclose(out[0], out[2]))\n"
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # any request would fail
        "HF_HOME": str(tmp_path / "empty-hf-home"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script, str(tiny_st), str(again), str(other)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "(2, 32) True False"


def test_make_tiny_st_stage_writes_the_folder(tmp_path):
    modules = tmp_path / "models" / "tiny-st" / "modules.json"
    assert cli_main(["make-tiny-st", "--modules", str(modules), "--seed", "0"]) == 0
    assert [m["type"].rsplit(".", 1)[-1] for m in json.loads(modules.read_text())] == [
        "Transformer",
        "Pooling",
    ]
    assert json.loads((modules.parent / "config.json").read_text())["hidden_size"] == 32


# --- float16 and the loss -----------------------------------------------------------------------

# Largest difference of the CSA and USA terms computed from float16-stored teacher features
# against float32 ones (unit-norm random heads, batch 128, teacher widths of ViT-B/32 tokens and
# mpnet). Measured: teacher cosine similarities move by at most 4e-5; CSA / USA by 1.4e-9 /
# 1.5e-8 at the reference's teacher temperature 1.0, 6.6e-7 / 2.3e-6 at its lower bound 0.1.
FLOAT16_LOSS_TOLERANCE = 1e-5
FLOAT16_SIMILARITY_TOLERANCE = 1e-4


@pytest.mark.parametrize("softlabel_tau", [1.0, 0.1])
def test_float16_teacher_storage_changes_csa_and_usa_by_less_than_the_tolerance(
    tmp_path, softlabel_tau
):
    n, d_img, d_txt, d = 128, 49 * 768, 768, 64
    rng = np.random.default_rng(0)
    # Unicom-like tokens: LayerNorm output (mean 0, unit variance per token) with a shared
    # component, so images are correlated as real teacher features are; mpnet-like texts
    base = rng.standard_normal((1, d_img)).astype(np.float32)
    images = (0.7 * base + rng.standard_normal((n, d_img))).astype(np.float32)
    texts = (0.05 * rng.standard_normal((n, d_txt)) + 0.02).astype(np.float32)
    stored = {}
    for dtype in ("float32", "float16"):
        for name, values in (("image", images), ("text", texts)):
            path = tmp_path / f"{name}.{dtype}.npy"
            with npy_rows(path, *values.shape, dtype) as array:
                array[:] = values
            teacher = np.load(path, mmap_mode="r")
            stored[name, dtype] = torch.from_numpy(teacher.astype(np.float32))
    for name in ("image", "text"):
        moved = teacher_similarity(stored[name, "float16"]) - teacher_similarity(
            stored[name, "float32"]
        )
        assert 0 < moved.abs().max().item() < FLOAT16_SIMILARITY_TOLERANCE
    heads = HeadOutputs(
        *(torch.from_numpy(rng.standard_normal((n, d)).astype(np.float32)) for _ in range(4))
    )
    idx = torch.arange(n) // 2
    loss = CusaLoss(dataclasses.replace(REFERENCE_SETTINGS, softlabel_tau=softlabel_tau))
    terms = {
        dtype: loss(CusaBatch(heads, stored["image", dtype], stored["text", dtype], idx))
        for dtype in ("float32", "float16")
    }
    csa = abs(terms["float16"].csa.item() - terms["float32"].csa.item())
    usa = abs(terms["float16"].usa.item() - terms["float32"].usa.item())
    print(f"float16 vs float32 teacher: |dCSA| = {csa:.3g}, |dUSA| = {usa:.3g}")
    assert max(csa, usa) < FLOAT16_LOSS_TOLERANCE
    assert terms["float16"].contrastive.item() == terms["float32"].contrastive.item()


class HugeModel:
    """A text teacher whose features overflow float16."""

    def get_embedding_dimension(self) -> int:
        return 4

    def encode(self, texts, **kwargs):
        return np.full((len(texts), 4), 1e5, dtype=np.float32)


def test_features_that_overflow_float16_are_an_error_not_infinities(tmp_path):
    pairs = write_pairs(tmp_path)
    out, meta = tmp_path / "text.npy", tmp_path / "text.json"
    with (
        pytest.warns(RuntimeWarning, match="overflow"),
        pytest.raises(
            TeacherError, match=r"\['a green square'.*not finite as float16.*store them as float32"
        ),
    ):
        extract_text_teacher(HugeModel(), pairs, out, meta, batch_size=2, dtype="float16")
    assert not out.exists() and not meta.exists()
    extract_text_teacher(HugeModel(), pairs, out, meta, batch_size=2, dtype="float32")
    assert np.load(out).max() == 1e5
