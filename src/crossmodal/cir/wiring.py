"""How the compositional image retrieval rules wire their stages: files, settings, targets.

Read by :func:`crossmodal.workflow.stages_for`; the rules in workflow/rules/cir.smk stay thin.
The tagger's sentences (from the reference's downloaded lists, or the demo world's) -> the
tagger (a hub DistilBERT, or a tiny random-weight one built locally) -> per data set of
``cir.datasets``: prepare-cir of its train and evaluation splits -> cir-parse -> the projection
fine-tune on the train split -> cir-embed of the evaluation split, untrained and fine-tuned ->
build-index over the database embeddings -> cir-eval -> one summary.
"""

from __future__ import annotations

import hashlib
from typing import Any

from crossmodal import paths, stages
from crossmodal.data.registry import (
    CIR_DEMO_LISTS,
    CIR_TAGGER_LISTS,
    cir_dataset,
    cir_files,
)

Config = dict[str, Any]
METHODS = ("untrained", "finetuned")
PROJECTION_RUN_KEYS = ("train_fraction", "split_seed")  # cir.projection keys outside the fine-tune


def summary_targets(config: Config) -> list[str]:
    return [paths.fill(paths.CIR_SUMMARY_JSON, dataset=ds) for ds in config["cir"]["datasets"]]


def config_hash(config: Config, ds: str) -> str:
    """Hash of everything that shapes a data set's retrieval numbers."""
    from crossmodal.workflow import json_arg

    c = config["cir"]
    relevant = {
        "dataset": ds,
        "cir": {k: v for k, v in c.items() if k not in ("datasets", "device", "gpus")},
        "encoder": config["encoders"][c["encoder"]],
        "demo": config["demo"] if ds == "demo" else None,
    }
    return hashlib.sha256(json_arg(relevant).encode()).hexdigest()[:16]


