"""Config validation against the workflow's JSON schema, with errors that name the key.

``snakemake.utils.validate`` fills defaults from the schema; before it runs, every violation is
collected and reported as ``key.path: problem`` lines, so a typo or a bad value stops the run
before any job starts and says exactly where to look.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import yaml

from crossmodal.errors import CrossmodalError


class ConfigError(CrossmodalError):
    """The config does not match the schema."""


def load_schema(path: str | Path) -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def config_problems(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """Every schema violation as ``key.path: message``, sorted by path."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = []
    for err in validator.iter_errors(config):
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        if err.validator == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            allowed = ", ".join(sorted(err.schema.get("properties", {})))
            for key in extra:
                key_path = f"{where}.{key}" if err.absolute_path else key
                problems.append(f"{key_path}: unknown key (allowed here: {allowed})")
        else:
            problems.append(f"{where}: {err.message}")
    return sorted(problems)


def validate_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Raise ConfigError naming every bad key; otherwise fill defaults in place and return it."""
    from snakemake.utils import validate

    problems = config_problems(config, load_schema(schema_path))
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    validate(config, str(schema_path), set_default=True)
    return config
