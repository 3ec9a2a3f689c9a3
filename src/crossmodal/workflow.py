"""Path scheme and target lists for the Snakefile.

The rules only wire files together; this module answers "which files exist for this config"
from the data registry, so the rules never hard-code a data set.
"""

from __future__ import annotations

import functools
from typing import Any

from crossmodal.data.registry import COLLECTIONS, DATASETS, collection, dataset

RESOURCES = "resources"
RESULTS = "results"
MANIFEST = f"{RESOURCES}/manifests/downloads.json"
DEMO_DONE = f"{RESOURCES}/demo/.generated.json"


def _archive_owners():
    """(archive file name, the collection or dataset it belongs to) for every archive."""
    for owner in (*COLLECTIONS.values(), *DATASETS.values()):
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


def extracted_marker(archive: str) -> str:
    return f"{RESOURCES}/.extracted/{archive}.json"


def _sources(archives: tuple[str, ...]) -> list[str]:
    """Markers that prove a collection's or dataset's files are in place."""
    return [extracted_marker(a) for a in archives] if archives else [DEMO_DONE]


def collection_sources(name: str) -> list[str]:
    return _sources(collection(name).archives)


def dataset_sources(name: str) -> list[str]:
    return _sources(dataset(name).archives)


def collection_paths(name: str) -> dict[str, str]:
    coll = collection(name)
    base = f"{RESOURCES}/{coll.root}"
    return {"image_dir": f"{base}/{coll.images}", "captions": f"{base}/{coll.captions}"}


def question_paths(name: str, split: str) -> dict[str, str]:
    ds = dataset(name)
    s = ds.splits[split]
    base = f"{RESOURCES}/{ds.root}"
    return {
        "format": ds.format,
        "questions": f"{base}/{s.questions}",
        "annotations": f"{base}/{s.annotations}" if s.annotations else "",
    }


def collections_for(datasets: list[str]) -> list[str]:
    """Image collections the configured datasets' splits draw on, in a stable order."""
    names = {s.collection for d in datasets for s in dataset(d).splits.values()}
    return sorted(names)


def optional_arg(flag: str, value: str | None) -> str:
    """``--flag 'value'`` shell-quoted, or nothing when the value is empty."""
    import shlex

    return f"{flag} {shlex.quote(str(value))}" if value else ""


def json_arg(obj: Any) -> str:
    """Compact, key-sorted JSON for passing a config block on a command line."""
    import json

    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def encoder_spec_json(config: dict[str, Any], name: str) -> str:
    try:
        return json_arg(config["encoders"][name])
    except KeyError:
        raise KeyError(f"encoder {name!r} is not configured under 'encoders'") from None


GENERATION_KEYS = (
    "max_tokens",
    "temperature",
    "top_p",
    "system_prompt",
    "image_labels",
    "min_sentence_words",
)


def describe_settings(config: dict[str, Any], vlm: str, method: str, split: str) -> dict:
    """DescribeSettings for one (vlm, method, split): the VLM's sampling + the describe block."""
    spec = config["vlms"][vlm]
    d = config["describe"]
    settings = {k: spec[k] for k in GENERATION_KEYS if k in spec}
    settings.update(
        method=method,
        n_descriptions=d["train_descriptions"] if split == "train" else d["n_descriptions"],
        seed=d["seed"],
        n_reference_captions=d["n_reference_captions"],
        reuse_first_references=d["reuse_first_references"],
    )
    return settings


def generator_spec(config: dict[str, Any], vlm: str) -> dict:
    """The backend part of a VLM entry (sampling settings travel in the describe settings)."""
    return {k: v for k, v in config["vlms"][vlm].items() if k not in GENERATION_KEYS}


def retrieval_collection(name: str) -> str:
    """ReCoD retrieves from the dataset's training image collection (COCO train)."""
    return dataset(name).splits["train"].collection


def describe_inputs(config: dict[str, Any], ds: str, split: str, vlm: str, method: str) -> dict:
    coll = dataset(ds).splits[split].collection
    inputs = {
        "images": f"{RESULTS}/data/{coll}/images.parquet",
        "questions": f"{RESULTS}/data/{ds}/{split}/questions.parquet",
    }
    inputs.update(zip(["model"], model_inputs(config, "vlms", vlm), strict=False))
    if method != "base":
        rc, enc = retrieval_collection(ds), config["features"]["encoder"]
        inputs.update(
            index=f"{RESULTS}/index/{rc}/{enc}.faiss",
            retrieval_images=f"{RESULTS}/data/{rc}/images.parquet",
            retrieval_captions=f"{RESULTS}/data/{rc}/captions.parquet",
        )
    return inputs


