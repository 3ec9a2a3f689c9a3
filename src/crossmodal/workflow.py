"""How the Snakefile wires stages together: each rule's inputs, outputs and settings.

A rule reads its stage here: ``inputs(w)`` (named files, Snakemake ``unpack``), ``outputs``
(named path patterns), and ``job(w, input, output)``, which fills the stage's job
(``crossmodal.stages``) from the rule's own files plus the settings taken from the config, and
returns its command-line arguments. The job checks that the names match its fields, so a
stage's files and settings are named once: here, by the job's field names.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crossmodal import paths, stages
from crossmodal.codehash import digest, module_closure
from crossmodal.data.registry import COLLECTIONS, DATASETS, ITR_DATASETS, collection, dataset
from crossmodal.jobs import JOBS, Job

Config = dict[str, Any]
Inputs = Callable[[Any], dict[str, Any]]
Params = Callable[[Any], dict[str, Any]]


# --- data sources -----------------------------------------------------------------------------


def _archive_owners():
    """(archive file name, the collection, data set or file group it belongs to) for every
    download of every method."""
    from crossmodal.data.registry import CIR_TAGGER_LISTS
    from crossmodal.dialog.wiring import download_owners as dialog_owners
    from crossmodal.wca.data import download_owners as zeroshot_owners

    owners = (
        *COLLECTIONS.values(),
        *DATASETS.values(),
        *ITR_DATASETS.values(),
        *zeroshot_owners(),
        CIR_TAGGER_LISTS,
        *dialog_owners(),
    )
    for owner in owners:
        for name in owner.archives:
            yield name, owner


def archive_roots() -> dict[str, str]:
    """Archive file name -> resources-relative folder it extracts into."""
    return {name: owner.root for name, owner in _archive_owners()}


def archive_mirror_key(name: str) -> str:
    """The config key under ``data.mirrors`` that can replace this archive's URL."""
    for archive, owner in _archive_owners():
        if archive == name:
            return owner.mirror_key
    raise KeyError(name)


def _sources(archives: tuple[str, ...]) -> list[str]:
    """Markers that prove a collection's or dataset's files are in place."""
    return [paths.fill(paths.EXTRACTED, archive=a) for a in archives] or [paths.DEMO_DONE]


def collection_sources(name: str) -> list[str]:
    return _sources(collection(name).archives)


def dataset_sources(name: str) -> list[str]:
    return _sources(dataset(name).archives)


def question_files(name: str, split: str) -> dict[str, str | None]:
    """The official question (and OK-VQA annotation) files of a dataset split."""
    ds = dataset(name)
    s = ds.splits[split]
    base = f"{paths.RESOURCES}/{ds.root}"
    return {
        "questions_json": f"{base}/{s.questions}",
        "annotations_json": f"{base}/{s.annotations}" if s.annotations else None,
    }


# --- config helpers ---------------------------------------------------------------------------


def json_arg(obj: Any) -> str:
    """Compact, key-sorted JSON (what a config block looks like on a command line)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# The per-VLM keys that shape requests (sampling and prompts); the rest configures the backend.
GENERATION_KEYS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "system_prompt",
    "base_prompt",
    "image_labels",
    "min_sentence_words",
    "prefill",
    "compare_prefill",
    "cleanup",
    "pad_to_square",
)


# Sampling a backend cannot send (the schema gives Claude entries no top_k): off.
OFF = {"top_k": -1, "repetition_penalty": 1.0}


def describe_settings(config: Config, vlm: str, method: str, split: str) -> dict[str, Any]:
    """DescribeSettings for one (vlm, method, split): the VLM's sampling + the describe block."""
    spec, d = config["vlms"][vlm], config["describe"]
    return {
        **{k: spec[k] if k in spec else OFF[k] for k in GENERATION_KEYS},
        "method": method,
        "n_descriptions": d["train_descriptions"] if split == "train" else d["n_descriptions"],
        "seed": d["seed"],
        "n_reference_captions": d["n_reference_captions"],
        "reuse_first_references": d["reuse_first_references"],
    }


