"""Config validation against the workflow's JSON schema, with errors that name the key.

Three passes, all before any job starts:

1. Schema: every violation as a ``key.path: problem`` line. Entries under ``encoders``,
   ``vlms`` and ``llms`` are checked by hand: ``backend`` first, then the entry against that
   backend's definition, so a key the backend would ignore is named together with the keys
   it does read (raw ``oneOf`` / ``if-then`` errors do not say which branch was meant).
2. Defaults: every default in the schema is filled in, including those of the backend an
   entry names (``snakemake.utils.validate`` does not descend into conditional branches).
   After validation every key a stage reads is present, so code reads ``spec["key"]``.
3. References: names that must point at other entries (``describe.vlms``, ``pica.llms``,
   ``features.encoder``...) and limits that span two blocks (``pica.loops``).

``validate_config`` runs all three and raises one :class:`ConfigError` listing every problem.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from crossmodal.errors import CrossmodalError


class ConfigError(CrossmodalError):
    """The config does not match the schema, or names something that is not configured."""


Schema = dict[str, Any]
Config = dict[str, Any]

TINY_MODEL_ROOT = "resources/models"  # where rule make_tiny_vlm builds tiny models
_TINY_MODEL = re.compile(rf"^{re.escape(TINY_MODEL_ROOT)}/[^/]+$")
VLLM_ONLY_SAMPLING = ("top_k", "repetition_penalty")  # sent by openai only with vllm_extensions


def load_schema(path: str | Path) -> Schema:
    with open(path) as fh:
        return yaml.safe_load(fh)


# --- the schema's shape -------------------------------------------------------------------


def _resolve(node: Schema, schema: Schema) -> Schema:
    """Follow a local ``$ref`` (``#/$defs/name``); other nodes are returned as they are."""
    ref = node.get("$ref")
    if ref is None:
        return node
    if not ref.startswith("#/"):
        raise ConfigError(f"config schema: only local references are supported, got {ref!r}")
    target: Any = schema
    for part in ref[2:].split("/"):
        target = target[part]
    return _resolve(target, schema)


def _backend_rules(node: Schema) -> Iterator[tuple[str, Schema]]:
    """(backend, then-schema) for each ``allOf`` rule of the form ``if backend == X``."""
    for rule in node.get("allOf", []):
        backend = rule.get("if", {}).get("properties", {}).get("backend", {}).get("const")
        if backend is not None and "then" in rule:
            yield backend, rule["then"]


def backend_definitions(schema: Schema, section: str) -> dict[str, Schema]:
    """Backend name -> the definition an entry under ``section`` with that backend must match.

    Empty for a section whose entries are not dispatched on ``backend``.
    """
    extra = schema["properties"][section].get("additionalProperties")
    if not isinstance(extra, dict):
        return {}
    entry = _resolve(extra, schema)
    return {backend: _resolve(then, schema) for backend, then in _backend_rules(entry)}


def backend_sections(schema: Schema) -> list[str]:
    """Top-level sections of named entries that each pick a backend (encoders, vlms, llms)."""
    return [name for name in schema["properties"] if backend_definitions(schema, name)]


def schema_key_paths(schema: Schema) -> dict[str, set[str]]:
    """Every key the schema defines, as a dotted path, with the backends that accept it.

    Named entries appear as ``NAME`` (``vlms.NAME.top_k``); keys outside backend-dispatched
    sections map to an empty set. This is what config/README.md must document.
    """
    paths: dict[str, set[str]] = {}

    def walk(node: Schema, prefix: str, backend: str | None) -> None:
        node = _resolve(node, schema)
        for key, sub in node.get("properties", {}).items():
            path = f"{prefix}{key}"
            paths.setdefault(path, set())
            if backend is not None:
                paths[path].add(backend)
            walk(sub, f"{path}.", backend)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            entry = _resolve(extra, schema)
            rules = list(_backend_rules(entry))
            for name, then in rules:
                walk(then, f"{prefix}NAME.", name)
            if not rules:
                walk(entry, f"{prefix}NAME.", backend)

    walk(schema, "", None)
    return paths


# --- pass 1: schema ----------------------------------------------------------------------


def _dotted(*parts: Any) -> str:
    """``a.b.0.c`` from path parts; the config root itself is ``(top level)``."""
    return ".".join(str(p) for p in parts if p != "") or "(top level)"


def _format_errors(
    errors: Iterator[jsonschema.ValidationError], prefix: str, backend: str | None
) -> list[str]:
    """``key.path: problem`` lines; ``prefix`` is the path of the validated instance.

    With ``backend`` set, the instance is one entry validated against that backend's
    definition, and a stray or missing key at its top says so.
    """
    problems = []
    for err in errors:
        path = [prefix, *err.absolute_path]
        where = _dotted(*path)
        at_entry = backend is not None and len(err.absolute_path) == 0
        if err.validator == "additionalProperties":
            allowed = sorted(err.schema.get("properties", {}))
            for key in sorted(set(err.instance) - set(allowed)):
                if at_entry:
                    problem = (
                        f"not a key of the {backend!r} backend (its keys: {', '.join(allowed)})"
                    )
                else:
                    problem = f"unknown key (allowed here: {', '.join(allowed)})"
                problems.append(f"{_dotted(*path, key)}: {problem}")
        elif err.validator == "required":
            by = f" by the {backend!r} backend" if at_entry else ""
            for key in err.validator_value:
                if key not in err.instance:
                    problems.append(f"{_dotted(*path, key)}: missing (required{by})")
        elif err.validator in ("anyOf", "oneOf") and "description" in err.schema:
            # the branches' own messages say little; the key's description says what is allowed
            problems.append(
                f"{where}: {err.instance!r} is not allowed: {err.schema['description']}"
            )
        else:
            problems.append(f"{where}: {err.message}")
    return problems


def _validator(schema: Schema, node: Schema) -> jsonschema.protocols.Validator:
    """A validator for ``node`` that resolves references against the whole schema."""
    rooted = {"$defs": schema.get("$defs", {}), **node}
    return jsonschema.validators.validator_for(schema)(rooted)


def _vllm_only_problems(path: str, entry: Config, definition: Schema) -> list[str]:
    """An ``openai`` entry sends top_k / repetition_penalty only to a vLLM server."""
    if entry.get("backend") != "openai" or entry.get("vllm_extensions") is True:
        return []
    problems = []
    for key in VLLM_ONLY_SAMPLING:
        default = definition["properties"].get(key, {}).get("default")
        if key in entry and entry[key] != default:
            problems.append(
                f"{path}.{key}: the 'openai' backend sends it only to a vLLM server; set "
                f"{path}.vllm_extensions: true, or remove it (default {default!r})"
            )
    return problems


def entry_problems(schema: Schema, section: str, name: str, entry: Any) -> list[str]:
    """Problems of one named entry under ``section``: its backend, then that backend's keys."""
    path = f"{section}.{name}"
    definitions = backend_definitions(schema, section)
    choices = ", ".join(sorted(definitions))
    if not isinstance(entry, dict):
        return [f"{path}: must be a mapping with a backend key ({choices})"]
    if "backend" not in entry:
        return [f"{path}.backend: missing; choose one of {choices}"]
    backend = entry["backend"]
    if backend not in definitions:
        return [f"{path}.backend: {backend!r} is not a backend; choose one of {choices}"]
    definition = definitions[backend]
    errors = _validator(schema, definition).iter_errors(entry)
    return _format_errors(errors, path, backend) + _vllm_only_problems(path, entry, definition)


def config_problems(config: Config, schema: Schema) -> list[str]:
    """Every schema violation as ``key.path: message``, sorted by path."""
    sections = backend_sections(schema)
    validator = jsonschema.validators.validator_for(schema)(schema)
    # entries of backend sections are checked by entry_problems, which says which backend
    top = (
        err
        for err in validator.iter_errors(config)
        if not (len(err.absolute_path) >= 2 and err.absolute_path[0] in sections)
    )
    problems = _format_errors(top, "", None)
    for section in sections:
        entries = config.get(section) if isinstance(config, dict) else None
        if isinstance(entries, dict):
            for name, entry in entries.items():
                problems += entry_problems(schema, section, str(name), entry)
    return sorted(problems)


# --- pass 2: defaults --------------------------------------------------------------------


def fill_defaults(instance: Any, schema: Schema, node: Schema | None = None) -> Any:
    """Set every missing key that has a schema default, in place, and return ``instance``.

    Descends into filled and given values alike, into named entries (``additionalProperties``)
    and into the definition of the backend an entry names. Values of the wrong type are left
    alone (the schema pass reports them).
    """
    node = _resolve(schema if node is None else node, schema)
    if not isinstance(instance, dict):
        return instance
    properties = node.get("properties", {})
    for key, sub in properties.items():
        sub = _resolve(sub, schema)
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key in instance:
            fill_defaults(instance[key], schema, sub)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        for key, value in instance.items():
            if key not in properties:
                fill_defaults(value, schema, extra)
    for backend, then in _backend_rules(node):
        if instance.get("backend") == backend:
            fill_defaults(instance, schema, then)
    return instance


# --- pass 3: references ------------------------------------------------------------------


def _block(config: Config, key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _configured(config: Config, section: str) -> str:
    names = sorted(_block(config, section))
    return f"configured: {', '.join(names)}" if names else "none configured"


def _names_problems(config: Config, block: str, key: str, section: str) -> list[str]:
    """Each name in the list ``block.key`` must be an entry under ``section``."""
    names = _block(config, block).get(key)
    if not isinstance(names, list):
        return []
    known = _block(config, section)
    return [
        f"{block}.{key}.{i}: {name!r} is not configured under {section} "
        f"({_configured(config, section)})"
        for i, name in enumerate(names)
        if name not in known
    ]


def _encoder_problems(config: Config) -> list[str]:
    problems = []
    encoders = _block(config, "encoders")
    choice = _block(config, "features").get("encoder")
    if choice is None:
        problems.append(
            "features.encoder: not set; name the encoder used for retrieval and PICa "
            f"({_configured(config, 'encoders')})"
        )
    elif isinstance(choice, str) and choice not in encoders:
        problems.append(
            f"features.encoder: {choice!r} is not configured under encoders "
            f"({_configured(config, 'encoders')})"
        )
    pica_choice = _block(config, "pica").get("encoder")
    if isinstance(pica_choice, str) and pica_choice not in encoders:
        problems.append(
            f"pica.encoder: {pica_choice!r} is not configured under encoders "
            f"({_configured(config, 'encoders')}); null uses features.encoder"
        )
    return problems


def _cusa_problems(config: Config) -> list[str]:
    """CUSA's names must point somewhere once a retrieval data set is asked for."""
    from crossmodal.data.registry import ITR_DATASETS

    c = _block(config, "cusa")
    datasets = c.get("datasets") or []
    if not isinstance(datasets, list) or not datasets:
        return []
    problems = [
        f"cusa.datasets: {d!r} is not an image-text retrieval data set ({sorted(ITR_DATASETS)})"
        for d in datasets
        if d not in ITR_DATASETS
    ]
    encoders = _block(config, "encoders")
    student = c.get("student")
    if student not in encoders:
        problems.append(
            f"cusa.student: {student!r} is not configured under encoders "
            f"({_configured(config, 'encoders')})"
        )
    teachers = c.get("teachers") or {}
    for kind in ("image", "text"):
        name = c.get(f"{kind}_teacher")
        if name not in (teachers.get(kind) or {}):
            known = sorted(teachers.get(kind) or {})
            problems.append(
                f"cusa.{kind}_teacher: {name!r} is not configured under cusa.teachers.{kind} "
                f"({known or 'none configured'})"
            )
    epochs = (c.get("train") or {}).get("epochs") or {}
    problems += [
        f"cusa.train.epochs: no entry for data set {d!r}; add `{d}: N`"
        for d in datasets
        if d not in epochs
    ]
    return problems


def _cir_problems(config: Config) -> list[str]:
    """Compositional retrieval's names must point somewhere once a data set is asked for; the
    challenge's own files need the user's folder."""
    from crossmodal.data.registry import CIR_DATASETS

    c = _block(config, "cir")
    datasets = c.get("datasets") or []
    if not isinstance(datasets, list) or not datasets:
        return []
    problems = []
    mirrors = _block(_block(config, "data"), "mirrors")
    for d in datasets:
        ds = CIR_DATASETS.get(d)
        if ds is None:
            problems.append(
                f"cir.datasets: {d!r} is not a compositional retrieval data set "
                f"({sorted(CIR_DATASETS)})"
            )
        elif ds.root is None and not mirrors.get(ds.mirror):
            problems.append(
                f"cir.datasets: {d!r} needs data.mirrors.{ds.mirror}: the folder holding the "
                "challenge's files (they have no public download)"
            )
    encoders = _block(config, "encoders")
    encoder = c.get("encoder")
    if encoder not in encoders:
        problems.append(
            f"cir.encoder: {encoder!r} is not configured under encoders "
            f"({_configured(config, 'encoders')})"
        )
    elif encoders[encoder].get("backend") not in ("open_clip", "tiny"):
        problems.append(f"cir.encoder: {encoder!r} must be an open_clip or tiny encoder")
    tagger = _block(c, "tagger")
    if not tagger.get("tiny") and not tagger.get("pretrained"):
        problems.append(
            "cir.tagger.pretrained: null, and cir.tagger.tiny is false: name a hub model "
            "(distilbert-base-uncased) or set tiny: true"
        )
    return problems


def _loop_problems(config: Config) -> list[str]:
    loops = _block(config, "pica").get("loops")
    n = _block(config, "describe").get("n_descriptions")
    if not isinstance(loops, list) or not isinstance(n, int):
        return []
    return [
        f"pica.loops.{i}: {k} exceeds describe.n_descriptions ({n}); loop k reads a target's "
        "first k descriptions"
        for i, k in enumerate(loops)
        if isinstance(k, int) and k > n
    ]


def _method_problems(config: Config) -> list[str]:
    describe = _block(config, "describe")
    if describe.get("vlms") and describe.get("methods") == []:
        return [
            "describe.methods: empty while describe.vlms names VLMs; list at least one of "
            "base, recod, recod_img (or empty describe.vlms)"
        ]
    return []


def _tiny_problems(config: Config) -> list[str]:
    """A tiny model is built by rule make_tiny_vlm at resources/models/<folder>, one per folder."""
    problems = []
    archs: dict[str, tuple[str, str]] = {}  # folder -> (entry path, arch)
    for section in ("vlms", "llms"):
        for name, spec in _block(config, section).items():
            if not isinstance(spec, dict) or not spec.get("tiny"):
                continue
            path, model = f"{section}.{name}", spec.get("model")
            if not isinstance(model, str) or not _TINY_MODEL.match(model.rstrip("/")):
                problems.append(
                    f"{path}.model: {model!r} must be {TINY_MODEL_ROOT}/<folder> for a tiny "
                    f"model (rule make_tiny_vlm builds it only there)"
                )
                continue
            folder = model.rstrip("/")
            other = archs.setdefault(folder, (path, spec["tiny"]))
            if other[1] != spec["tiny"]:
                problems.append(
                    f"{path}.tiny: {spec['tiny']!r}, but {other[0]} builds a {other[1]!r} model "
                    f"in the same folder {folder}; use one architecture or another folder"
                )
    return problems


def _dataset_problems(config: Config) -> list[str]:
    from crossmodal.data.registry import DATASETS

    names = config.get("datasets")
    if not isinstance(names, list):
        return []
    return [
        f"datasets.{i}: {name!r} is not a registered data set (registered: "
        f"{', '.join(sorted(DATASETS))}; add one in src/crossmodal/data/registry.py)"
        for i, name in enumerate(names)
        if name not in DATASETS
    ]


def reference_problems(config: Config) -> list[str]:
    """Names that point nowhere and limits across blocks, as ``key.path: problem`` lines.

    Expects defaults filled (``fill_defaults``); keys of the wrong type are skipped here
    because the schema pass reports them.
    """
    problems = [
        *_dataset_problems(config),
        *_names_problems(config, "describe", "vlms", "vlms"),
        *_names_problems(config, "pica", "llms", "llms"),
        *_encoder_problems(config),
        *_loop_problems(config),
        *_method_problems(config),
        *_tiny_problems(config),
        *_cusa_problems(config),
        *_cir_problems(config),
    ]
    return sorted(problems)


# --- all three ---------------------------------------------------------------------------


def validate_config(config: Config, schema_path: str | Path) -> Config:
    """Raise ConfigError naming every bad key; otherwise fill defaults in place and return it.

    On success every key of the schema is present, with the defaults of the backend each
    entry under encoders, vlms and llms names.
    """
    schema = load_schema(schema_path)
    problems = config_problems(config, schema)
    problems += reference_problems(fill_defaults(copy.deepcopy(config), schema))
    if problems:
        problems.sort()
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return fill_defaults(config, schema)


# The schema of this checkout: defaults live there and nowhere else.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


@functools.cache
def _schema() -> Schema:
    if not SCHEMA_PATH.is_file():
        raise ConfigError(f"{SCHEMA_PATH}: the config schema is missing (run from a checkout)")
    return load_schema(SCHEMA_PATH)


def with_backend_defaults(section: str, entry: Config) -> Config:
    """A copy of a model entry (``vlms`` / ``llms`` / ``encoders``) with every default of its
    backend filled from the schema, for code handed an entry that did not pass through
    :func:`validate_config` (a library call, a test): defaults are never written in code."""
    definitions = backend_definitions(_schema(), section)
    backend = entry.get("backend")
    if backend not in definitions:
        raise ConfigError(
            f"{section}: backend {backend!r} unknown; choose one of {sorted(definitions)}"
        )
    return fill_defaults(copy.deepcopy(dict(entry)), _schema(), definitions[backend])
