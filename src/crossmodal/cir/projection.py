"""The retrieval fine-tune: only the image tower's projection learns, with symmetric InfoNCE.

What the reference does (``RM`` = src/retrieval_model/model.py, ``RT`` =
src/retrieval_model/train.py, ``RL`` = src/retrieval_model/loss.py, ``RD`` =
src/retrieval_model/dataset.py, ``MF`` = src/model_factory.py, ``CR`` =
config/retrieval_cfg.yaml):

* Model: open_clip ``ViTamin-L-384`` with ``datacomp1b`` weights (CR:2-3), every parameter
  frozen (RM:13), then the image tower's head made trainable (RT:60, ``visual.head``: the
  timm tower's linear projection). For open_clip's own vision transformer (the tiny test model,
  ViT-B/L) the same layer is the ``visual.proj`` matrix; :func:`projection_parameters` finds
  either.
* The training pair (RT:14-35): the query side is the raw ``encode_image`` of the reference
  image, through the trainable head, plus the raw ``encode_text`` of ``"a photo of a {add}."``
  minus that of ``"a photo of a {remove}."``, both computed under ``no_grad`` (the text tower
  is frozen). The reference reads the two objects from the fixed text format ``"add X and
  remove Y"`` (RT:25-28, an assertion), not from the tagger. The other side is the raw
  ``encode_image`` of the target image through the same head. Neither side is normalised
  before the loss, which normalises both (RL:22-23).
* Loss (RL:4-36): cosine similarities / 0.07 (CR:11), cross-entropy against the diagonal in
  both directions, averaged.
* Optimiser (MF:34-44, CR:6-13): AdamW, learning rate 1e-4, weight decay 0.01, over
  ``model.parameters()`` (only the head has gradients, so only it moves and decays);
  ``CosineAnnealingWarmRestarts(T_0=5, T_mult=2)`` stepped once per epoch, after it (RT:73),
  so over the 5 epochs (CR:8) the rate follows one cosine from 1e-4 and never restarts;
  gradient norm clipped at 1.0 (RT:41); batch 256 (CR:6) from the one-query-per-target
  sampler (RD:155-159). Images go through the model's own evaluation transform, for training
  too (MF:48, so no augmentation: RD's ``default_train_transform`` is never used).
* Split (RD:41-50, CR:14): the annotations shuffled with ``random_state=42``, the first 90% to
  train, the rest to validation. The caller makes that split
  (:func:`crossmodal.cir.projection.split_pairs`).
* Model selection (RT:58-77): the reference evaluates after every epoch on its validation split
  *and on the sample test set*, and keeps the epoch with the best sum. Choosing by the test
  score leaks the test set, so here the last epoch is kept and every epoch's loss is reported;
  the caller may score each epoch through ``on_epoch``.

Departures (settings where they change results):

1. ``trunk: cached`` computes the frozen tower's pre-projection features once, in eval mode,
   and trains the head on them: the same gradients as ``live`` for a tower without dropout or
   stochastic depth, at a fraction of the cost. ViTamin-L runs with drop-path 0.1 in the
   reference's train mode, so ``live`` (the default, the reference) differs there.
2. The composition weights of the training query are the config's (the reference hard-codes
   1 and 1, equal to the defaults).
3. Training is seeded (sampler, and ``torch.manual_seed``), checkpointed every epoch and
   resumable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from crossmodal.cir.checkpoint import (
    atomic_torch_save,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from crossmodal.cir.compose import (
    SAMPLER_MODES,
    ComposeSettings,
    OneQueryPerTargetSampler,
    compose_queries,
)
from crossmodal.errors import CrossmodalError

log = logging.getLogger(__name__)

TRUNK_MODES = ("live", "cached")


# --- the projection -------------------------------------------------------------------------------


def projection_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The image tower's projection, by name: ``visual.proj`` (open_clip's vision transformer) or
    the parameters of ``visual.head`` (a timm tower such as ViTamin, RT:60)."""
    visual = getattr(model, "visual", None)
    if visual is None:
        raise CrossmodalError(f"{type(model).__name__} has no image tower (.visual)")
    proj = getattr(visual, "proj", None)
    if isinstance(proj, nn.Parameter):
        return {"visual.proj": proj}
    head = getattr(visual, "head", None)
    if isinstance(head, nn.Module):
        params = {f"visual.head.{n}": p for n, p in head.named_parameters()}
        if params:
            return params
    raise CrossmodalError(
        f"image tower {type(visual).__name__} has neither a 'proj' matrix nor a 'head' with "
        "parameters; use an open_clip ViT or timm-tower model (e.g. ViTamin-L-384)"
    )


