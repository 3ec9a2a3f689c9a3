"""results/{dataset}/acc.json and acc.png: every configured run in one table and one plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossmodal.errors import CrossmodalError
from crossmodal.io import atomic_path, read_json, write_json


def summarize(
    runs: list[dict[str, Any]],
    scores: list[str | Path],
    out_json: str | Path,
    out_png: str | Path,
    title: str,
) -> list[dict[str, Any]]:
    """``runs[i]`` (dataset, vlm, method, loop, llm, config_hash) was scored in ``scores[i]``.

    Every record says over how many questions its accuracy is and how many of the split's
    questions were left out, by reason (unreadable images, ``describe.limit``).
    """
    if len(runs) != len(scores):
        raise CrossmodalError(f"{len(runs)} runs but {len(scores)} score files")
    records = []
    for run, path in zip(runs, scores, strict=True):
        result = read_json(path)
        rec = {k: run[k] for k in ("dataset", "vlm", "method", "loop", "llm", "config_hash")}
        if "overall" in result:
            rec.update(accuracy=result["overall"], n_questions=result["n_questions"])
        else:
            rec.update(
                accuracy=result["direct_answer"],
                n_questions=result["n_direct_answer"],
                multiple_choice=result["multiple_choice"],
            )
        rec.update(
            n_split_questions=result["n_split_questions"],
            n_left_out=result["n_left_out"],
            left_out_by_reason=result["left_out_by_reason"],
        )
        records.append(rec)
    records.sort(key=lambda r: (r["vlm"], r["method"], r["llm"], r["loop"]))
    write_json(out_json, {"title": title, "runs": records})
    _plot(records, out_png, title)
    return records


def method_rows(
    methods: list[str],
    metrics: list[str | Path],
    keys: tuple[str, ...],
    what: str,
    common: dict[str, Any],
) -> list[dict[str, Any]]:
    """One summary row per method: ``method``, the ``common`` fields (encoder, config hash)
    and ``keys`` read from the method's metrics file. A file without them is an error naming
    it and the command (``what``) that should have written it."""
    if len(methods) != len(metrics):
        raise CrossmodalError(f"{len(methods)} methods but {len(metrics)} metrics files")
    rows = []
    for method, path in zip(methods, metrics, strict=True):
        values = read_json(path)
        missing = [k for k in keys if k not in values]
        if missing:
            raise CrossmodalError(f"{path}: no {missing} (not a {what} output?)")
        rows.append({"method": method, **common} | {k: values[k] for k in keys})
    return rows


def save_figure(fig: Any, out_png: str | Path) -> None:
    """A plot as PNG, atomically and without a timestamp (equal plots, equal bytes)."""
    import matplotlib.pyplot as plt

    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def run_summarize(job) -> list[dict[str, Any]]:
    """The ``summarize`` stage (a :class:`crossmodal.stages.Summarize` job)."""
    return summarize(job.runs, job.scores, job.summary, job.plot, job.title)


def _plot(records: list[dict[str, Any]], out_png: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    lines: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    for r in records:
        lines.setdefault((r["vlm"], r["method"], r["llm"]), []).append((r["loop"], r["accuracy"]))
    for (vlm, method, llm), pts in sorted(lines.items()):
        pts.sort()
        ax.plot(
            [p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{vlm} / {method} / {llm}"
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    top = max((r["accuracy"] for r in records), default=0.0)
    ax.set_ylim(0, max(1.0, top * 1.1))
    ax.set_xlabel("descriptions in the context (k)")
    ax.set_ylabel("VQA accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_png)
