"""results/cir/{dataset}/summary.json and its plot: one row per method (untrained, finetuned).

Each row holds the evaluation split's ``top1`` and ``r5`` (cir-eval, in [0, 1]), the tagger's
held-out token F1 that parsed the queries (``tagger_f1``; null when the queries were parsed
from the fixed training format), the encoder's config name and the hash of the settings.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from crossmodal.errors import CrossmodalError
from crossmodal.io import read_json, write_json
from crossmodal.summary import method_rows, save_figure

KEYS = ("top1", "r5")


def cir_summary(
    methods: list[str],
    metrics: list[str | Path],
    tagger_scores: str | Path | None,
    encoder: str,
    config_hash: str,
    out_json: str | Path,
    out_png: str | Path,
    title: str,
) -> list[dict[str, Any]]:
    """Rows ``{method, encoder, config_hash, top1, r5, tagger_f1, n_queries, n_database}``."""
    tagger_f1 = None
    if tagger_scores is not None:
        scores = read_json(tagger_scores)
        if "tagger_f1" not in scores:
            raise CrossmodalError(f"{tagger_scores}: no tagger_f1 (not a cir-train-tagger output?)")
        tagger_f1 = scores["tagger_f1"]
    common = {"encoder": encoder, "config_hash": config_hash}
    rows = method_rows(methods, metrics, KEYS, "cir-eval", common)
    for row, path in zip(rows, metrics, strict=True):
        values = read_json(path)
        row |= {"tagger_f1": tagger_f1} | {k: values.get(k) for k in ("n_queries", "n_database")}
    write_json(out_json, {"title": title, "rows": rows})
    _plot(rows, out_png, title)
    return rows


def run_cir_summary(job: Any) -> list[dict[str, Any]]:
    """The ``cir-summary`` stage (a :class:`crossmodal.stages.CirSummary` job)."""
    return cir_summary(
        job.methods,
        job.metrics,
        job.tagger_scores,
        job.encoder,
        job.config_hash,
        job.summary,
        job.plot,
        job.title,
    )


def _plot(rows: list[dict[str, Any]], out_png: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    x = np.arange(len(rows))
    for offset, key, label, colour in (
        (-0.2, "top1", "top-1", "#4c72b0"),
        (0.2, "r5", "R@5", "#dd8452"),
    ):
        bars = ax.bar(x + offset, [100 * r[key] for r in rows], 0.4, label=label, color=colour)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(x, [r["method"] for r in rows])
    ax.set_ylim(0, 110)
    ax.set_ylabel("% of queries (top-1, R@5)")
    f1 = rows[0]["tagger_f1"] if rows else None
    heading = textwrap.fill(title, 80) + ("" if f1 is None else f"\ntagger token F1 {f1:.3f}")
    ax.set_title(heading, fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out_png)
