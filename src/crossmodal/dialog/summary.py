"""results/dialog/{dataset}/summary.json and its plot: one row per method (zero_shot, finetuned).

Each row carries the method, the encoder and LLM config names, the config hash and the metrics
``r1``, ``r5``, ``r10`` and ``hit30`` (fractions), with the denominator (dialogues evaluated,
excluded for a dead photo, candidates) so that a number is never read without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossmodal.io import write_json
from crossmodal.summary import method_rows, save_figure

KEYS = ("r1", "r5", "r10", "hit30")
COUNTS = ("n_evaluated", "n_excluded", "n_total", "n_candidates")


def dialog_summary(job: Any) -> list[dict[str, Any]]:
    common = {"encoder": job.encoder, "llm": job.llm, "config_hash": job.config_hash}
    rows = method_rows(job.methods, job.metrics, (*KEYS, *COUNTS), "dialog-eval", common)
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
    save_figure(fig, out_png)
