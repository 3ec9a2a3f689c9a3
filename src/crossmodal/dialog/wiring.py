"""How the dialogue-to-photo retrieval rules wire their stages: files, settings, targets.

Read by :func:`crossmodal.workflow.stages_for`; the rules in workflow/rules/dialog.smk stay thin.
For every data set of ``dialog.datasets``: the split's JSON shards (PhotoChat's, downloaded, or
the demo world's) -> dialogues.parquet per split -> the photos (fetched, or from
``data.mirrors.photochat``) with their status table -> descriptors per split through the LLM
-> a torchrun fine-tune on the training split -> embeddings of the test split, zero-shot and
fine-tuned -> FAISS search and predictions.csv -> dialog-eval -> one summary.
"""

from __future__ import annotations

import hashlib
from typing import Any

from crossmodal import paths, stages
from crossmodal.data.registry import DownloadOwner
from crossmodal.dialog.data import SHARDS, shard_names
from crossmodal.errors import CrossmodalError

Config = dict[str, Any]
ZERO_SHOT, FINETUNED = "zero_shot", "finetuned"
DATASETS = ("photochat", "demo")
SPLITS = ("train", "test")


def _check(config: Config) -> None:
    d = config["dialog"]
    unknown = [ds for ds in d["datasets"] if ds not in DATASETS]
    if unknown:
        raise CrossmodalError(f"dialog.datasets: {unknown} unknown; choose from {list(DATASETS)}")
    if d["datasets"]:
        for key, section in (("encoder", "encoders"), ("llm", "llms")):
            if d[key] not in config[section]:
                raise CrossmodalError(
                    f"dialog.{key}: {d[key]!r} is not configured under {section}; add it there"
                )


def runs(config: Config) -> list[str]:
    """The rows of a summary: the zero-shot model (if asked for), then the fine-tuned one."""
    return ([ZERO_SHOT] if config["dialog"]["zero_shot"] else []) + [FINETUNED]


def summary_targets(config: Config) -> list[str]:
    _check(config)
    return [
        paths.fill(paths.DIALOG_SUMMARY_JSON, dataset=ds) for ds in config["dialog"]["datasets"]
    ]


def manifest_name(shard: str) -> str:
    """The download manifest's name of a PhotoChat shard: ``test/test_00.json`` ->
    ``photochat_test_00.json``."""
    return "photochat_" + shard.split("/")[-1]


def photochat_archives() -> list[str]:
    return [manifest_name(s) for split in SHARDS for s in shard_names(split)]


def download_owners() -> list[DownloadOwner]:
    """PhotoChat's JSON shards (mirror key ``photochat_json``; never extracted)."""
    return [DownloadOwner(tuple(photochat_archives()), "photochat", "photochat_json")]


def config_hash(config: Config, ds: str) -> str:
    """Hash of everything that shapes a data set's dialogue retrieval numbers."""
    from crossmodal.workflow import json_arg

    d = config["dialog"]
    relevant = {
        "dataset": ds,
        "dialog": {k: v for k, v in d.items() if k != "datasets"},
        "encoder": config["encoders"][d["encoder"]],
        "llm": config["llms"][d["llm"]],
        "mirror": config["data"]["mirrors"].get("photochat") if ds == "photochat" else None,
    }
    return hashlib.sha256(json_arg(relevant).encode()).hexdigest()[:16]


def _shards(ds: str, split: str) -> list[str]:
    if ds == "demo":
        return [paths.fill(paths.DIALOG_DEMO_SHARD, split=split)]
    return [paths.fill(paths.DOWNLOAD, archive=manifest_name(s)) for s in shard_names(split)]


