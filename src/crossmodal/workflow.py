"""Path scheme and target lists for the Snakefile.

The rules only wire files together; this module answers "which files exist for this config"
from the data registry, so the rules never hard-code a data set.
"""

from __future__ import annotations

from typing import Any

from crossmodal.data.registry import COLLECTIONS, DATASETS, collection, dataset

RESOURCES = "resources"
RESULTS = "results"
MANIFEST = f"{RESOURCES}/manifests/downloads.json"
DEMO_DONE = f"{RESOURCES}/demo/.generated.json"


def archive_roots() -> dict[str, str]:
    """Archive file name -> resources-relative folder it extracts into."""
    roots: dict[str, str] = {}
    for coll in COLLECTIONS.values():
        for name in coll.archives:
            roots[name] = coll.root
    for ds in DATASETS.values():
        for name in ds.archives:
            roots[name] = ds.root
    return roots


def archive_mirror_key(name: str) -> str:
    for coll in COLLECTIONS.values():
        if name in coll.archives:
            return coll.mirror_key
    for ds in DATASETS.values():
        if name in ds.archives:
            return ds.mirror_key
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


def data_targets(config: dict[str, Any]) -> list[str]:
    """Every prepared table for the configured datasets."""
    out = []
    for coll in collections_for(config["datasets"]):
        out += [f"{RESULTS}/data/{coll}/images.parquet", f"{RESULTS}/data/{coll}/captions.parquet"]
    for name in config["datasets"]:
        for split in dataset(name).splits:
            out.append(f"{RESULTS}/data/{name}/{split}/questions.parquet")
    return out


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


def feature_targets(config: dict[str, Any]) -> list[str]:
    """Image features + index per collection, question features per split, for features.encoder."""
    enc = config["features"]["encoder"]
    out = []
    for coll in collections_for(config["datasets"]):
        out += [f"{RESULTS}/features/{coll}/{enc}.parquet", f"{RESULTS}/index/{coll}/{enc}.faiss"]
    for name in config["datasets"]:
        for split in dataset(name).splits:
            out.append(f"{RESULTS}/features/{name}/{split}/questions.{enc}.parquet")
    return out
