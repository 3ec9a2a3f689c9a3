"""results/itr/{dataset}/summary.json and its RSUM plot: one row per method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossmodal.cusa.itr_eval import KEYS
from crossmodal.io import write_json
from crossmodal.summary import method_rows, save_figure


def itr_summary(
    methods: list[str],
    metrics: list[str | Path],
    encoder: str,
    config_hash: str,
    out_json: str | Path,
    out_png: str | Path,
    title: str,
) -> list[dict[str, Any]]:
    """Rows ``{method, encoder, config_hash, i2t_r1 .. rsum}`` in the order of ``methods``."""
    common = {"encoder": encoder, "config_hash": config_hash}
    rows = method_rows(methods, metrics, KEYS, "itr-eval", common)
    write_json(out_json, {"title": title, "rows": rows})
    _plot(rows, out_png, title)
    return rows


def run_itr_summary(job: Any) -> list[dict[str, Any]]:
    """The ``itr-summary`` stage (a :class:`crossmodal.stages.ItrSummary` job)."""
    return itr_summary(
        job.methods, job.metrics, job.encoder, job.config_hash, job.summary, job.plot, job.title
    )


def _plot(rows: list[dict[str, Any]], out_png: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    names = [r["method"] for r in rows]
    values = [r["rsum"] for r in rows]
    bars = ax.bar(names, values, color="#4c72b0")
    ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_ylim(0, max(values, default=0.0) * 1.15 or 1.0)
    ax.set_ylabel("RSUM (R@1+5+10, both directions)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out_png)
