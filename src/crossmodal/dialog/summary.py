"""results/dialog/{dataset}/summary.json and its plot: one row per method (zero_shot, finetuned).

Each row carries the method, the encoder and LLM config names, the config hash and the metrics
``r1``, ``r5``, ``r10`` and ``hit30`` (fractions), with the denominator (dialogues evaluated,
excluded for a dead photo, candidates) so that a number is never read without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossmodal.errors import CrossmodalError
from crossmodal.io import atomic_path, read_json, write_json

KEYS = ("r1", "r5", "r10", "hit30")
COUNTS = ("n_evaluated", "n_excluded", "n_total", "n_candidates")


def dialog_summary(job: Any) -> list[dict[str, Any]]:
    if len(job.methods) != len(job.metrics):
        raise CrossmodalError(f"{len(job.methods)} methods but {len(job.metrics)} metrics files")
    rows = []
    for method, path in zip(job.methods, job.metrics, strict=True):
        values = read_json(path)
        missing = [k for k in (*KEYS, *COUNTS) if k not in values]
        if missing:
            raise CrossmodalError(f"{path}: no {missing} (not a dialog-eval output?)")
        rows.append(
            {
                "method": method,
                "encoder": job.encoder,
                "llm": job.llm,
                "config_hash": job.config_hash,
            }
            | {k: values[k] for k in (*KEYS, *COUNTS)}
        )
    write_json(job.summary, {"title": job.title, "rows": rows})
    _plot(rows, job.plot, job.title)
    return rows


def run_dialog_summary(job: Any) -> list[dict[str, Any]]:
    """The ``dialog-summary`` stage (a :class:`crossmodal.stages.DialogSummary` job)."""
    return dialog_summary(job)


def _plot(rows: list[dict[str, Any]], out_png: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    x = np.arange(len(KEYS))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        bars = ax.bar(x + i * width, [row[k] for k in KEYS], width, label=row["method"])
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x + width * (len(rows) - 1) / 2, ["R@1", "R@5", "R@10", "hit@30"])
    ax.set_ylim(0, 1.1)
    n = rows[0] if rows else {}
    ax.set_ylabel(
        f"share of {n.get('n_evaluated', 0)} dialogues ({n.get('n_excluded', 0)} excluded)"
    )
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