def generator_spec(config: Config, vlm: str) -> dict[str, Any]:
    """The backend part of a VLM entry (sampling settings travel in the describe settings)."""
    return {k: v for k, v in config["vlms"][vlm].items() if k not in GENERATION_KEYS}


def pica_loops(config: Config) -> list[int]:
    return config["pica"]["loops"] or list(range(1, config["describe"]["n_descriptions"] + 1))


def pica_encoder(config: Config) -> str:
    """The encoder that selects PICa's in-context examples (``pica.encoder``, else features')."""
    return config["pica"]["encoder"] or config["features"]["encoder"]


def model_inputs(config: Config, section: str, name: str) -> dict[str, str]:
    """A locally built (tiny) model is a file dependency; hub and API models are not."""
    spec = config[section][name]
    return {"model": f"{spec['model']}/config.json"} if spec.get("tiny") else {}


def tiny_model_arch(config: Config, name: str) -> str:
    """The ``tiny`` architecture configured for the model folder ``resources/models/NAME``."""
    folder = paths.fill(paths.TINY_MODEL_DIR, name=name)
    for spec in [*config["vlms"].values(), *config["llms"].values()]:
        if spec.get("tiny") and spec["model"].rstrip("/") == folder:
            return spec["tiny"]
    raise KeyError(f"no tiny model is configured with model folder {folder!r}")


def retrieval_collection(name: str) -> str:
    """ReCoD retrieves from the dataset's training image collection (COCO train)."""
    return dataset(name).splits["train"].collection


# Settings that change how work is split or sent, never a result: not part of a result's hash.
OPERATIONAL = {"features": ("workers",), "describe": ("chunk", "shards")}


def _operational_describe(config: Config) -> tuple[str, ...]:
    """With ``reuse_first_references`` the first pair is drawn per shard: shards then shape
    the result and belong in its hash."""
    if config["describe"]["reuse_first_references"]:
        return tuple(k for k in OPERATIONAL["describe"] if k != "shards")
    return OPERATIONAL["describe"]


def _without(block: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in block.items() if k not in keys}


def config_hash(config: Config, ds: str, vlm: str, method: str, llm: str) -> str:
    """Hash of every setting that shapes one (dataset, vlm, method, llm) result."""
    relevant = {
        "dataset": ds,
        "method": method,
        "encoder": config["encoders"][config["features"]["encoder"]],
        "pica_encoder": config["encoders"][pica_encoder(config)],
        "features": _without(config["features"], OPERATIONAL["features"]),
        "index": config["index"],
        "vlm": config["vlms"][vlm],
        "describe": _without(config["describe"], _operational_describe(config)),
        "llm": config["llms"][llm],
        "pica": config["pica"],
        "demo": config["demo"],
    }
    return hashlib.sha256(json_arg(relevant).encode()).hexdigest()[:16]


def score_runs(config: Config, ds: str) -> list[dict[str, Any]]:
    """One record per scored run of a dataset: the summary's rows, in a fixed order."""
    runs = []
    for vlm in config["describe"]["vlms"]:
        for method in config["describe"]["methods"]:
            for llm in config["pica"]["llms"]:
                h = config_hash(config, ds, vlm, method, llm)
                for k in pica_loops(config):
                    runs.append(
                        dict(dataset=ds, vlm=vlm, method=method, loop=k, llm=llm, config_hash=h)
                    )
    return runs


def summary_targets(config: Config) -> list[str]:
    return [paths.fill(paths.SUMMARY_JSON, dataset=ds) for ds in config["datasets"]]


def gallery_targets(config: Config) -> list[str]:
    """A loop gallery per (dataset, vlm, ReCoD method), unless ``describe.gallery`` is 0."""
    if not config["describe"]["gallery"]:
        return []
    return [
        paths.fill(paths.GALLERY, dataset=ds, vlm=vlm, method=method)
        for ds in config["datasets"]
        for vlm in config["describe"]["vlms"]
        for method in config["describe"]["methods"]
        if method != "base"
    ]


# --- stage code -------------------------------------------------------------------------------


