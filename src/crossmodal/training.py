"""Helpers every torchrun training stage shares: the process group, seeds, the batches of an
epoch, and atomic checkpoints (CUSA's training and the dialogue retrieval fine-tune use them).

``epoch_batches`` is ``DistributedSampler(shuffle=True, seed=seed)``'s order cut into full
batches, computed without a sampler, so the batches of an epoch are known before it starts and
a resumed epoch skips exactly the batches already trained.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from crossmodal.io import atomic_path


def epoch_batches(
    n: int, world: int, rank: int, seed: int, epoch: int, batch_size: int
) -> list[list[int]]:
    """This rank's batches of one epoch: ``DistributedSampler(shuffle=True, seed=seed)``
    order (padded to a multiple of the world size by repeating its start), then batches of
    ``batch_size`` with the last short one dropped (``drop_last=True``)."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    order = torch.randperm(n, generator=g).tolist()
    total = math.ceil(n / world) * world
    while len(order) < total:
        order += order[: total - len(order)]
    mine = order[rank:total:world]
    return [mine[i : i + batch_size] for i in range(0, len(mine) - batch_size + 1, batch_size)]


@dataclass(frozen=True)
class Processes:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_processes(device: str) -> Processes:
    """Join the torchrun process group (gloo on the CPU, NCCL on GPUs), or run alone."""
    if "WORLD_SIZE" not in os.environ:
        from crossmodal.encoders import resolve_device

        return Processes(0, 1, resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Processes(rank, world, torch.device(f"cuda:{local}" if use_cuda else "cpu"))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
