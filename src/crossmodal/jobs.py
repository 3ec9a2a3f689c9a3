"""Typed job descriptions: one declaration per stage, from which the CLI and the rules follow.

A stage is a dataclass whose fields carry a role: ``reads`` (a file the stage reads, a Snakemake
input), ``writes`` (a file it writes, a Snakemake output) or ``setting`` (everything else). The
command line of a stage is generated from its fields (``--field-name value``), the Snakemake
rule passes its named inputs and outputs by the same names, and the stage's code reads the job
object. A field name is therefore written once per stage, and a wiring mistake (a rule input
that is not a job field, a field no rule fills) fails when the DAG is built, naming both.

This module and ``crossmodal.stages`` import nothing heavy: light commands (scoring, summaries)
run in an environment without torch, and building the DAG never loads a model library.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import shlex
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from crossmodal.errors import CrossmodalError

ROLE, HELP = "role", "help"
INPUT, OUTPUT, PARAM = "input", "output", "param"
JOBS: dict[str, type[Job]] = {}


def _field(role: str, help: str, optional: bool) -> Any:
    meta = {ROLE: role, HELP: help}
    if optional:
        return dataclasses.field(default=None, metadata=meta)
    return dataclasses.field(metadata=meta)


def reads(help: str, *, optional: bool = False) -> Any:
    """A file (or list of files) the stage reads: a Snakemake input of the same name."""
    return _field(INPUT, help, optional)


def writes(help: str) -> Any:
    """A file (or list of files) the stage writes: a Snakemake output of the same name."""
    return _field(OUTPUT, help, False)


def setting(help: str, *, optional: bool = False) -> Any:
    """A setting. No default value: defaults live in the config schema only."""
    return _field(PARAM, help, optional)


class Job:
    """Base of every stage description. Subclasses are dataclasses registered with ``@job``."""

    command: ClassVar[str]
    impl: ClassVar[str]  # "module:function" that runs the job, imported only when it runs

    def run(self) -> Any:
        module, func = self.impl.split(":")
        return getattr(importlib.import_module(module), func)(self)

    @classmethod
    def names(cls, role: str) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.metadata.get(ROLE) == role]

    def argv(self) -> str:
        """The job as a shell-quoted argument string (what a rule appends to its command)."""
        return " ".join(shlex.quote(a) for a in to_args(self))

    @classmethod
    def from_rule(
        cls, inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]
    ) -> Job:
        """Build a job from a rule's named inputs and outputs and the stage's params, checking
        that together they name exactly the job's fields."""
        given = {**dict(inputs), **dict(outputs), **dict(params)}
        expected = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        unknown, missing = set(given) - expected, required - set(given)
        if unknown or missing:
            raise CrossmodalError(
                f"stage {cls.command}: rule wiring does not match the job "
                f"(not job fields: {sorted(unknown)}; job fields left empty: {sorted(missing)})"
            )
        return cls(**{k: _coerce(cls, k, v) for k, v in given.items()})


def job(command: str, impl: str) -> Callable[[type], type]:
    """Register a dataclass as the job of CLI command ``command``, run by ``impl``."""

    def register(cls: type) -> type:
        cls = dataclasses.dataclass(frozen=True, kw_only=True)(cls)
        cls.command, cls.impl = command, impl
        if command in JOBS:
            raise ValueError(f"two jobs declare the command {command!r}")
        JOBS[command] = cls
        return cls

    return register


# --- field types ------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unoptional(tp: Any) -> Any:
    """``X | None`` -> ``X``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _kind(cls: type, name: str) -> tuple[str, Any]:
    """('list', item type) | ('json', None) | ('bool', None) | ('scalar', type)."""
    tp = _unoptional(_hints(cls)[name])
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if item in (Path, int, float, str):
            return "list", item
        return "json", None
    if tp is bool:
        return "bool", None
    if tp in (Path, int, float, str):
        return "scalar", tp
    return "json", None  # dicts, nested lists: one JSON argument


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Values from Snakemake (Namedlist, str paths) into the field's declared type."""
    kind, item = _kind(cls, name)
    if value is None:
        return None
    if kind == "list":
        values = [value] if isinstance(value, str | Path) else list(value)
        return [item(v) for v in values]
    if kind == "scalar":
        return item(value)
    return value


def to_args(j: Job) -> list[str]:
    """``--field-name value`` for every field that is set (lists: several values)."""
    args: list[str] = []
    for f in dataclasses.fields(j):
        value = getattr(j, f.name)
        if value is None:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind, _ = _kind(type(j), f.name)
        if kind == "list":
            args += [flag, *map(str, value)]
        elif kind == "bool":
            args += [flag, "true" if value else "false"]
        elif kind == "json":
            args += [flag, json.dumps(value, sort_keys=True, separators=(",", ":"))]
        else:
            args += [flag, str(value)]
    return args


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text[:80]!r}") from None


def add_arguments(parser: argparse.ArgumentParser, cls: type[Job]) -> None:
    """One ``--field-name`` option per field; required unless the field may be empty."""
    for f in dataclasses.fields(cls):
        kind, item = _kind(cls, f.name)
        optional = f.default is not dataclasses.MISSING
        role = f.metadata.get(ROLE, PARAM)
        help_text = f"[{role}] {f.metadata.get(HELP, '')}"
        kwargs: dict[str, Any] = {"required": not optional, "help": help_text, "dest": f.name}
        if kind == "list":  # may be empty (a summary of no runs), but the flag is required
            kwargs.update(nargs="*", type=item)
        elif kind == "bool":
            kwargs.update(type=_bool, metavar="true|false")
        elif kind == "json":
            kwargs.update(type=_json, metavar="JSON")
        else:
            kwargs.update(type=item)
        parser.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def from_namespace(cls: type[Job], ns: argparse.Namespace) -> Job:
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})


def settings_from_dict(cls: type, values: Mapping[str, Any], what: str) -> Any:
    """``cls(**values)`` for a settings dataclass, naming missing and unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}
    missing, unknown = sorted(names - set(values)), sorted(set(values) - names)
    if missing or unknown:
        raise CrossmodalError(f"{what}: missing keys {missing}, unknown keys {unknown}")
    return cls(**values)