def tiny_vlm_arch(config: dict[str, Any], folder: str) -> str:
    for spec in [*config["vlms"].values(), *config["llms"].values()]:
        if spec.get("tiny") and spec["model"].rstrip("/") == folder:
            return spec["tiny"]
    raise KeyError(f"no tiny VLM is configured with model folder {folder!r}")


def pica_loops(config: dict[str, Any]) -> list[int]:
    return config["pica"]["loops"] or list(range(1, config["describe"]["n_descriptions"] + 1))


def model_inputs(config: dict[str, Any], section: str, name: str) -> list[str]:
    spec = config[section][name]
    return [f"{spec['model']}/config.json"] if spec.get("tiny") else []


def pica_inputs(config: dict[str, Any], ds: str, vlm: str, method: str, llm: str) -> dict:
    enc = config["features"]["encoder"]
    d = dataset(ds)
    vc, tc = d.splits["val"].collection, d.splits["train"].collection
    base = f"{RESULTS}/{ds}"
    inputs = {
        "val_questions": f"{RESULTS}/data/{ds}/val/questions.parquet",
        "train_questions": f"{RESULTS}/data/{ds}/train/questions.parquet",
        "val_question_features": f"{RESULTS}/features/{ds}/val/questions.{enc}.parquet",
        "train_question_features": f"{RESULTS}/features/{ds}/train/questions.{enc}.parquet",
        "val_image_features": f"{RESULTS}/features/{vc}/{enc}.parquet",
        "train_image_features": f"{RESULTS}/features/{tc}/{enc}.parquet",
        "val_descriptions": f"{base}/val/descriptions/{vlm}/{method}.parquet",
        "train_descriptions": f"{base}/train/descriptions/{vlm}/base.parquet",
    }
    inputs.update(zip(["model"], model_inputs(config, "llms", llm), strict=False))
    return inputs


def config_hash(config: dict[str, Any], ds: str, vlm: str, method: str, llm: str) -> str:
    """Hash of every setting that shapes one (dataset, vlm, method, llm) result."""
    import hashlib

    relevant = {
        "dataset": ds,
        "method": method,
        "encoder": config["encoders"][config["features"]["encoder"]],
        "features": config["features"],
        "index": config["index"],
        "vlm": config["vlms"][vlm],
        "describe": config["describe"],
        "llm": config["llms"][llm],
        "pica": config["pica"],
        "demo": config["demo"],
    }
    return hashlib.sha256(json_arg(relevant).encode()).hexdigest()[:16]


def score_runs(config: dict[str, Any], ds: str) -> list[dict[str, Any]]:
    runs = []
    for vlm in config["describe"]["vlms"]:
        for method in config["describe"]["methods"]:
            for llm in config["pica"]["llms"]:
                h = config_hash(config, ds, vlm, method, llm)
                for k in pica_loops(config):
                    runs.append(
                        {
                            "dataset": ds,
                            "vlm": vlm,
                            "method": method,
                            "loop": k,
                            "llm": llm,
                            "config_hash": h,
                            "score": f"{RESULTS}/{ds}/val/scores/{vlm}/{method}/loop{k}/{llm}.json",
                        }
                    )
    return runs


def summary_targets(config: dict[str, Any]) -> list[str]:
    return [f"{RESULTS}/{ds}/acc.json" for ds in config["datasets"]]


def official_files(ds: str) -> dict[str, str]:
    """The raw official question/annotation files of a dataset's val split (for scoring)."""
    paths = question_paths(ds, "val")
    return {"questions": paths["questions"], "annotations": paths["annotations"]}


# Source files each stage's output depends on, relative to src/crossmodal. A stage's rule takes
# their hash as a parameter, so editing a stage's code reruns that stage (and what follows).
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "demo": ("data/demo.py", "io.py"),
    "prepare": ("data/prepare.py", "data/registry.py", "io.py"),
    "features": ("encoders", "features.py", "images.py", "io.py"),
    "index": ("index.py", "features.py"),
    "describe": ("generation", "recod", "io.py", "index.py", "encoders"),
    "pica": ("vqa/pica.py", "vqa/stage.py", "generation", "io.py", "features.py", "encoders"),
    "score": ("vqa/vqa_eval.py", "vqa/normalize.py", "vqa/aokvqa_eval.py"),
    "summarize": ("summary.py",),
}


@functools.cache
def code_version(stage: str, src: str) -> str:
    """Hash of the source files behind ``stage`` under ``src`` (this checkout's src/).

    Cached: the DAG asks once per job, the files do not change during one Snakemake run."""
    import hashlib
    from pathlib import Path

    root = Path(src) / "crossmodal"
    files: list[Path] = []
    for rel in STAGE_CODE[stage]:
        p = root / rel
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]