def dialog_stages(config: Config, stage_cls: type) -> dict[str, Any]:
    """The rules' stages, by rule name (``stage_cls`` is :class:`crossmodal.workflow.Stage`)."""
    from crossmodal.workflow import model_inputs

    d, t = config["dialog"], config["dialog"]["train"]

    def dialogues(w, split: str) -> str:
        return paths.fill(paths.DIALOG_DIALOGUES, dataset=w.dataset, split=split)

    def descriptors(w, split: str) -> str:
        return paths.fill(paths.DIALOG_DESCRIPTORS, dataset=w.dataset, split=split, llm=w.llm)

    def photos(w) -> str:
        return paths.fill(paths.DIALOG_PHOTOS, dataset=w.dataset)

    def photo_params(w) -> dict[str, Any]:
        if w.dataset == "demo":
            mirror = paths.DIALOG_DEMO_PHOTOS
        else:
            mirror = config["data"]["mirrors"].get("photochat")
        return {
            "folder": paths.fill(paths.DIALOG_PHOTO_FOLDER, dataset=w.dataset),
            "fetch": d["fetch"],
            "mirror": mirror,
        }

    def run_files(w, pattern: str) -> str:
        return paths.fill(pattern, dataset=w.dataset, method=w.method, llm=w.llm, encoder=w.encoder)

    def embed_inputs(w) -> dict[str, Any]:
        inputs = {
            "dialogues": dialogues(w, "test"),
            "descriptors": descriptors(w, "test"),
            "photos": photos(w),
        }
        if w.method == FINETUNED:
            inputs["model"] = paths.fill(
                paths.DIALOG_MODEL, dataset=w.dataset, llm=w.llm, encoder=w.encoder
            )
        return inputs

    def summary_inputs(w) -> dict[str, Any]:
        files = [
            paths.fill(
                paths.DIALOG_METRICS,
                dataset=w.dataset,
                method=r,
                llm=d["llm"],
                encoder=d["encoder"],
            )
            for r in runs(config)
        ]
        return {"metrics": files}

    return {
        "make_dialog_demo": stage_cls(
            stages.MakeDialogDemo,
            {
                "train": paths.fill(paths.DIALOG_DEMO_SHARD, split="train"),
                "test": paths.fill(paths.DIALOG_DEMO_SHARD, split="test"),
                "photos": paths.DIALOG_DEMO_PHOTOS_DONE,
            },
            lambda w: {
                "seed": d["demo"]["seed"],
                "n_train": d["demo"]["n_train"],
                "n_test": d["demo"]["n_test"],
            },
        ),
        "dialog_prepare": stage_cls(
            stages.DialogPrepare,
            {"dialogues": paths.DIALOG_DIALOGUES},
            lambda w: {"split": w.split},
            lambda w: {"shards": _shards(w.dataset, w.split)},
        ),
        "dialog_photos": stage_cls(
            stages.DialogPhotos,
            {"photos": paths.DIALOG_PHOTOS},
            photo_params,
            lambda w: {
                "dialogues": [dialogues(w, s) for s in SPLITS],
                **({"sources": [paths.DIALOG_DEMO_PHOTOS_DONE]} if w.dataset == "demo" else {}),
            },
        ),
        "dialog_describe": stage_cls(
            stages.DialogDescribe,
            {"descriptors": paths.DIALOG_DESCRIPTORS, "ledger": paths.DIALOG_DESCRIPTORS_LEDGER},
            lambda w: {
                "llm": config["llms"][w.llm],
                "settings": d["descriptor"],
                "journal": paths.fill(
                    paths.DIALOG_JOURNAL, dataset=w.dataset, split=w.split, llm=w.llm
                ),
                "chunk": d["chunk"],
            },
            lambda w: {"dialogues": dialogues(w, w.split), **model_inputs(config, "llms", w.llm)},
        ),
        "dialog_train": stage_cls(
            stages.DialogTrain,
            {"model": paths.DIALOG_MODEL, "history": paths.DIALOG_HISTORY},
            lambda w: {
                "student": config["encoders"][w.encoder],
                **{k: t[k] for k in ("loss", "tau", "epochs", "batch_size", "lr", "weight_decay")},
                **{k: t[k] for k in ("seed", "device", "checkpoint_every")},
                "checkpoints": paths.fill(
                    paths.DIALOG_CHECKPOINTS, dataset=w.dataset, llm=w.llm, encoder=w.encoder
                ),
            },
            lambda w: {
                "dialogues": dialogues(w, "train"),
                "descriptors": descriptors(w, "train"),
                "photos": photos(w),
            },
            threads_field="workers",
        ),
        "dialog_embed": stage_cls(
            stages.DialogEmbed,
            {"queries": paths.DIALOG_QUERIES, "candidates": paths.DIALOG_CANDIDATES},
            lambda w: {
                "encoder": config["encoders"][w.encoder],
                "batch_size": d["batch_size"],
                "device": t["device"],
            },
            embed_inputs,
        ),
        "dialog_search": stage_cls(
            stages.DialogSearch,
            {
                "index": paths.DIALOG_INDEX,
                "scores": paths.DIALOG_SCORES,
                "candidate_ids": paths.DIALOG_CANDIDATE_IDS,
                "truth": paths.DIALOG_TRUTH,
                "excluded": paths.DIALOG_EXCLUDED,
                "predictions": paths.DIALOG_PREDICTIONS,
            },
            lambda w: {"metric": d["search"]["metric"], "top": d["search"]["top"]},
            lambda w: {
                "queries": run_files(w, paths.DIALOG_QUERIES),
                "candidates": run_files(w, paths.DIALOG_CANDIDATES),
            },
        ),
        "dialog_eval": stage_cls(
            stages.DialogEval,
            {"out": paths.DIALOG_METRICS},
            lambda w: {"ks": d["eval"]["ks"], "hit_k": d["eval"]["hit_k"]},
            lambda w: {
                k: run_files(w, p)
                for k, p in (
                    ("scores", paths.DIALOG_SCORES),
                    ("candidate_ids", paths.DIALOG_CANDIDATE_IDS),
                    ("truth", paths.DIALOG_TRUTH),
                    ("excluded", paths.DIALOG_EXCLUDED),
                )
            },
        ),
        "dialog_summary": stage_cls(
            stages.DialogSummary,
            {"summary": paths.DIALOG_SUMMARY_JSON, "plot": paths.DIALOG_SUMMARY_PNG},
            lambda w: {
                "methods": runs(config),
                "encoder": d["encoder"],
                "llm": d["llm"],
                "config_hash": config_hash(config, w.dataset),
                "title": (
                    f"{w.dataset}: tiny random-weight CLIP and LLM on the demo world's dialogues "
                    "(smoke run; numbers show learning, not the method's quality)"
                    if w.dataset == "demo"
                    else f"{w.dataset} test: dialogue-to-photo retrieval"
                ),
            },
            summary_inputs,
        ),
    }
