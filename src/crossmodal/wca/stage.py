"""The ``zeroshot`` stage (one method over cached crop features) and ``zeroshot-summary``.

``zeroshot`` reads the crop cache of ``wca-crops``, the image labels, the class names and the
method's prompt file, embeds the method's class texts with the same encoder entry the crops
were computed with, and writes one result: ``{method, encoder, mean, std, runs}`` plus the
images it is over and those the crop stage left out. Baselines are deterministic (one run,
std 0); WCA and Waffle draw from the ``seed`` setting.

Which inputs and settings a method reads is declared once in :data:`METHOD_NEEDS`; a job that
leaves out one its method needs, or passes one it would ignore, is refused, so a rerun
trigger never hangs on a setting that does not matter.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from crossmodal import __version__
from crossmodal.errors import CrossmodalError, DataFormatError
from crossmodal.io import read_json, write_json
from crossmodal.summary import save_figure
from crossmodal.wca import scoring, texts
from crossmodal.wca.crops import read_crop_features

log = logging.getLogger(__name__)

METRIC = "top-1 accuracy (%)"
WCA_SETTINGS = ("seed", "n_runs", "n_sampled", "image_scale", "text_scale")
METHOD_NEEDS: dict[str, frozenset[str]] = {
    "clip": frozenset(),
    "clip-e": frozenset({"prompts"}),
    "clip-d": frozenset({"prompts"}),
    "waffle": frozenset({"prompts", "words", "seed"}),
    "cupl": frozenset({"prompts"}),
    "wca": frozenset({"prompts", *WCA_SETTINGS}),
}
METHOD_OPTIONS = frozenset({"prompts", "words", *WCA_SETTINGS})
PROMPT_FILE = {  # which reference file each method reads (helper.py:164-175)
    "clip-e": "prompts/DATASET/clip-e.json",
    "clip-d": "prompts/DATASET/clip-d.json",
    "waffle": "prompts/DATASET/clip-d.json",
    "cupl": "prompts/DATASET/cupl.json",
    "wca": "prompts/DATASET/cupl.json",
}


def check_method_fields(job) -> None:
    """Refuse a method the stage does not know, and inputs or settings its method does not
    read or needs and lacks."""
    if job.method not in METHOD_NEEDS:
        raise CrossmodalError(f"zeroshot: unknown method {job.method!r}; one of {texts.METHODS}")
    needs = METHOD_NEEDS[job.method]
    given = {name for name in METHOD_OPTIONS if getattr(job, name) is not None}
    missing, unused = sorted(needs - given), sorted(given - needs)
    if missing or unused:
        raise CrossmodalError(
            f"zeroshot --method {job.method}: needs {sorted(needs) or 'none'} of the options "
            f"{sorted(METHOD_OPTIONS)}; missing {missing}, not read by this method {unused}"
        )


def read_labels(path: str | Path, image_ids: list[int], n_classes: int) -> np.ndarray:
    """The class index of every image id, from a table with ``image_id`` and ``label``."""
    table = pq.read_table(path)
    for column in ("image_id", "label"):
        if column not in table.column_names:
            raise DataFormatError(f"{path}: no {column!r} column (needs image_id and label)")
    label_of = dict(
        zip(table.column("image_id").to_pylist(), table.column("label").to_pylist(), strict=True)
    )
    missing = [i for i in image_ids if i not in label_of]
    if missing:
        raise DataFormatError(
            f"{path}: no label for {len(missing)} image(s) of the crop features, e.g. "
            f"{missing[:5]}; use the labels of the collection the crops were computed from"
        )
    labels = np.array([label_of[i] for i in image_ids], dtype=np.int64)
    bad = labels[(labels < 0) | (labels >= n_classes)]
    if len(bad):
        raise DataFormatError(
            f"{path}: label(s) {sorted(set(bad.tolist()))[:5]} are not indices into the "
            f"{n_classes} classes of the classes file"
        )
    return labels


def read_classes(path: str | Path) -> list[str]:
    names = read_json(path)
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise DataFormatError(f"{path}: expected a non-empty JSON list of class names")
    return [texts.wordify(n) for n in names]


def class_texts(job, classes: list[str]) -> list[list[str]]:
    """The texts of every class for the job's method, one list per class."""
    if job.method == "clip":
        return texts.clip_texts(classes)
    prompts = read_json(job.prompts)
    source = f"{job.prompts} ({PROMPT_FILE[job.method]} of the reference)"
    if job.method == "clip-e":
        return texts.template_texts(classes, prompts, source)
    if job.method == "clip-d":
        return texts.descriptor_texts(classes, prompts, source)
    if job.method == "waffle":
        if not isinstance(prompts, dict):
            raise DataFormatError(f"{source}: expected a JSON object {{class name: [texts]}}")
        words = read_json(job.words)
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataFormatError(f"{job.words}: expected a JSON list of words")
        return texts.description_texts(
            classes, texts.waffle_descriptors(prompts, words, job.seed), source
        )
    return texts.description_texts(classes, prompts, source)


