"""Stage jobs for tests, with every setting taken from the config schema's defaults.

Tests call stages the way the rules do: through their job objects. Settings come from a
validated config (the demo's, with changes), never from defaults written in a test.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from crossmodal import stages, workflow
from crossmodal.config import validate_config

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def demo_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """The demo config with ``sections`` merged in (one level deep), validated and filled."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    for name, changes in sections.items():
        config[name] = {**config.get(name, {}), **copy.deepcopy(changes)}
    return validate_config(config, SCHEMA)


def describe_settings(
    method: str = "recod", vlm: dict[str, Any] | None = None, **describe: Any
) -> dict[str, Any]:
    """A describe stage's settings: the demo VLM's entry updated by ``vlm``, the describe block
    by ``describe``."""
    entry = {**demo_config()["vlms"]["tiny_llava"], **(vlm or {})}
    config = demo_config(vlms={"tiny_llava": entry}, describe=describe)
    return workflow.describe_settings(config, "tiny_llava", method, "val")


def pica_settings(**changes: Any) -> dict[str, Any]:
    p = demo_config(pica=changes)["pica"]
    return {k: p[k] for k in ("n_shot", "n_ensemble", "max_tokens", "join")}


def write_targets(
    folder: Path,
    targets: list[tuple[int, str]],
    skipped: dict[int, str] | None = None,
) -> dict[str, Path]:
    """images.parquet, questions.parquet (one question per image) and a skip report."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [i for i, _ in targets]
    pq.write_table(
        pa.table({"image_id": ids, "path": [p for _, p in targets]}), folder / "images.parquet"
    )
    pq.write_table(
        pa.table({"question_id": [i * 10 for i in ids], "image_id": ids}),
        folder / "questions.parquet",
    )
    report = {
        "skipped": [
            {"image_id": i, "path": dict(targets)[i], "reason": r}
            for i, r in (skipped or {}).items()
        ]
    }
    (folder / "skips.json").write_text(json.dumps(report))
    return {
        "images": folder / "images.parquet",
        "questions": folder / "questions.parquet",
        "skips": folder / "skips.json",
    }


def describe_job(
    folder: Path,
    vlm: dict[str, Any],
    settings: dict[str, Any],
    targets: list[tuple[int, str]],
    **fields: Any,
) -> stages.Describe:
    """A one-shard describe job over ``targets`` writing into ``folder``."""
    files = write_targets(folder / "inputs", targets, fields.pop("skipped", None))
    values = dict(
        **files,
        table=folder / "d.parquet",
        ledger=folder / "ledger.json",
        vlm=vlm,
        settings=settings,
        journal=folder / "journal",
        chunk=64,
        shard=0,
        shards=1,
    )
    values.update(fields)
    return stages.Describe(**values)
