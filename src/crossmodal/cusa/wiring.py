"""How the image-text retrieval rules (CUSA) wire their stages: files, settings, targets.

Read by :func:`crossmodal.workflow.stages_for`; the rules in workflow/rules/itr.smk stay thin.
For every data set of ``cusa.datasets``: prepare-itr -> the two teacher stages -> one training
job per method variant (each its own output, so they run in parallel) -> a similarity matrix
of the test split per variant plus the zero-shot student -> itr-eval -> one summary.
"""

from __future__ import annotations

import hashlib
from typing import Any

from crossmodal import paths, stages
from crossmodal.data.registry import itr_archives, itr_files
from crossmodal.errors import CrossmodalError

Config = dict[str, Any]
ZERO_SHOT = "zero_shot"


def runs(config: Config) -> list[str]:
    """The rows of a summary: the zero-shot student (if asked for), then each method."""
    c = config["cusa"]
    return ([ZERO_SHOT] if c["zero_shot"] else []) + list(c["methods"])


def summary_targets(config: Config) -> list[str]:
    return [paths.fill(paths.ITR_SUMMARY_JSON, dataset=ds) for ds in config["cusa"]["datasets"]]


def epochs(config: Config, ds: str) -> int:
    """``cusa.train.epochs`` is per data set (the reference trains COCO 30, Flickr30k 40)."""
    table = config["cusa"]["train"]["epochs"]
    if ds not in table:
        raise CrossmodalError(
            f"cusa.train.epochs has no entry for data set {ds!r} (it lists {sorted(table)}): "
            f"add `{ds}: N`"
        )
    return table[ds]


def config_hash(config: Config, ds: str) -> str:
    """Hash of everything that shapes a data set's retrieval numbers."""
    from crossmodal.workflow import json_arg

    c = config["cusa"]
    relevant = {
        "dataset": ds,
        "cusa": {k: v for k, v in c.items() if k != "datasets"},
        "student": config["encoders"][c["student"]],
        "demo": config["demo"] if ds == "demo" else None,
    }
    return hashlib.sha256(json_arg(relevant).encode()).hexdigest()[:16]


def variant_loss(config: Config, variant: str) -> dict[str, Any]:
    """The loss settings one variant trains with (its switched-off rates at 0), so that a
    change to a term reruns only the variants that use it."""
    from dataclasses import asdict

    from crossmodal.cusa.losses import CusaSettings
    from crossmodal.cusa.model import variant_settings

    return asdict(variant_settings(CusaSettings(**config["cusa"]["loss"]), variant))


def _teacher_files(config: Config, ds: str) -> dict[str, str]:
    c = config["cusa"]
    image = dict(dataset=ds, teacher=c["image_teacher"])
    text = dict(dataset=ds, teacher=c["text_teacher"])
    return {
        "image_teacher": paths.fill(paths.CUSA_TEACHER_IMAGE, **image),
        "image_teacher_meta": paths.fill(paths.CUSA_TEACHER_IMAGE_META, **image),
        "text_teacher": paths.fill(paths.CUSA_TEACHER_TEXT, **text),
        "text_teacher_meta": paths.fill(paths.CUSA_TEACHER_TEXT_META, **text),
    }


def tiny_text_teacher(config: Config, name: str) -> dict[str, Any] | None:
    """The text teacher entry whose model folder is ``resources/models/NAME``, if tiny."""
    folder = paths.fill(paths.TINY_MODEL_DIR, name=name)
    for spec in config["cusa"]["teachers"]["text"].values():
        if spec["tiny"] and spec["model"].rstrip("/") == folder:
            return spec
    return None


