"""Per-rule conda environments: every rule names one; every env file parses and pins."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO

ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


def rules_and_envs():
    for path in RULE_FILES:
        text = path.read_text()
        for block in re.split(r"\n(?=rule )", text):
            m = re.match(r"rule (\w+):", block.lstrip("\n"))
            if m:
                env = re.search(r"\n    conda:\n        ENV\[\"(\w+)\"\]", block)
                by_model = re.search(r"\n    conda:\n        lambda w: model_env\(", block)
                if by_model:  # chosen per model backend: api or vllm
                    yield path.name, m.group(1), "api"
                    yield path.name, m.group(1), "vllm"
                else:
                    yield path.name, m.group(1), env.group(1) if env else None


def test_every_rule_names_an_existing_env():
    rules = list(rules_and_envs())
    assert len(rules) >= 12
    known = {p.stem for p in ENV_FILES}
    missing = [(f, r) for f, r, env in rules if env is None]
    assert not missing, f"rules without a conda env: {missing}"
    unknown = [(r, env) for _, r, env in rules if env not in known]
    assert not unknown, f"rules naming an env that has no file: {unknown}"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_file_parses_and_pins(path):
    env = yaml.safe_load(path.read_text())
    assert env["name"].startswith("crossmodal-")
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert any(d.startswith("python=") for d in conda)
    for dep in conda:
        assert re.search(r"=[0-9]", dep), f"{path.name}: conda dependency not pinned: {dep}"
    for dep in pip:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][A-Za-z0-9.+]*", dep), (
            f"{path.name}: pip dependency not pinned exactly: {dep}"
        )