def list_files(config: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The tagger's template and object files as (rule inputs, settings): the downloads are
    rule inputs; the demo world's files are not a rule's declared outputs, so its marker is the
    input and the two paths travel as settings."""
    if config["cir"]["lists"] == "demo":
        templates, objects = (f"{paths.RESOURCES}/{p}" for p in CIR_DEMO_LISTS)
        return {"sources": [paths.DEMO_DONE]}, {"templates": templates, "objects": objects}
    files = {
        "templates": paths.fill(paths.DOWNLOAD, archive=CIR_TAGGER_LISTS.templates),
        "objects": paths.fill(paths.DOWNLOAD, archive=CIR_TAGGER_LISTS.objects),
    }
    return files, {}


def split_sources(name: str) -> list[str]:
    """Markers proving a data set's files are in place: the demo world's, else none (the user's
    folder is there or prepare-cir says which file is not)."""
    return [paths.DEMO_DONE] if cir_dataset(name).root is not None else []


def tagger_model(config: Config) -> str:
    return paths.fill(paths.CIR_TAGGER, tagger=config["cir"]["tagger"]["name"])


def tagger_scores(config: Config) -> str:
    return paths.fill(paths.CIR_TAGGER_SCORES, tagger=config["cir"]["tagger"]["name"])


def cir_stages(config: Config, stage_cls: type) -> dict[str, Any]:
    """The rules' stages, by rule name (``stage_cls`` is :class:`crossmodal.workflow.Stage`)."""
    c = config["cir"]
    t = c["tagger"]
    proj = {k: v for k, v in c["projection"].items() if k not in PROJECTION_RUN_KEYS}

    def split_files(w, pattern: str, split: str | None = None) -> str:
        return paths.fill(pattern, dataset=w.dataset, split=split or w.split)

    def edits(w, split: str, parser: str) -> str:
        return paths.fill(paths.CIR_EDITS, dataset=w.dataset, split=split, parser=parser)

    def tagger_inputs(w) -> dict[str, str]:
        inputs = {"sentences": paths.CIR_TAGGER_DATA}
        if t["tiny"]:
            inputs["base_model"] = paths.fill(paths.CIR_TINY_TAGGER, name=w.tagger)
        return inputs

    def parse_inputs(w) -> dict[str, str]:
        inputs = {"queries": split_files(w, paths.CIR_QUERIES)}
        if w.parser == "tagger":
            inputs["tagger"] = tagger_model(config)
        return inputs

    def train_inputs(w) -> dict[str, str]:
        train = cir_dataset(w.dataset).train_split
        return {
            "queries": split_files(w, paths.CIR_QUERIES, train),
            "images": split_files(w, paths.CIR_IMAGES, train),
            "edits": edits(w, train, c["train_parser"]),
        }

    def embed_inputs(w) -> dict[str, str]:
        inputs = {
            "queries": split_files(w, paths.CIR_QUERIES),
            "images": split_files(w, paths.CIR_IMAGES),
            "edits": edits(w, w.split, c["parser"]),
        }
        if w.method == "finetuned":
            inputs["projection"] = paths.fill(
                paths.CIR_PROJECTION, dataset=w.dataset, encoder=w.encoder
            )
        return inputs

    def run_files(w, pattern: str, method: str | None = None) -> str:
        return paths.fill(
            pattern,
            dataset=w.dataset,
            split=cir_dataset(w.dataset).eval_split if method else w.split,
            method=method or w.method,
            encoder=c["encoder"] if method else w.encoder,
        )

    return {
        "prepare_cir": stage_cls(
            stages.PrepareCir,
            {
                "queries": paths.CIR_QUERIES,
                "images": paths.CIR_IMAGES,
                "missing": paths.CIR_MISSING,
            },
            lambda w: {
                **cir_files(w.dataset, w.split, config["data"]["mirrors"]),
                "max_missing_fraction": c["data"]["max_missing_fraction"],
            },
            lambda w: {"sources": split_sources(w.dataset)},
        ),
        "cir_tagger_data": stage_cls(
            stages.CirTaggerData,
            {"sentences": paths.CIR_TAGGER_DATA},
            lambda w: {
                "settings": {k: v for k, v in t.items() if k in TAGGER_DATA_KEYS},
                **list_files(config)[1],
            },
            lambda w: list_files(config)[0],
        ),
        "make_tiny_tagger": stage_cls(
            stages.MakeTinyTagger,
            {"tokenizer": paths.CIR_TINY_TAGGER},
            lambda w: {"seed": 0},
            lambda w: {"sentences": paths.CIR_TAGGER_DATA},
        ),
        "cir_train_tagger": stage_cls(
            stages.CirTrainTagger,
            {"model": paths.CIR_TAGGER, "scores": paths.CIR_TAGGER_SCORES},
            lambda w: {
                "settings": {**t["train"], "max_length": c["max_length"]},
                "device": c["device"],
                "pretrained": None if t["tiny"] else t["pretrained"],
                "revision": None if t["tiny"] else t["revision"],
                "checkpoint": paths.fill(paths.CIR_TAGGER_CHECKPOINT, tagger=w.tagger),
            },
            tagger_inputs,
        ),
        "cir_parse": stage_cls(
            stages.CirParse,
            {"edits": paths.CIR_EDITS},
            lambda w: {"parser": w.parser, "device": c["device"], "max_length": c["max_length"]},
            parse_inputs,
        ),
        "cir_train_projection": stage_cls(
            stages.CirTrainProjection,
            {"projection": paths.CIR_PROJECTION, "log": paths.CIR_PROJECTION_LOG},
            lambda w: {
                "encoder": config["encoders"][w.encoder],
                "settings": proj,
                "compose": c["compose"],
                "train_fraction": c["projection"]["train_fraction"],
                "split_seed": c["projection"]["split_seed"],
                "device": c["device"],
                "checkpoint": paths.fill(
                    paths.CIR_PROJECTION_CHECKPOINT, dataset=w.dataset, encoder=w.encoder
                ),
            },
            train_inputs,
        ),
        "cir_embed": stage_cls(
            stages.CirEmbed,
            {
                "query_features": paths.CIR_QUERY_FEATURES,
                "database_features": paths.CIR_DATABASE_FEATURES,
            },
            lambda w: {
                "encoder": config["encoders"][w.encoder],
                "compose": c["compose"],
                "database": c["database"],
                "device": c["device"],
                "batch_size": c["batch_size"],
            },
            embed_inputs,
            threads_field="workers",
        ),
        "cir_build_index": stage_cls(
            stages.BuildIndex,
            {"index": paths.CIR_INDEX, "meta": paths.CIR_INDEX_META},
            lambda w: {"params": {"kind": "flat"}},  # exact cosine, as the reference ranks
            lambda w: {"features": run_files(w, paths.CIR_DATABASE_FEATURES)},
        ),
        "cir_eval": stage_cls(
            stages.CirEval,
            {"metrics": paths.CIR_METRICS, "rankings": paths.CIR_RANKINGS},
            lambda w: {"ks": c["ks"]},
            lambda w: {
                "queries": split_files(w, paths.CIR_QUERIES),
                "query_features": run_files(w, paths.CIR_QUERY_FEATURES),
                "index": run_files(w, paths.CIR_INDEX),
            },
        ),
        "cir_summary": stage_cls(
            stages.CirSummary,
            {"summary": paths.CIR_SUMMARY_JSON, "plot": paths.CIR_SUMMARY_PNG},
            lambda w: {
                "methods": list(METHODS),
                "encoder": c["encoder"],
                "config_hash": config_hash(config, w.dataset),
                "title": (
                    f"{w.dataset}: tiny random-weight CLIP and tagger on the demo world's edits "
                    "(smoke run; numbers show learning, not the method's quality)"
                    if w.dataset == "demo"
                    else f"{w.dataset} {cir_dataset(w.dataset).eval_split}: compositional "
                    "retrieval, untrained vs fine-tuned projection"
                ),
            },
            lambda w: {
                "metrics": [run_files(w, paths.CIR_METRICS, m) for m in METHODS],
                **({"tagger_scores": tagger_scores(config)} if c["parser"] == "tagger" else {}),
            },
        ),
    }


TAGGER_DATA_KEYS = (
    "draws_per_template",
    "seed",
    "sort_objects",
    "object_words",
    "heldout_templates",
    "heldout_sentences",
)
