"""Config validation: defaults filled from the schema, bad keys named before any job runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from crossmodal.config import ConfigError, validate_config

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name):
    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate_config(config, SCHEMA)
    assert config["data"]["retries"] >= 0  # defaults filled in


def test_defaults_are_filled():
    config = validate_config({"datasets": ["demo"]}, SCHEMA)
    assert config["demo"]["n_train"] == 200
    assert config["data"]["mirrors"]["coco"] is None


@pytest.mark.parametrize(
    "config,needle",
    [
        ({"datasets": ["demo"], "demoo": {}}, "demoo: unknown key"),
        ({"datasets": ["demo"], "demo": {"n_trian": 3}}, "demo.n_trian: unknown key"),
        (
            {"datasets": ["demo"], "demo": {"n_train": "many"}},
            "demo.n_train: 'many' is not of type",
        ),
        ({"datasets": ["vqa2"]}, "datasets.0: 'vqa2' is not one of"),
        ({"datasets": ["demo"], "data": {"timeout": 0}}, "data.timeout:"),
    ],
)
def test_bad_config_is_rejected_naming_the_key(config, needle):
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    assert needle in str(info.value)


def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [demo]\ndemo: {seed: 0, n_val: -1}\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "1",
            "--configfile",
            str(bad),
            "--directory",
            str(tmp_path),
            "--snakefile",
            str(REPO / "Snakefile"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode != 0
    assert "demo.n_val" in proc.stdout + proc.stderr
    assert "rule " not in proc.stdout  # nothing was scheduled
