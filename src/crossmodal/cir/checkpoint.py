"""Per-epoch training checkpoints, written atomically so a killed job never leaves half a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from crossmodal.io import atomic_path


def atomic_torch_save(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary sibling, renamed into place on success."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path | None, device: torch.device) -> dict[str, Any] | None:
    """The saved state, or ``None`` when there is no checkpoint yet (a fresh run)."""
    if path is None or not Path(path).is_file():
        return None
    return torch.load(path, map_location=device, weights_only=False)