def itr_stages(config: Config, stage_cls: type) -> dict[str, Any]:
    """The rules' stages, by rule name (``stage_cls`` is :class:`crossmodal.workflow.Stage`)."""
    from crossmodal.workflow import _sources

    c, t = config["cusa"], config["cusa"]["train"]
    f = config["features"]

    def text_teacher_spec(name: str) -> dict[str, Any]:
        spec = c["teachers"]["text"][name]
        return {"model": spec["model"], "revision": spec["revision"]}

    def text_teacher_inputs(w) -> dict[str, str]:
        spec = c["teachers"]["text"][w.teacher]
        return (
            {"model": paths.fill(paths.TINY_ST, name=spec["model"].rstrip("/").split("/")[-1])}
            if spec["tiny"]
            else {}
        )

    def train_params(w) -> dict[str, Any]:
        return {
            "student": config["encoders"][c["student"]],
            "method": w.variant,
            "loss": variant_loss(config, w.variant),
            "epochs": epochs(config, w.dataset),
            **{k: t[k] for k in ("batch_size", "lr", "min_lr", "weight_decay", "seed", "select")},
            **{k: t[k] for k in ("device", "eval_batch_size", "checkpoint_every")},
            "checkpoints": paths.fill(paths.CUSA_CHECKPOINTS, dataset=w.dataset, variant=w.variant),
        }

    def score_inputs(w) -> dict[str, str]:
        inputs = {"pairs": paths.fill(paths.ITR_PAIRS, dataset=w.dataset)}
        if w.run != ZERO_SHOT:
            inputs["model"] = paths.fill(paths.CUSA_MODEL, dataset=w.dataset, variant=w.run)
        return inputs

    def score_params(w) -> dict[str, Any]:
        return {
            "encoder": config["encoders"][c["student"]] if w.run == ZERO_SHOT else None,
            "split": "test",
            "device": t["device"],
            "batch_size": t["eval_batch_size"],
        }

    def run_files(w, pattern: str) -> str:
        return paths.fill(pattern, dataset=w.dataset, run=w.run)

    return {
        "prepare_itr": stage_cls(
            stages.PrepareItr,
            {"pairs": paths.ITR_PAIRS},
            lambda w: {
                **itr_files(w.dataset, config["data"]["mirrors"]),
                "max_words": c["max_words"],
            },
            lambda w: {"sources": _sources(itr_archives(w.dataset))},
        ),
        "make_tiny_st": stage_cls(
            stages.MakeTinySt,
            {"modules": paths.TINY_ST},
            lambda w: {"seed": 0},
        ),
        "cusa_image_teacher": stage_cls(
            stages.CusaImageTeacher,
            {"features": paths.CUSA_TEACHER_IMAGE, "meta": paths.CUSA_TEACHER_IMAGE_META},
            lambda w: {
                "teacher": c["teachers"]["image"][w.teacher]["entry"],
                "output": c["teachers"]["image"][w.teacher]["output"],
                "batch_size": c["teacher_batch_size"],
                "dtype": c["teacher_dtype"],
                "precision": f["precision"],
                "device": t["device"],
                "max_pixels": f["max_pixels"],
            },
            lambda w: {"pairs": paths.fill(paths.ITR_PAIRS, dataset=w.dataset)},
            threads_field="workers",
        ),
        "cusa_text_teacher": stage_cls(
            stages.CusaTextTeacher,
            {"features": paths.CUSA_TEACHER_TEXT, "meta": paths.CUSA_TEACHER_TEXT_META},
            lambda w: {
                "teacher": text_teacher_spec(w.teacher),
                "batch_size": c["teacher_batch_size"],
                "dtype": c["teacher_dtype"],
                "precision": "fp32",
                "device": t["device"],
            },
            lambda w: {
                "pairs": paths.fill(paths.ITR_PAIRS, dataset=w.dataset),
                **text_teacher_inputs(w),
            },
        ),
        "cusa_train": stage_cls(
            stages.CusaTrain,
            {"model": paths.CUSA_MODEL, "history": paths.CUSA_HISTORY},
            train_params,
            lambda w: {
                "pairs": paths.fill(paths.ITR_PAIRS, dataset=w.dataset),
                **_teacher_files(config, w.dataset),
            },
            threads_field="workers",
        ),
        "itr_scores": stage_cls(
            stages.ItrScores,
            {
                "scores": paths.ITR_SCORES,
                "img_ids": paths.ITR_IMG_IDS,
                "txt_img": paths.ITR_TXT_IMG,
            },
            score_params,
            score_inputs,
            threads_field="workers",
        ),
        "itr_eval": stage_cls(
            stages.ItrEval,
            {"out": paths.ITR_METRICS},
            lambda w: {},
            lambda w: {
                "scores": run_files(w, paths.ITR_SCORES),
                "img_ids": run_files(w, paths.ITR_IMG_IDS),
                "txt_img": run_files(w, paths.ITR_TXT_IMG),
            },
        ),
        "itr_summary": stage_cls(
            stages.ItrSummary,
            {"summary": paths.ITR_SUMMARY_JSON, "plot": paths.ITR_SUMMARY_PNG},
            lambda w: {
                "methods": runs(config),
                "encoder": c["student"],
                "config_hash": config_hash(config, w.dataset),
                "title": (
                    f"{w.dataset}: tiny random-weight CLIP trained on the demo world "
                    "(smoke run; numbers show learning, not the method's quality)"
                    if w.dataset == "demo"
                    else f"{w.dataset} test: image-text retrieval RSUM by method"
                ),
            },
            lambda w: {
                "metrics": [
                    paths.fill(paths.ITR_METRICS, dataset=w.dataset, run=r) for r in runs(config)
                ]
            },
        ),
    }
