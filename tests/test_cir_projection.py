"""The projection fine-tune: what trains, the loss by hand, the split, learning, resuming."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from crossmodal.cir.compose import (
    REFERENCE_COMPOSE,
    compose_queries,
    edit_sums,
    retrieval_metrics,
    retrieve,
    unique_targets,
)
from crossmodal.cir.projection import (
    DEFAULT_PROJECTION_SETTINGS,
    EditPairs,
    freeze_all_but_projection,
    image_head,
    image_trunk,
    info_nce,
    load_projection,
    parse_fixed_edit,
    projection_parameters,
    raw_image_embeddings,
    raw_text_embeddings,
    save_projection,
    split_pairs,
    train_projection,
)
from crossmodal.encoders.registry import TrainableClip, load_trainable_clip
from crossmodal.errors import CrossmodalError

CPU = torch.device("cpu")
TINY = {"backend": "tiny", "seed": 0}
WORDS = ["cat", "dog", "car", "tree", "lamp", "chair"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> EditPairs:
    """32 queries over 24 random images; targets repeat, so batches must avoid duplicates."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(24):
        pixels = (rng.random((8, 8, 3)) * 255).astype("uint8")
        path = folder / f"{i}.png"
        Image.fromarray(pixels).resize((64, 64), Image.NEAREST).save(path)
        paths.append(str(path))
    n = 32
    return EditPairs(
        query_images=tuple(paths[i % 24] for i in range(n)),
        target_images=tuple(paths[(7 * i + 3) % 24] for i in range(n)),
        add=tuple((f"a photo of a {WORDS[i % 6]}.",) for i in range(n)),
        remove=tuple((f"a photo of a {WORDS[(i + 2) % 6]}.",) for i in range(n)),
    )


def _clip() -> TrainableClip:
    return load_trainable_clip(TINY)


def _top1(clip: TrainableClip, pairs: EditPairs) -> float:
    """Compose every query and rank the unique targets: the evaluation of the reference."""
    model = clip.model
    images = raw_image_embeddings(model, clip.preprocess, pairs.query_images, CPU)
    prompts = [p for ps in (*pairs.add, *pairs.remove) for p in ps]
    texts = raw_text_embeddings(model, clip.tokenizer, prompts, CPU)
    add, remove = edit_sums(pairs.add, pairs.remove, texts, images.shape[1])
    queries = compose_queries(images, add, remove, REFERENCE_COMPOSE).numpy()
    database = unique_targets(pairs.target_images)
    db_emb = raw_image_embeddings(model, clip.preprocess, database, CPU).numpy()
    ranked, _ = retrieve(queries, db_emb, range(len(database)), k=5)
    return retrieval_metrics(ranked, [database.index(t) for t in pairs.target_images])["top1"]


def _settings(**changes):
    base = dataclasses.replace(
        DEFAULT_PROJECTION_SETTINGS, batch_size=8, learning_rate=1e-2, workers=0
    )
    return dataclasses.replace(base, **changes)


def test_only_the_projection_trains_and_trunk_plus_head_is_the_tower() -> None:
    clip = _clip()
    assert list(projection_parameters(clip.model)) == ["visual.proj"]
    trainable = freeze_all_but_projection(clip.model)
    names = [n for n, p in clip.model.named_parameters() if p.requires_grad]
    assert names == ["visual.proj"] and trainable[0] is clip.model.visual.proj
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        split = image_head(clip.model, image_trunk(clip.model, pixels))
        assert torch.allclose(split, clip.model.encode_image(pixels), atol=1e-6)
    assert isinstance(clip.model.visual.proj, nn.Parameter)  # put back after the trunk pass


def test_a_timm_style_tower_trains_its_head() -> None:
    class Tower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = nn.Linear(4, 6)
            self.head = nn.Sequential(OrderedDict(drop=nn.Dropout(0.0), proj=nn.Linear(6, 3)))

    model = nn.Module()
    model.visual = Tower()
    freeze_all_but_projection(model)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "visual.head.proj.weight",
        "visual.head.proj.bias",
    ]
    model.visual = nn.Linear(2, 2)
    with pytest.raises(CrossmodalError, match="neither a 'proj'"):
        projection_parameters(model)