@functools.cache
def code_version(command: str, src: str) -> str:
    """Hash of the code a stage runs under ``src`` (this checkout's src/): its implementation
    module with everything that imports, plus the command line that starts it. A rule takes it
    as a parameter, so editing a stage's code reruns that stage and what follows."""
    cls = JOBS[command]
    files = set(module_closure(src, cls.impl.split(":")[0]))
    files.update(module_closure(src, "crossmodal.cli", False))
    files.update(module_closure(src, "crossmodal.__main__", False))
    return digest(sorted(files), src)[:16]


# --- stages -----------------------------------------------------------------------------------


@dataclass
class Stage:
    """One rule's wiring: the job it runs, its named inputs, outputs and settings."""

    cls: type[Job]
    outputs: dict[str, Any]
    params: Params
    inputs: Inputs = field(default=lambda w: {})
    threads_field: str | None = None  # a job field that takes the rule's (scaled) threads

    def job(self, wildcards: Any, input: Any, output: Any) -> str:
        """The job's command-line arguments from the rule's own files and the settings.

        Snakemake evaluates a parameter that needs the rule's files late, so every rule also
        passes :meth:`settings`, which it compares with the last run's to decide a rerun."""
        params = self.params(wildcards)
        return self.cls.from_rule(dict(input.items()), dict(output.items()), params).argv()

    def job_with_threads(self, wildcards: Any, input: Any, output: Any, threads: int) -> str:
        """:meth:`job` for a stage whose ``threads_field`` takes the rule's threads."""
        params = {**self.params(wildcards), self.threads_field: threads}
        return self.cls.from_rule(dict(input.items()), dict(output.items()), params).argv()

    def settings(self, wildcards: Any) -> str:
        """The job's settings as JSON: what Snakemake compares to decide a rerun."""
        return json_arg(self.params(wildcards))


def stages_for(config: Config) -> dict[str, Stage]:
    """Every rule's stage for this config, by rule name."""
    from crossmodal.cir.wiring import cir_stages
    from crossmodal.cusa.wiring import itr_stages
    from crossmodal.dialog.wiring import dialog_stages
    from crossmodal.wca.wiring import zeroshot_stages

    return {
        **_spine_stages(config),
        **itr_stages(config, Stage),
        **dialog_stages(config, Stage),
        **zeroshot_stages(config, Stage),
        **cir_stages(config, Stage),
    }


