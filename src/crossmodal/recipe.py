"""Reproduction recipes: everything needed to replay a target exactly, and a verifier.

``export`` records the resolved config (defaults filled), the code commit and whether the
checkout was dirty, installed package versions, model identities (hub revisions where the hub
answers, content hashes for local folders), data checksums, and the sha256 of every output in
the target's DAG, with the stages whose bytes are not reproducible marked and explained.
``verify`` recomputes the hashes after a replay and reports each output as equal or different.
Secrets never enter a recipe: only the *names* of key variables are part of a config.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from crossmodal.config import validate_config
from crossmodal.data.download import file_digest
from crossmodal.errors import CrossmodalError
from crossmodal.io import read_json, write_json

FORMAT = "crossmodal-recipe/1"


def sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def dag_outputs(snakefile: Path, configfile: Path, target: str, workdir: Path) -> list[dict]:
    """(file, rule) for every output in the target's DAG, from ``snakemake --summary``."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(snakefile),
        "--configfile",
        str(configfile),
        "--directory",
        str(workdir),
        "--summary",
        "--cores",
        "1",
        target,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CrossmodalError(f"snakemake --summary failed:\n{proc.stderr[-2000:]}")
    rows = []
    lines = [line for line in proc.stdout.splitlines() if "\t" in line]
    for line in lines[1:]:  # header: output_file date rule log-file(s) status plan
        cols = line.split("\t")
        rows.append({"file": cols[0], "rule": cols[2]})
    return rows


ACCOUNTING = (
    "run accounting, not a result: requests sent and answered from the journal "
    "depend on interruptions and resumes"
)


def nondeterminism(rule: str, config: dict[str, Any], file: str) -> str | None:
    """Why a rule's bytes may differ between faithful replays, or None if they should not."""
    if file.endswith(".ledger.json"):
        return ACCOUNTING

    def backend_of(section: str, name: str) -> str:
        return config.get(section, {}).get(name, {}).get("backend", "")

    parts = file.split("/")
    if rule == "describe" and len(parts) > 5:
        b = backend_of("vlms", parts[4])
        if b == "anthropic":
            return "the Anthropic API takes no seed"
        if b in ("vllm", "openai"):
            return "served generation batches requests dynamically (GPU kernels, batch order)"
    if rule in ("pica", "score", "summarize"):
        llms = config.get("pica", {}).get("llms", [])
        vlms = config.get("describe", {}).get("vlms", [])
        served = [n for n in llms if backend_of("llms", n) in ("vllm", "openai", "anthropic")]
        served += [n for n in vlms if backend_of("vlms", n) in ("vllm", "openai", "anthropic")]
        if served:
            return f"depends on served or API generation ({', '.join(sorted(set(served)))})"
    if rule.startswith("dialog_") and rule not in ("dialog_prepare", "dialog_photos"):
        from crossmodal.encoders.base import resolve_device

        llm = config.get("dialog", {}).get("llm")
        b = backend_of("llms", llm) if llm else ""
        if b == "anthropic":
            return "descriptors from the Anthropic API, which takes no seed"
        if b in ("vllm", "openai"):
            return "descriptors from served generation (GPU kernels, dynamic batches)"
        device = config.get("dialog", {}).get("train", {}).get("device", "auto")
        if rule != "dialog_describe" and resolve_device(device).type == "cuda":
            return "on GPUs, bf16 training and kernels are not bit-reproducible"
    if rule in ("build_index",) and config.get("index", {}).get("kind") != "flat":
        return "approximate index construction is multi-threaded"
    if rule in ("cusa_image_teacher", "cusa_text_teacher", "cusa_train", "itr_scores"):
        from crossmodal.encoders.base import resolve_device

        if (
            resolve_device(config.get("cusa", {}).get("train", {}).get("device", "auto")).type
            == "cuda"
        ):
            return "on GPUs, training and fp16 kernels are not bit-reproducible"
    if rule.startswith("extract_"):
        from crossmodal.encoders.base import resolve_device

        if resolve_device(config.get("features", {}).get("device", "auto")).type == "cuda":
            return "on a GPU, fp16 kernels may differ between devices and library versions"
    return None


def _content_sha256(path: Path) -> str:
    """Hash of a local model: a file's bytes, or a folder's file names and bytes."""
    if path.is_file():
        return sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256(f).encode())
    return h.hexdigest()


