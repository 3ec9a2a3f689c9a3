"""Checks that run when the DAG is built, before any job: what would otherwise fail hours in.

Each problem names the config key and a fix. The schema and cross-references are checked by
``crossmodal.config.validate_config``; this adds what depends on the machine and the backends:
the API keys the configured models will need (read from the environment, never stored), and
what each configured stage needs from its backend's capabilities.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from crossmodal.config import ConfigError
from crossmodal.generation.registry import capability_problems

log = logging.getLogger(__name__)


def key_variable(spec: Mapping[str, Any]) -> str | None:
    """The environment variable a model entry's backend reads its key from, if it needs one."""
    if spec["backend"] == "anthropic":
        return "ANTHROPIC_API_KEY"
    if spec["backend"] == "openai" and not spec.get("base_url"):
        return spec["api_key_env"]
    return None


def missing_keys(config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> list[str]:
    """A line per configured model whose key variable is unset."""
    problems = []
    for section, stage in (("vlms", "describe"), ("llms", "pica")):
        for name in config[stage]["vlms" if stage == "describe" else "llms"]:
            var = key_variable(config[section][name])
            if var and not environ.get(var):
                problems.append(
                    f"{section}.{name} (in {stage}.{section}) needs {var}: export it before "
                    f"running, or remove {name} from {stage}.{section}"
                )
    return problems


def preflight(config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> list[str]:
    """Raise ConfigError listing every problem; return the notes (documented fallbacks)."""
    errors, notes = capability_problems(dict(config))
    errors += missing_keys(config, environ)
    if errors:
        raise ConfigError("the configured stages cannot run:\n  " + "\n  ".join(errors))
    for note in notes:
        log.warning(note)
    return notes
