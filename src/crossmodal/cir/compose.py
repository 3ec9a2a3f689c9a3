"""Query arithmetic, retrieval metrics and the one-query-per-target batch sampler.

What the reference does (``RG`` = src/retrieval_model/generate_embeds.py, ``RE`` =
src/retrieval_model/evaluate.py, ``RD`` = src/retrieval_model/dataset.py):

* Query (RG:32-65): the raw (unnormalised) ``encode_image`` output of the reference image;
  for every add phrase the raw ``encode_text`` of ``"a photo of a {phrase}."`` is added, for
  every remove phrase subtracted (weight 1, no normalisation of the text embeddings, RG:58-63);
  then one L2 normalisation (RG:64).
* Database (RG:69-90, RD:55-56): the unique target images of the query set, in order of first
  appearance, their image embeddings L2-normalised.
* Ranking and metric (RE:18-28): cosine similarity, argmax, top-1 accuracy = the fraction of
  queries whose best database image is their target.
* Batches (RD:64-121): ``UniqueTargetImageBatchSampler`` keeps one queue of query indices per
  target (shuffled once, at construction), shuffles the order of the queues, and takes one
  query from every non-empty queue per pass, round and round, cutting a batch whenever it is
  full, until every query is used once.

Here: :func:`compose_queries` with the two weights and the normalisation as settings (defaults
1, 1, on: the reference), :func:`retrieve` through the package's FAISS layer (exact
inner-product search on normalised vectors = cosine), :func:`retrieval_metrics` with top-1 and
R@5 (R@5 is added; the reference reports top-1 only), and :class:`OneQueryPerTargetSampler`.

Departures in the sampler:

1. Seeded, and reshuffled per epoch from ``(seed, epoch)`` (``set_epoch``); the reference uses
   Python's global ``random`` and shuffles the per-target order only once.
2. The promise holds. The reference's batches run across pass boundaries, so a batch that
   ends one pass and starts the next can hold two queries of one target (the case it exists to
   prevent). Here a new pass first offers the targets not already in the open batch, and a
   batch is cut early only when no other target is left. ``mode="reference"`` restores the
   reference's order, boundary duplicates included.
3. ``len()`` is the true number of batches of the current epoch; the reference's
   ``ceil(n / batch_size)`` is one short whenever a batch is cut early.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from crossmodal.errors import CrossmodalError

SAMPLER_MODES = ("strict", "reference")


# --- the query arithmetic -----------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeSettings:
    """How a query embedding is built. No defaults: the config schema holds them (the
    reference's are 1.0, 1.0 and True, RG:58-64)."""

    add_weight: float
    remove_weight: float
    normalise: bool


REFERENCE_COMPOSE = ComposeSettings(add_weight=1.0, remove_weight=1.0, normalise=True)


def l2_normalise(x: torch.Tensor) -> torch.Tensor:
    """Rows divided by their L2 norm (``torch.nn.functional.normalize``, eps 1e-12, RG:64)."""
    return torch.nn.functional.normalize(x, p=2, dim=-1)


def edit_sums(
    add: Sequence[Sequence[str]],
    remove: Sequence[Sequence[str]],
    text_embeddings: dict[str, torch.Tensor],
    dim: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query, the sum of the raw embeddings of its add prompts and of its remove prompts
    (zeros when it has none). ``text_embeddings`` maps each prompt to its raw embedding."""
    if len(add) != len(remove):
        raise ValueError(f"{len(add)} add lists but {len(remove)} remove lists")
    missing = sorted({p for ps in (*add, *remove) for p in ps} - set(text_embeddings))
    if missing:
        raise CrossmodalError(f"no text embedding for the prompts {missing[:5]}")
    ref = next(iter(text_embeddings.values()), torch.zeros(dim))
    add_sum = torch.zeros(len(add), dim, dtype=ref.dtype, device=ref.device)
    remove_sum = torch.zeros_like(add_sum)
    for i, (adds, removes) in enumerate(zip(add, remove, strict=True)):
        for p in adds:
            add_sum[i] += text_embeddings[p]
        for p in removes:
            remove_sum[i] += text_embeddings[p]
    return add_sum, remove_sum


def compose_queries(
    image: torch.Tensor,
    add_sum: torch.Tensor,
    remove_sum: torch.Tensor,
    settings: ComposeSettings,
) -> torch.Tensor:
    """``image + w_add * add_sum - w_remove * remove_sum``, then one L2 normalisation when
    ``settings.normalise`` (RG:58-64). Differentiable in ``image`` (the projection fine-tune
    trains through it)."""
    if image.shape != add_sum.shape or image.shape != remove_sum.shape:
        raise ValueError(
            f"shapes differ: image {tuple(image.shape)}, add {tuple(add_sum.shape)}, "
            f"remove {tuple(remove_sum.shape)}"
        )
    query = image + settings.add_weight * add_sum - settings.remove_weight * remove_sum
    return l2_normalise(query) if settings.normalise else query


# --- retrieval and metrics ----------------------------------------------------------------------


def unique_targets(targets: Sequence[Hashable]) -> list[Hashable]:
    """The database of a query set: its target images, each once, in order of first appearance
    (``pandas.unique``, RD:55-56)."""
    return list(dict.fromkeys(targets))


def retrieve(
    queries: np.ndarray, database: np.ndarray, database_ids: Sequence[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k database ids and cosine scores per query, through the package's exact FAISS index.

    Both sides are L2-normalised here (the reference's ``cosine_similarity`` normalises both,
    RE:25), so a query built with ``normalise: false`` ranks the same as with it.
    """
    from crossmodal.index import IndexParams, build_index, search

    q = l2_normalise(torch.as_tensor(np.asarray(queries, dtype=np.float32))).numpy()
    d = l2_normalise(torch.as_tensor(np.asarray(database, dtype=np.float32))).numpy()
    if len(d) != len(database_ids):
        raise ValueError(f"{len(d)} database vectors but {len(database_ids)} ids")
    index = build_index(d, np.asarray(database_ids, dtype=np.int64), IndexParams(kind="flat"))
    return search(index, q, min(k, len(d)))


def retrieval_metrics(
    ranked: np.ndarray, targets: Sequence[int], ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """``top1`` (= R@1, the reference's accuracy, RE:7-16) and ``r{k}``: the fraction of
    queries whose target is among their first k results."""
    ranked = np.asarray(ranked)
    targets_arr = np.asarray(targets).reshape(-1, 1)
    if len(ranked) != len(targets_arr):
        raise ValueError(f"{len(ranked)} rankings but {len(targets_arr)} targets")
    if len(ranked) == 0:
        raise CrossmodalError("no queries to score")
    out: dict[str, float] = {"n_queries": float(len(ranked))}
    for k in ks:
        if k > ranked.shape[1]:
            raise ValueError(f"R@{k} asked of rankings only {ranked.shape[1]} long")
        hit = (ranked[:, :k] == targets_arr).any(axis=1).mean()
        out["top1" if k == 1 else f"r{k}"] = float(hit)
    return out


# --- batches --------------------------------------------------------------------------------------


class OneQueryPerTargetSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of query indices in which no target appears twice; every query once per epoch.

    ``targets[i]`` is the target image of query ``i``. Use as a DataLoader ``batch_sampler``
    and call :meth:`set_epoch` before each epoch (as with ``DistributedSampler``).
    """

    def __init__(
        self,
        targets: Sequence[Hashable],
        batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        mode: str = "strict",
    ) -> None:
        if batch_size < 1:
            raise CrossmodalError(f"batch_size {batch_size}: give at least 1")
        if mode not in SAMPLER_MODES:
            raise CrossmodalError(f"sampler mode {mode!r}: choose one of {list(SAMPLER_MODES)}")
        self.batch_size, self.seed, self.shuffle, self.mode = batch_size, seed, shuffle, mode
        self.epoch = 0
        queues: dict[Hashable, list[int]] = {}
        for i, t in enumerate(targets):
            queues.setdefault(t, []).append(i)
        rng = np.random.default_rng(seed)
        # RD:86-89: each target's queries shuffled once; queries are popped from the end.
        self._queues = [
            [q[j] for j in rng.permutation(len(q))] if shuffle else list(q) for q in queues.values()
        ]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        queues = [list(q) for q in self._queues]
        live = list(range(len(queues)))  # queue ids, each queue's target is its own
        batch: list[int] = []
        in_batch: set[int] = set()
        while live:
            order = [live[i] for i in rng.permutation(len(live))] if self.shuffle else list(live)
            if self.mode == "strict":  # targets not in the open batch first
                order = [q for q in order if q not in in_batch] + [
                    q for q in order if q in in_batch
                ]
            for q in order:
                if self.mode == "strict" and q in in_batch:
                    yield batch
                    batch, in_batch = [], set()
                batch.append(queues[q].pop())
                in_batch.add(q)
                if len(batch) == self.batch_size:
                    yield batch
                    batch, in_batch = [], set()
            live = [q for q in live if queues[q]]
        if batch:
            yield batch

    def __iter__(self) -> Iterator[list[int]]:
        return self._batches()

    def __len__(self) -> int:
        return sum(1 for _ in self._batches())
