"""Per-epoch training checkpoints, written atomically so a killed job never leaves half a file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from crossmodal.io import atomic_path


def atomic_torch_save(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary sibling, renamed into place on success."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def run_checkpoint(path: str | Path | None, identity: dict[str, Any]) -> Path | None:
    """The checkpoint file of one run: ``path`` with a hash of everything that shapes the run
    (settings, the digests of its input files) in its name. A checkpoint left by a run with
    other settings or other data is then never resumed as if it were this run's."""
    if path is None:
        return None
    text = json.dumps(identity, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(path)
    return path.with_name(f"{path.stem}.{digest}{path.suffix}")


def file_sha256(path: str | Path) -> str:
    """Digest of a file's bytes (an input's identity in :func:`run_checkpoint`)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def drop_checkpoint(path: Path | None) -> None:
    """Remove a finished run's checkpoint: its outputs now hold everything it had (a tagger's
    optimizer state is three times the model)."""
    if path is not None:
        path.unlink(missing_ok=True)


def load_checkpoint(path: str | Path | None, device: torch.device) -> dict[str, Any] | None:
    """The saved state, or ``None`` when there is no checkpoint yet (a fresh run)."""
    if path is None or not Path(path).is_file():
        return None
    return torch.load(path, map_location=device, weights_only=False)


def rng_state() -> dict[str, Any]:
    """torch's CPU and (when present) CUDA random states: dropout masks after a resume."""
    state: dict[str, Any] = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`; the tensors go back to the CPU whatever ``map_location`` was."""
    torch.random.set_rng_state(state["cpu"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