def _spine_stages(config: Config) -> dict[str, Stage]:
    """The VQA spine's stages: data, features, indexes, descriptions, PICa, scores, summary."""
    f, d, p = config["features"], config["describe"], config["pica"]
    encoder = f["encoder"]
    roots = archive_roots()
    loops = pica_loops(config)

    def describe_inputs(w) -> dict[str, Any]:
        coll = dataset(w.dataset).splits[w.split].collection
        inputs = {
            "images": paths.fill(paths.IMAGES, collection=coll),
            "questions": paths.fill(paths.QUESTIONS, dataset=w.dataset, split=w.split),
            "skips": paths.fill(paths.SKIPS, collection=coll, encoder=encoder),
            **model_inputs(config, "vlms", w.vlm),
        }
        if w.method != "base":
            rc = retrieval_collection(w.dataset)
            inputs.update(
                base=paths.fill(
                    paths.DESCRIPTIONS, dataset=w.dataset, split=w.split, vlm=w.vlm, method="base"
                ),
                index=paths.fill(paths.INDEX, collection=rc, encoder=encoder),
                retrieval_images=paths.fill(paths.IMAGES, collection=rc),
                retrieval_captions=paths.fill(paths.CAPTIONS, collection=rc),
            )
        return inputs

    def describe_params(w) -> dict[str, Any]:
        return {
            "vlm": generator_spec(config, w.vlm),
            "settings": describe_settings(config, w.vlm, w.method, w.split),
            "journal": paths.fill(
                paths.DESCRIBE_JOURNAL, dataset=w.dataset, split=w.split, vlm=w.vlm, method=w.method
            ),
            "chunk": d["chunk"],
            "shard": int(w.shard),
            "shards": int(w.shards),
            "limit": d["limit"],
            "encoder": config["encoders"][encoder] if w.method != "base" else None,
        }

    def shard_files(pattern: str) -> Callable[[Any], list[str]]:
        n = d["shards"]
        return lambda w: [
            paths.fill(
                pattern,
                dataset=w.dataset,
                split=w.split,
                vlm=w.vlm,
                method=w.method,
                shard=i,
                shards=n,
            )
            for i in range(n)
        ]

    def pica_inputs(w) -> dict[str, Any]:
        ds, enc = dataset(w.dataset), pica_encoder(config)
        vc, tc = ds.splits["val"].collection, ds.splits["train"].collection
        desc = dict(dataset=w.dataset, vlm=w.vlm)
        return {
            "val_questions": paths.fill(paths.QUESTIONS, dataset=w.dataset, split="val"),
            "train_questions": paths.fill(paths.QUESTIONS, dataset=w.dataset, split="train"),
            "val_question_features": paths.fill(
                paths.QUESTION_FEATURES, dataset=w.dataset, split="val", encoder=enc
            ),
            "train_question_features": paths.fill(
                paths.QUESTION_FEATURES, dataset=w.dataset, split="train", encoder=enc
            ),
            "val_image_features": paths.fill(paths.IMAGE_FEATURES, collection=vc, encoder=enc),
            "train_image_features": paths.fill(paths.IMAGE_FEATURES, collection=tc, encoder=enc),
            "val_descriptions": paths.fill(
                paths.DESCRIPTIONS, **desc, split="val", method=w.method
            ),
            "train_descriptions": paths.fill(
                paths.DESCRIPTIONS, **desc, split="train", method="base"
            ),
            **model_inputs(config, "llms", w.llm),
        }

    def score_params(w) -> dict[str, Any]:
        return {"format": dataset(w.dataset).format, **question_files(w.dataset, "val")}

    return {
        "download": Stage(
            stages.Download,
            {"file": paths.DOWNLOAD},
            lambda w: {
                "manifest": paths.MANIFEST,
                "name": w.archive,
                "retries": config["data"]["retries"],
                "timeout": config["data"]["timeout"],
                "mirror": config["data"]["mirrors"].get(archive_mirror_key(w.archive)),
            },
        ),
        "extract": Stage(
            stages.Extract,
            {"done": paths.EXTRACTED},
            lambda w: {"into": f"{paths.RESOURCES}/{roots[w.archive]}", "manifest": paths.MANIFEST},
            lambda w: {"archive": paths.fill(paths.DOWNLOAD, archive=w.archive)},
        ),
        "make_demo": Stage(
            stages.MakeDemo,
            {"done": paths.DEMO_DONE},
            lambda w: {"root": paths.DEMO_ROOT, **config["demo"]},
        ),
        "prepare_collection": Stage(
            stages.PrepareCollection,
            {"images": paths.IMAGES, "captions": paths.CAPTIONS},
            lambda w: {
                "image_dir": f"{paths.RESOURCES}/{collection(w.collection).root}/"
                f"{collection(w.collection).images}",
                "captions_json": f"{paths.RESOURCES}/{collection(w.collection).root}/"
                f"{collection(w.collection).captions}",
            },
            lambda w: {"sources": collection_sources(w.collection)},
        ),
        "prepare_questions": Stage(
            stages.PrepareQuestions,
            {"questions": paths.QUESTIONS},
            lambda w: {"format": dataset(w.dataset).format, **question_files(w.dataset, w.split)},
            lambda w: {"sources": dataset_sources(w.dataset)},
        ),
        "extract_features": Stage(
            stages.ExtractFeatures,
            {"features": paths.IMAGE_FEATURES, "skips": paths.SKIPS},
            lambda w: {
                "encoder": config["encoders"][w.encoder],
                **{k: f[k] for k in ("batch_size", "draft", "dtype", "precision", "device")},
                **{k: f[k] for k in ("max_skip_fraction", "max_pixels")},
            },
            lambda w: {"images": paths.fill(paths.IMAGES, collection=w.collection)},
            threads_field="workers",  # rule threads: features.workers, capped by --cores
        ),
        "extract_question_features": Stage(
            stages.ExtractTextFeatures,
            {"features": paths.QUESTION_FEATURES},
            lambda w: {
                "encoder": config["encoders"][w.encoder],
                "id_column": "question_id",
                "text_column": "question",
                **{k: f[k] for k in ("dtype", "precision", "device")},
            },
            lambda w: {"table": paths.fill(paths.QUESTIONS, dataset=w.dataset, split=w.split)},
        ),
        "build_index": Stage(
            stages.BuildIndex,
            {"index": paths.INDEX, "meta": paths.INDEX_META},
            lambda w: {"params": config["index"]},
            lambda w: {
                "features": paths.fill(
                    paths.IMAGE_FEATURES, collection=w.collection, encoder=w.encoder
                )
            },
        ),
        "make_tiny_vlm": Stage(
            stages.MakeTinyVlm,
            {"config": paths.TINY_MODEL},
            lambda w: {"arch": tiny_model_arch(config, w.name), "seed": 0},
        ),
        "describe": Stage(
            stages.Describe,
            {"table": paths.SHARD, "ledger": paths.SHARD_LEDGER},
            describe_params,
            describe_inputs,
        ),
        "merge_descriptions": Stage(
            stages.MergeDescriptions,
            {
                "table": paths.DESCRIPTIONS,
                "ledger": paths.DESCRIPTIONS_LEDGER,
                "export": paths.DESCRIPTIONS_EXPORT,
            },
            lambda w: {},
            lambda w: {
                "tables": shard_files(paths.SHARD)(w),
                "ledgers": shard_files(paths.SHARD_LEDGER)(w),
            },
        ),
        "gallery": Stage(
            stages.Gallery,
            {"page": paths.GALLERY},
            lambda w: {
                "n_images": d["gallery"],
                "title": f"{w.dataset} val: {w.method} loops of {w.vlm}",
            },
            lambda w: {
                "descriptions": paths.fill(
                    paths.DESCRIPTIONS, dataset=w.dataset, split="val", vlm=w.vlm, method=w.method
                ),
                "images": paths.fill(
                    paths.IMAGES, collection=dataset(w.dataset).splits["val"].collection
                ),
                "retrieval_images": paths.fill(
                    paths.IMAGES, collection=retrieval_collection(w.dataset)
                ),
            },
        ),
        "pica": Stage(
            stages.Pica,
            {
                "answers": [paths.ANSWERS.replace("{k}", str(k)) for k in loops],
                "ledger": paths.PICA_LEDGER,
                "coverage": paths.COVERAGE,
            },
            lambda w: {
                "llm": config["llms"][w.llm],
                "settings": {k: p[k] for k in ("n_shot", "n_ensemble", "max_tokens", "join")},
                "format": dataset(w.dataset).format,
                "loops": loops,
                "journal": paths.fill(
                    paths.PICA_JOURNAL, dataset=w.dataset, vlm=w.vlm, method=w.method, llm=w.llm
                ),
                "encoder": config["encoders"][pica_encoder(config)],
            },
            pica_inputs,
        ),
        "score": Stage(
            stages.Score,
            {"scores": paths.SCORES},
            score_params,
            lambda w: {
                "answers": paths.fill(paths.ANSWERS, **dict(w.items())),
                "coverage": paths.fill(
                    paths.COVERAGE, dataset=w.dataset, vlm=w.vlm, method=w.method, llm=w.llm
                ),
                "sources": dataset_sources(w.dataset),
            },
        ),
        "summarize": Stage(
            stages.Summarize,
            {"summary": paths.SUMMARY_JSON, "plot": paths.SUMMARY_PNG},
            lambda w: {
                "runs": score_runs(config, w.dataset),
                "title": (
                    f"{w.dataset}: random-weight demo models (smoke run, numbers are meaningless)"
                    if w.dataset == "demo"
                    else f"{w.dataset} val: PICa accuracy by number of descriptions"
                ),
            },
            lambda w: {
                "scores": [
                    paths.fill(
                        paths.SCORES,
                        **{k: r[k] for k in ("dataset", "vlm", "method", "llm")},
                        k=r["loop"],
                    )
                    for r in score_runs(config, w.dataset)
                ]
            },
        ),
    }