def freeze_all_but_projection(model: nn.Module) -> list[nn.Parameter]:
    """Freeze every parameter (RM:13), then unfreeze the projection (RT:60); returns it."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = list(projection_parameters(model).values())
    for p in params:
        p.requires_grad_(True)
    return params


@contextlib.contextmanager
def _without_proj(visual: nn.Module) -> Iterator[None]:
    proj = visual.proj
    visual.proj = None
    try:
        yield
    finally:
        visual.proj = proj


def image_trunk(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The image tower's output before the projection."""
    visual = model.visual
    if isinstance(getattr(visual, "proj", None), nn.Parameter):
        with _without_proj(visual):
            return visual(pixels)
    return visual.trunk(pixels)


def image_head(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The projection applied to :func:`image_trunk`'s output."""
    visual = model.visual
    if isinstance(getattr(visual, "proj", None), nn.Parameter):
        return features @ visual.proj
    return visual.head(features)


def save_projection(model: nn.Module, path: str | Path, meta: dict[str, Any]) -> None:
    """The projection's weights (and ``meta``: the encoder entry, settings) in one file."""
    params = {n: p.detach().cpu().clone() for n, p in projection_parameters(model).items()}
    atomic_torch_save({"projection": params, "meta": meta}, path)


def load_projection(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Copy saved projection weights into ``model``; returns the saved ``meta``."""
    path = Path(path)
    if not path.is_file():
        raise CrossmodalError(f"{path}: no projection file; run `crossmodal cir-train-projection`")
    state = torch.load(path, map_location="cpu", weights_only=False)
    own = projection_parameters(model)
    saved = state.get("projection", {})
    if set(saved) != set(own) or any(saved[n].shape != own[n].shape for n in own):
        raise CrossmodalError(
            f"{path}: projection {sorted((n, tuple(t.shape)) for n, t in saved.items())} does "
            f"not fit this model's {sorted((n, tuple(p.shape)) for n, p in own.items())}; "
            "use the encoder entry it was trained from"
        )
    with torch.no_grad():
        for n, p in own.items():
            p.copy_(saved[n].to(p.device, p.dtype))
    return dict(state.get("meta", {}))


# --- the loss -------------------------------------------------------------------------------------


def info_nce(query: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE (RL:10-36): both sides L2-normalised, similarities / temperature,
    cross-entropy against the diagonal query->target and target->query, averaged."""
    q = nn.functional.normalize(query, dim=1)
    t = nn.functional.normalize(target, dim=1)
    logits = q @ t.T / temperature
    labels = torch.arange(len(q), device=q.device)
    return (
        nn.functional.cross_entropy(logits, labels) + nn.functional.cross_entropy(logits.T, labels)
    ) / 2


# --- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EditPairs:
    """Training (or evaluation) queries: reference image, add / remove prompts, target image."""

    query_images: tuple[str, ...]
    target_images: tuple[str, ...]
    add: tuple[tuple[str, ...], ...]  # prompts, "a photo of a {phrase}."
    remove: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        n = len(self.query_images)
        if not (len(self.target_images) == len(self.add) == len(self.remove) == n):
            raise ValueError("query images, target images, add and remove differ in length")

    def __len__(self) -> int:
        return len(self.query_images)

    def subset(self, idx: Sequence[int]) -> EditPairs:
        return EditPairs(
            tuple(self.query_images[i] for i in idx),
            tuple(self.target_images[i] for i in idx),
            tuple(self.add[i] for i in idx),
            tuple(self.remove[i] for i in idx),
        )


def parse_fixed_edit(text: str) -> tuple[str, str]:
    """(add object, remove object) of a text in the challenge's training format ``"add X and
    remove Y"`` with one-word objects, as the reference's training loop reads it (RT:25-28)."""
    words = text.split()
    if len(words) != 5 or words[0] != "add" or words[2] != "and" or words[3] != "remove":
        raise CrossmodalError(
            f"query text {text!r} is not of the form 'add X and remove Y'; parse the training "
            "texts with the tagger instead (cir.projection.edits: tagger)"
        )
    return words[1], words[4]


def split_pairs(n: int, train_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """The reference's split (RD:41-50): ``DataFrame.sample(frac=1, random_state=seed)``, then
    the first ``int(train_fraction * n)`` rows train and the rest validate. Same permutation as
    pandas (both draw ``RandomState(seed).permutation(n)``)."""
    order = np.random.RandomState(seed).permutation(n).tolist()
    cut = int(train_fraction * n)
    return order[:cut], order[cut:]


class _Images(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], preprocess: Callable) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            return self.preprocess(img.convert("RGB"))  # RD:30-31


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, pairs: EditPairs, preprocess: Callable) -> None:
        self.images = _Images([*pairs.query_images, *pairs.target_images], preprocess)
        self.n = len(pairs)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.images[i], self.images[self.n + i], i


# --- raw embeddings -------------------------------------------------------------------------------


@torch.no_grad()
def raw_text_embeddings(
    model: nn.Module, tokenizer: Callable, prompts: Sequence[str], device: torch.device
) -> dict[str, torch.Tensor]:
    """Each distinct prompt's unnormalised ``encode_text`` (RG:60, RT:30)."""
    unique = list(dict.fromkeys(prompts))
    was_training = model.training
    model.eval()
    out: dict[str, torch.Tensor] = {}
    for start in range(0, len(unique), 256):
        chunk = unique[start : start + 256]
        emb = model.encode_text(tokenizer(chunk).to(device)).float()
        out.update(zip(chunk, emb, strict=True))
    model.train(was_training)
    return out


@torch.no_grad()
def raw_image_embeddings(
    model: nn.Module,
    preprocess: Callable,
    paths: Sequence[str],
    device: torch.device,
    *,
    batch_size: int = 64,
    workers: int = 0,
    trunk_only: bool = False,
) -> torch.Tensor:
    """Unnormalised ``encode_image`` of each path in eval mode (RG:32-34), or only the trunk's
    pre-projection features."""
    was_training = model.training
    model.eval()
    loader = torch.utils.data.DataLoader(
        _Images(paths, preprocess), batch_size=batch_size, num_workers=workers
    )
    chunks = []
    for pixels in loader:
        pixels = pixels.to(device)
        out = image_trunk(model, pixels) if trunk_only else model.encode_image(pixels)
        chunks.append(out.float())
    model.train(was_training)
    if not chunks:
        raise CrossmodalError("no images to embed")
    return torch.cat(chunks)


def _embed_dim(
    model: nn.Module, tokenizer: Callable, texts: dict[str, torch.Tensor], device: torch.device
) -> int:
    if texts:
        return int(next(iter(texts.values())).shape[-1])
    probe = raw_text_embeddings(model, tokenizer, ["a photo."], device)
    return int(next(iter(probe.values())).shape[-1])


# --- training -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectionSettings:
    """The fine-tune. No defaults: the config schema holds them;
    :data:`REFERENCE_PROJECTION_SETTINGS` are the reference's,
    :data:`DEFAULT_PROJECTION_SETTINGS` the suggested defaults."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    temperature: float
    t_0: int
    t_mult: int
    grad_clip: float
    seed: int
    trunk: str  # "live" (the reference) or "cached"
    sampler: str  # "strict" or "reference" (see crossmodal.cir.compose)
    workers: int

    def __post_init__(self) -> None:
        if self.trunk not in TRUNK_MODES:
            raise CrossmodalError(f"trunk {self.trunk!r}: choose one of {list(TRUNK_MODES)}")
        if self.sampler not in SAMPLER_MODES:
            raise CrossmodalError(f"sampler {self.sampler!r}: choose one of {list(SAMPLER_MODES)}")


REFERENCE_PROJECTION_SETTINGS = ProjectionSettings(
    epochs=5,  # CR:8
    batch_size=256,  # CR:6
    learning_rate=1e-4,  # CR:9
    weight_decay=0.01,  # CR:10
    temperature=0.07,  # CR:11
    t_0=5,  # CR:12
    t_mult=2,  # CR:13
    grad_clip=1.0,  # RT:41
    seed=42,  # the split's random_state (RD:43); the reference's sampler is unseeded
    trunk="live",  # RT:10, RT:23, RT:32
    sampler="reference",  # RD:91-114
    workers=128,  # CR:7
)
# What the config defaults to: the reference, with a sampler that keeps its promise and as
# many decode workers as a usual node has cores.
DEFAULT_PROJECTION_SETTINGS = dataclasses.replace(
    REFERENCE_PROJECTION_SETTINGS, sampler="strict", workers=8
)


@dataclass
class ProjectionHistory:
    step_losses: list[float]
    epoch_losses: list[float]
    epoch_metrics: list[dict[str, float]]


def train_projection(
    model: nn.Module,
    tokenizer: Callable,
    preprocess: Callable,
    pairs: EditPairs,
    settings: ProjectionSettings,
    compose: ComposeSettings,
    *,
    device: torch.device,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[int, nn.Module], dict[str, float]] | None = None,
) -> ProjectionHistory:
    """Fine-tune the projection of ``model`` in place (RT:9-77); returns the losses.

    ``model``, ``tokenizer`` and ``preprocess`` come from the encoder registry
    (:func:`crossmodal.encoders.registry.load_trainable_clip`). With ``checkpoint``, the state
    is saved after every epoch and a rerun resumes after the last epoch saved.
    """
    if len(pairs) == 0:
        raise CrossmodalError("no training queries for the projection fine-tune")
    model.to(device)
    params = freeze_all_but_projection(model)
    texts = raw_text_embeddings(
        model, tokenizer, [p for ps in (*pairs.add, *pairs.remove) for p in ps], device
    )
    from crossmodal.cir.compose import edit_sums

    dim = _embed_dim(model, tokenizer, texts, device)
    add_sum, remove_sum = edit_sums(pairs.add, pairs.remove, texts, dim)
    add_sum, remove_sum = add_sum.to(device), remove_sum.to(device)
    train_compose = dataclasses.replace(compose, normalise=False)  # the loss normalises

    optimizer = torch.optim.AdamW(
        params, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=settings.t_0, T_mult=settings.t_mult
    )
    sampler = OneQueryPerTargetSampler(
        pairs.target_images, settings.batch_size, seed=settings.seed, mode=settings.sampler
    )
    history = ProjectionHistory([], [], [])
    start = 0
    state = load_checkpoint(checkpoint, device)
    if state is not None:
        with torch.no_grad():
            for n, p in projection_parameters(model).items():
                p.copy_(state["projection"][n])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["torch_rng"])
        history = ProjectionHistory(**state["history"])
        start = int(state["epoch"])
        log.info("projection: resuming after epoch %d from %s", start, checkpoint)
    else:
        torch.manual_seed(settings.seed)

    cached = None
    if settings.trunk == "cached":
        images = list(dict.fromkeys([*pairs.query_images, *pairs.target_images]))
        feats = raw_image_embeddings(
            model, preprocess, images, device, workers=settings.workers, trunk_only=True
        )
        where = {p: i for i, p in enumerate(images)}
        cached = (
            feats,
            torch.tensor([where[p] for p in pairs.query_images], device=device),
            torch.tensor([where[p] for p in pairs.target_images], device=device),
        )

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(query embeddings, target embeddings, query indices) through the trainable head."""
        if cached is not None:
            feats, q_of, t_of = cached
            for idx in sampler:
                i = torch.tensor(idx, device=device)
                yield image_head(model, feats[q_of[i]]), image_head(model, feats[t_of[i]]), i
            return
        loader = torch.utils.data.DataLoader(
            _Pairs(pairs, preprocess), batch_sampler=sampler, num_workers=settings.workers
        )
        for q_pix, t_pix, i in loader:
            q = model.encode_image(q_pix.to(device))
            t = model.encode_image(t_pix.to(device))
            yield q, t, i.to(device)

    for epoch in range(start, settings.epochs):
        sampler.set_epoch(epoch)
        model.train()  # RT:10: the frozen tower in train mode too (its drop-path is live)
        losses = []
        for q_img, t_img, idx in batches():
            query = compose_queries(q_img, add_sum[idx], remove_sum[idx], train_compose)
            loss = info_nce(query, t_img, settings.temperature)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, max_norm=settings.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
        scheduler.step()  # once per epoch, after it (RT:73)
        history.step_losses += losses
        history.epoch_losses.append(sum(losses) / len(losses))
        log.info(
            "projection epoch %d/%d: loss %.4f",
            epoch + 1,
            settings.epochs,
            history.epoch_losses[-1],
        )
        if on_epoch is not None:
            model.eval()
            history.epoch_metrics.append(dict(on_epoch(epoch, model)))
        if checkpoint is not None:
            atomic_torch_save(
                {
                    "projection": {
                        n: p.detach().cpu().clone() for n, p in projection_parameters(model).items()
                    },
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": rng_state(),
                    "history": dataclasses.asdict(history),
                    "epoch": epoch + 1,
                },
                checkpoint,
            )
    model.eval()
    return history