def test_info_nce_by_hand() -> None:
    q = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    # cosines: q0.t0 = 1/sqrt2, q0.t1 = 0, q1.t0 = 1/sqrt2, q1.t1 = 1
    c = np.array([[1 / np.sqrt(2), 0.0], [1 / np.sqrt(2), 1.0]]) / 0.5

    def ce(logits: np.ndarray) -> float:
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float(-np.mean(np.diag(logp)))

    expected = (ce(c) + ce(c.T)) / 2
    assert info_nce(q, t, 0.5).item() == pytest.approx(expected, rel=1e-6)


def test_fixed_format_parse_and_the_reference_split() -> None:
    assert parse_fixed_edit("add cat and remove dog") == ("cat", "dog")
    with pytest.raises(CrossmodalError, match="not of the form"):
        parse_fixed_edit("add a cat and remove the dog")
    frame = pd.DataFrame({"i": range(50)})
    shuffled = frame.sample(frac=1, random_state=42)["i"].tolist()
    train, val = split_pairs(50, 0.9, 42)
    assert train == shuffled[:45] and val == shuffled[45:]


def test_fine_tune_lowers_the_loss_and_raises_top1(pairs: EditPairs) -> None:
    clip = _clip()
    before = _top1(clip, pairs)
    history = train_projection(
        clip.model, clip.tokenizer, clip.preprocess, pairs, _settings(epochs=15, trunk="cached"),
        REFERENCE_COMPOSE, device=CPU,
    )  # fmt: skip
    assert history.epoch_losses[-1] < 0.7 * history.epoch_losses[0]
    assert len(history.step_losses) == 15 * 4  # 32 queries, batches of 8, targets distinct
    after = _top1(clip, pairs)
    assert after > before + 0.15


def test_live_and_cached_trunks_train_alike(pairs: EditPairs) -> None:
    """The tiny tower has no dropout, so features computed once equal features computed live."""
    losses = {}
    for trunk in ("live", "cached"):
        clip = _clip()
        history = train_projection(
            clip.model, clip.tokenizer, clip.preprocess, pairs, _settings(epochs=1, trunk=trunk),
            REFERENCE_COMPOSE, device=CPU,
        )  # fmt: skip
        losses[trunk] = history.step_losses
    assert losses["live"] == pytest.approx(losses["cached"], rel=1e-4)


def test_a_killed_fine_tune_resumes_to_the_same_weights(pairs: EditPairs, tmp_path: Path) -> None:
    settings = _settings(epochs=4, trunk="cached")
    whole = _clip()
    expected = train_projection(
        whole.model, whole.tokenizer, whole.preprocess, pairs, settings, REFERENCE_COMPOSE,
        device=CPU,
    )  # fmt: skip

    class Killed(Exception):
        pass

    def kill(epoch: int, model: nn.Module) -> dict[str, float]:
        if epoch == 1:
            raise Killed
        return {}

    ckpt = tmp_path / "ckpt.pt"
    first = _clip()
    with pytest.raises(Killed):
        train_projection(
            first.model, first.tokenizer, first.preprocess, pairs, settings, REFERENCE_COMPOSE,
            device=CPU, checkpoint=ckpt, on_epoch=kill,
        )  # fmt: skip
    again = _clip()
    resumed = train_projection(
        again.model, again.tokenizer, again.preprocess, pairs, settings, REFERENCE_COMPOSE,
        device=CPU, checkpoint=ckpt,
    )  # fmt: skip
    assert resumed.epoch_losses == pytest.approx(expected.epoch_losses, rel=1e-5)
    assert torch.allclose(again.model.visual.proj, whole.model.visual.proj, atol=1e-6)

    save_projection(again.model, tmp_path / "proj.pt", {"encoder": TINY})
    fresh = _clip()
    assert load_projection(fresh.model, tmp_path / "proj.pt") == {"encoder": TINY}
    assert torch.equal(fresh.model.visual.proj, again.model.visual.proj)
    fresh.model.visual.proj = nn.Parameter(torch.zeros(3, 3))
    with pytest.raises(CrossmodalError, match="does not fit"):
        load_projection(fresh.model, tmp_path / "proj.pt")