def model_identities(config: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Every configured model with what pins it: hub revision, local content hash, or tag."""
    out: dict[str, Any] = {}
    for section in ("encoders", "vlms", "llms"):
        for name, spec in config.get(section, {}).items():
            rec: dict[str, Any] = {"spec": spec}
            model = spec.get("model")
            local = (workdir / model) if model else None
            if spec.get("backend") == "tiny":
                rec["pinned_by"] = "seeded random weights built from the packaged config"
            elif local is not None and local.is_dir():
                rec["local_content_sha256"] = _content_sha256(local)
            elif spec.get("backend") in ("anthropic", "openai") and not spec.get("base_url"):
                rec["pinned_by"] = "API model name (the provider does not expose weights)"
            else:
                rec.update(_hub_revision(model, spec.get("revision")))
            out[f"{section}.{name}"] = rec
    for kind, entries in config.get("cusa", {}).get("teachers", {}).items():
        for name, spec in entries.items():
            entry = spec.get("entry", spec)
            model = entry.get("model") or entry.get("path")
            rec = {"spec": spec}
            if model and (workdir / model).exists():
                rec["local_content_sha256"] = _content_sha256(workdir / model)
            elif entry.get("backend") == "tiny":
                rec["pinned_by"] = "seeded random weights built from the packaged config"
            elif entry.get("backend") == "open_clip":
                rec["pinned_by"] = "open_clip pretrained tag"
            else:
                rec.update(_hub_revision(model, entry.get("revision")))
            out[f"cusa.teachers.{kind}.{name}"] = rec
    return out


def _hub_revision(model: str | None, revision: str | None) -> dict[str, Any]:
    if not model or "/" not in model:
        return {"pinned_by": "open_clip pretrained tag", "tag": model}
    try:
        from huggingface_hub import model_info

        info = model_info(model, revision=revision, timeout=10)
        return {"hub_revision": info.sha}
    except Exception as exc:  # offline, gated, or not on the hub: say so, don't guess
        return {"hub_revision": None, "unresolved": f"{type(exc).__name__}: {exc}"[:200]}


def _git(workdir: Path, *args: str) -> str | None:
    proc = subprocess.run(["git", "-C", str(workdir), *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def export(
    target: str, configfile: Path, out: Path, *, snakefile: Path, workdir: Path, schema: Path
) -> dict[str, Any]:
    config = validate_config(yaml.safe_load(configfile.read_text()) or {}, schema)
    outputs = []
    for row in dag_outputs(snakefile, configfile, target, workdir):
        path = workdir / row["file"]
        if not path.is_file():
            raise CrossmodalError(f"{row['file']} does not exist: run the target before export")
        reason = nondeterminism(row["rule"], config, row["file"])
        outputs.append(
            {
                "file": row["file"],
                "rule": row["rule"],
                "sha256": sha256(path),
                "deterministic": reason is None,
                "why_not": reason,
            }
        )
    repo = snakefile.parent
    manifest = repo / "resources" / "manifests"
    recipe = {
        "format": FORMAT,
        "target": target,
        "config": config,
        "code": {
            "commit": _git(repo, "rev-parse", "HEAD"),
            "dirty": bool(_git(repo, "status", "--porcelain", "--untracked-files=no")),
        },
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {
            d.metadata["Name"]: d.version
            for d in sorted(
                importlib.metadata.distributions(), key=lambda d: d.metadata["Name"].lower()
            )
        },
        "models": model_identities(config, workdir),
        "data": {p.name: read_json(p) for p in sorted(manifest.glob("*.json"))},
        "outputs": sorted(outputs, key=lambda o: o["file"]),
    }
    write_json(out, recipe)
    return recipe


def write_config(recipe_path: Path, out: Path) -> None:
    """The recipe's resolved config as a YAML file to replay with ``--configfile``."""
    recipe = read_json(recipe_path)
    out.write_text(yaml.safe_dump(recipe["config"], sort_keys=True))


def verify(recipe_path: Path, workdir: Path) -> tuple[list[dict[str, Any]], bool]:
    """Recompute every output's sha256; (report rows, ok). ok is False on any difference in a
    deterministic output or any missing output."""
    recipe = read_json(recipe_path)
    if recipe.get("format") != FORMAT:
        raise CrossmodalError(f"{recipe_path}: not a {FORMAT} file")
    rows, ok = [], True
    for o in recipe["outputs"]:
        path = workdir / o["file"]
        if not path.is_file():
            status = "missing"
            ok = False
        elif sha256(path) == o["sha256"]:
            status = "equal"
        else:
            status = "different"
            if o["deterministic"]:
                ok = False
        rows.append(
            {
                "file": o["file"],
                "status": status,
                "expected_to_match": o["deterministic"],
                "why_not": o.get("why_not"),
            }
        )
    return rows, ok


def workflow_root(directory: Path) -> Path:
    """The checkout holding the Snakefile: the working directory's, else this package's."""
    if (directory / "Snakefile").is_file():
        return directory.resolve()
    return Path(__file__).resolve().parents[2]


def export_target(target: str, configfile: Path, out: Path, directory: Path) -> dict[str, Any]:
    """``crossmodal recipe export``: the recipe of ``target`` as run in ``directory``."""
    import logging

    root = workflow_root(directory)
    r = export(
        target,
        configfile.resolve(),
        out,
        snakefile=root / "Snakefile",
        workdir=directory.resolve(),
        schema=root / "workflow" / "schemas" / "config.schema.yaml",
    )
    logging.getLogger(__name__).info(
        "recipe for %s: %d outputs -> %s", target, len(r["outputs"]), out
    )
    return r


def verify_and_report(recipe_path: Path, workdir: Path) -> None:
    """``crossmodal recipe verify``: one line per output, a count, an error on a difference."""
    rows, ok = verify(recipe_path, workdir)
    for r in rows:
        note = "" if r["expected_to_match"] else f"  (not reproducible: {r['why_not']})"
        print(f"{r['status']:9s} {r['file']}{note}")
    counts = {s: sum(r["status"] == s for r in rows) for s in ("equal", "different", "missing")}
    print(f"{counts['equal']} equal, {counts['different']} different, {counts['missing']} missing")
    if not ok:
        raise CrossmodalError("replay differs from the recipe (see the list above)")