def class_vectors(job, encoder, classes: list[str]) -> tuple[np.ndarray, int]:
    """``[C, d]`` class vectors of the job's method, and the number of texts embedded."""
    per_class = class_texts(job, classes)
    counts = np.array([len(t) for t in per_class])
    flat = [t for class_texts_ in per_class for t in class_texts_]
    emb = encoder.encode_texts(flat)
    if job.method != "wca":
        return scoring.mean_class_vectors(emb, counts), len(flat)
    labels = encoder.encode_texts([texts.CLASS_TEMPLATE.format(c) for c in classes])
    return scoring.weighted_class_vectors(emb, counts, labels, job.text_scale), len(flat)


def _check_encoder(job, meta: dict[str, Any]) -> None:
    from crossmodal.config import with_backend_defaults

    spec = with_backend_defaults("encoders", job.encoder)
    if spec != meta.get("encoder"):
        raise CrossmodalError(
            f"{job.crops_meta}: the crops were encoded with {meta.get('encoder')}, but this "
            f"run embeds texts with {spec}; point --crops at the features of encoder "
            f"{job.encoder_name!r} (or rerun wca-crops with it)"
        )


def zeroshot(job) -> dict[str, Any]:
    """Score one method; return the result record (see the module docstring)."""
    from crossmodal.encoders import build_encoder

    check_method_fields(job)
    views, meta = read_crop_features(job.crops, job.crops_meta)
    _check_encoder(job, meta)
    if not meta["image_ids"]:
        raise CrossmodalError(f"{job.crops_meta}: no image was encoded, nothing to score")
    classes = read_classes(job.classes)
    labels = read_labels(job.labels, meta["image_ids"], len(classes))
    encoder = build_encoder(job.encoder, device=job.device, precision=job.precision)
    vectors, n_texts = class_vectors(job, encoder, classes)
    if job.method == "wca":
        indices = scoring.draw_crop_indices(job.seed, job.n_runs, meta["n_crops"], job.n_sampled)
        runs = scoring.wca_accuracies(
            views, labels, vectors, indices, job.image_scale, device=str(encoder.device)
        )
    else:
        runs = [scoring.full_view_accuracy(views, labels, vectors, device=str(encoder.device))]
    mean, std = scoring.mean_std(runs)
    settings = {k: getattr(job, k) for k in WCA_SETTINGS if k in METHOD_NEEDS[job.method]}
    record = {
        "method": job.method,
        "encoder": job.encoder_name,
        "metric": METRIC,
        "mean": mean,
        "std": std,
        "runs": runs,
        "n_images": len(labels),
        "n_classes": len(classes),
        "n_texts": n_texts,
        "n_left_out": meta["skipped_count"],
        "left_out_by_reason": dict(Counter(s["reason"] for s in meta["skipped"])),
        "settings": settings,
        "crops": {k: meta[k] for k in ("alpha", "n_crops", "seed", "dtype")},
        "provenance": {"package_version": __version__, **encoder.provenance()},
    }
    write_json(job.result, record)
    log.info(
        "%s / %s: %.2f +- %.2f over %d run(s)", job.encoder_name, job.method, mean, std, len(runs)
    )
    return record


def run_zeroshot(job) -> dict[str, Any]:
    """The ``zeroshot`` stage (a :class:`crossmodal.stages.Zeroshot` job)."""
    return zeroshot(job)


ROW_KEYS = ("method", "encoder", "mean", "std", "runs", "n_images", "n_left_out")


def summarize(
    results: list[str | Path],
    out_json: str | Path,
    out_png: str | Path,
    title: str,
    config_hash: str,
):
    """Every result in one table (rows in the given order, each with the hash of the settings
    behind it) and one bar plot with error bars."""
    rows = []
    for path in results:
        record = read_json(path)
        missing = [k for k in ROW_KEYS if k not in record]
        if missing:
            raise DataFormatError(f"{path}: not a zeroshot result (no {missing})")
        rows.append({k: record[k] for k in ROW_KEYS} | {"config_hash": config_hash})
    write_json(out_json, {"title": title, "metric": METRIC, "rows": rows})
    _plot(rows, out_png, title)
    return rows


def run_zeroshot_summary(job) -> list[dict[str, Any]]:
    """The ``zeroshot-summary`` stage (a :class:`crossmodal.stages.ZeroshotSummary` job)."""
    return summarize(job.results, job.summary, job.plot, job.title, job.config_hash)


def _plot(rows: list[dict[str, Any]], out_png: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(r["method"] for r in rows))
    encoders = list(dict.fromkeys(r["encoder"] for r in rows))
    width = 0.8 / max(1, len(encoders))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(methods) + 2), 4.5), dpi=120)
    for e, encoder in enumerate(encoders):
        mine = {r["method"]: r for r in rows if r["encoder"] == encoder}
        xs = [
            m + (e - (len(encoders) - 1) / 2) * width
            for m, name in enumerate(methods)
            if name in mine
        ]
        picked = [mine[name] for name in methods if name in mine]
        ax.bar(
            xs,
            [r["mean"] for r in picked],
            width,
            yerr=[r["std"] for r in picked],
            capsize=3,
            label=encoder,
        )
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel(METRIC)
    ax.set_ylim(0, max(1.0, max((r["mean"] + r["std"] for r in rows), default=0.0) * 1.1))
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, title="encoder", title_fontsize=7)
    fig.tight_layout()
    save_figure(fig, out_png)
