"""Config validation: every default filled from the schema (per backend), bad keys and dangling
names reported together, naming the key, before any job runs."""

from __future__ import annotations

import copy
import re
import subprocess
import sys

import jsonschema
import pytest
import yaml
from conftest import REPO

from crossmodal.config import (
    ConfigError,
    backend_definitions,
    load_schema,
    schema_key_paths,
    validate_config,
)

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
README = REPO / "config" / "README.md"

# the smallest config the reference checks accept
BASE = {
    "datasets": ["demo"],
    "encoders": {"clip": {"backend": "tiny"}},
    "features": {"encoder": "clip"},
}
# values for the keys a backend requires (they have no default)
REQUIRED_VALUES = {"model": "org/model", "price": {"input": 1.0, "output": 2.0}}


def with_(**blocks) -> dict:
    """BASE with top-level blocks replaced or added."""
    config = copy.deepcopy(BASE)
    config.update(copy.deepcopy(blocks))
    return config


def problems_of(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        validate_config(config, SCHEMA)
    return str(info.value)


def minimal_entry(definition: dict, backend: str) -> dict:
    entry = {"backend": backend}
    for key in definition["required"]:
        if key != "backend":
            entry[key] = copy.deepcopy(REQUIRED_VALUES[key])
    return entry


def all_backends() -> list[tuple[str, str]]:
    schema = load_schema(SCHEMA)
    return [
        (section, backend)
        for section in ("encoders", "vlms", "llms")
        for backend in backend_definitions(schema, section)
    ]


def test_schema_is_a_valid_json_schema():
    schema = load_schema(SCHEMA)
    jsonschema.validators.validator_for(schema).check_schema(schema)


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_are_valid_and_revalidate_unchanged(name):
    config = yaml.safe_load((REPO / "config" / name).read_text())
    validate_config(config, SCHEMA)
    assert config["data"]["retries"] >= 0  # defaults filled in place
    # a resolved config (what a recipe replays) is valid and already complete
    assert validate_config(copy.deepcopy(config), SCHEMA) == config


def test_defaults_are_filled():
    config = validate_config(copy.deepcopy(BASE), SCHEMA)
    assert config["demo"]["n_train"] == 200
    assert config["data"]["mirrors"]["coco"] is None
    assert config["describe"]["shards"] == 1
    assert config["features"]["max_pixels"] == 40_000_000
    assert config["pica"]["encoder"] is None
    assert config["encoders"]["clip"] == {"backend": "tiny", "seed": 0}


@pytest.mark.parametrize("section,backend", all_backends())
def test_every_key_of_a_backend_is_present_after_validation(section, backend):
    definition = backend_definitions(load_schema(SCHEMA), section)[backend]
    entry = minimal_entry(definition, backend)
    config = with_(**{section: {"x": entry}})
    if section == "encoders":
        config["features"]["encoder"] = "x"
    validate_config(config, SCHEMA)
    assert set(config[section]["x"]) == set(definition["properties"])


def test_every_key_without_a_default_is_required():
    """Code reads keys without fallbacks, so each key has a default or must be given."""
    schema = load_schema(SCHEMA)
    loose = []

    def walk(node: dict, path: str) -> None:
        for key, sub in node.get("properties", {}).items():
            if "default" not in sub and key not in node.get("required", []):
                loose.append(f"{path}{key}")
            walk(sub, f"{path}{key}.")

    walk(schema, "")
    for section in ("encoders", "vlms", "llms"):
        for backend, definition in backend_definitions(schema, section).items():
            walk(definition, f"{section}.{backend}.")
    # features.encoder has no sensible default; the reference check demands it
    assert loose == ["features.encoder"]


@pytest.mark.parametrize(
    "section,backend,expected",
    [
        ("vlms", "transformers", {"device": "auto", "dtype": "auto", "batch_size": 1, "gpus": 1}),
        (
            "vlms",
            "vllm",
            {"max_in_flight": 64, "timeout": 300, "startup_timeout": 1200, "dtype": "auto"},
        ),
        (
            "vlms",
            "openai",
            {
                "max_in_flight": 32,
                "timeout": 120,
                "max_retries": 5,
                "api_key_env": "OPENAI_API_KEY",
                "vllm_extensions": False,
                "gpus": 0,
            },
        ),
        ("vlms", "anthropic", {"max_in_flight": 8, "timeout": 120, "max_retries": 6, "gpus": 0}),
        ("llms", "vllm", {"max_in_flight": 64, "timeout": 300, "server_args": []}),
        ("llms", "anthropic", {"max_in_flight": 8, "max_retries": 6}),
    ],
)
def test_backend_defaults_differ_per_backend(section, backend, expected):
    definition = backend_definitions(load_schema(SCHEMA), section)[backend]
    config = validate_config(with_(**{section: {"x": minimal_entry(definition, backend)}}), SCHEMA)
    got = {key: config[section]["x"][key] for key in expected}
    assert got == expected


def test_new_vlm_keys_have_their_defaults():
    config = validate_config(
        with_(
            vlms={"v": {"backend": "vllm", "model": "m"}},
            llms={"l": {"backend": "vllm", "model": "m"}},
        ),
        SCHEMA,
    )
    vlm = config["vlms"]["v"]
    assert (vlm["top_k"], vlm["repetition_penalty"]) == (-1, 1.0)
    assert (vlm["prefill"], vlm["pad_to_square"]) == (None, False)
    assert "top_k" not in config["llms"]["l"]  # sampling keys are not LLM keys


@pytest.mark.parametrize(
    "config,needle",
    [
        ({**BASE, "demoo": {}}, "demoo: unknown key"),
        ({**BASE, "demo": {"n_trian": 3}}, "demo.n_trian: unknown key"),
        ({**BASE, "demo": {"n_train": "many"}}, "demo.n_train: 'many' is not of type"),
        ({**BASE, "datasets": ["vqa2"]}, "datasets.0: 'vqa2' is not a registered data set"),
        ({**BASE, "data": {"timeout": 0}}, "data.timeout:"),
        (
            {**BASE, "vlms": {"v": {"backend": "vllm", "model": "m", "top_k": 0}}},
            "vlms.v.top_k: 0 is not allowed: -1 = off, or k >= 1",
        ),
    ],
)
def test_bad_config_is_rejected_naming_the_key(config, needle):
    assert needle in problems_of(copy.deepcopy(config))


def test_key_of_another_backend_is_refused_by_name():
    haiku = {"backend": "anthropic", "model": "claude", "price": REQUIRED_VALUES["price"]}
    message = problems_of(with_(vlms={"haiku": {**haiku, "server_args": ["--x"]}}))
    assert "vlms.haiku.server_args: not a key of the 'anthropic' backend (its keys: " in message
    assert "max_in_flight" in message  # the keys it does read are listed
    message = problems_of(with_(llms={"l": {"backend": "vllm", "model": "m", "max_tokens": 3}}))
    assert "llms.l.max_tokens: not a key of the 'vllm' backend" in message
    message = problems_of(with_(encoders={"clip": {"backend": "tiny", "model": "ViT-L-14"}}))
    assert "encoders.clip.model: not a key of the 'tiny' backend" in message


def test_missing_or_unknown_backend_is_named():
    message = problems_of(with_(vlms={"a": {"model": "m"}, "b": {"backend": "ollama"}}))
    assert "vlms.a.backend: missing; choose one of anthropic, openai, transformers, vllm" in message
    assert "vlms.b.backend: 'ollama' is not a backend" in message


def test_backend_required_key_is_named():
    message = problems_of(with_(vlms={"haiku": {"backend": "anthropic", "model": "claude"}}))
    assert "vlms.haiku.price: missing (required by the 'anthropic' backend)" in message


def test_vllm_sampling_on_openai_needs_vllm_extensions():
    entry = {"backend": "openai", "model": "m", "base_url": "http://h/v1", "top_k": 20}
    assert "vlms.o.top_k: the 'openai' backend sends it only to a vLLM server" in problems_of(
        with_(vlms={"o": entry})
    )
    config = validate_config(with_(vlms={"o": {**entry, "vllm_extensions": True}}), SCHEMA)
    assert config["vlms"]["o"]["top_k"] == 20


def test_typo_in_pica_llms_is_named():
    message = problems_of(
        with_(llms={"qwen25_7b": {"backend": "vllm", "model": "m"}}, pica={"llms": ["qwen25-7b"]})
    )
    assert (
        "pica.llms.0: 'qwen25-7b' is not configured under llms (configured: qwen25_7b)" in message
    )


def test_typo_in_describe_vlms_is_named():
    message = problems_of(with_(describe={"vlms": ["llava"]}))
    assert "describe.vlms.0: 'llava' is not configured under vlms (none configured)" in message


def test_pica_loops_beyond_n_descriptions():
    message = problems_of(with_(describe={"n_descriptions": 4}, pica={"loops": [1, 4, 5]}))
    assert "pica.loops.2: 5 exceeds describe.n_descriptions (4)" in message
    assert "pica.loops.1" not in message


def test_tiny_model_outside_resources_models():
    tiny = {"backend": "transformers", "tiny": "llava", "model": "models/tiny_llava"}
    message = problems_of(with_(vlms={"t": tiny}))
    assert "vlms.t.model: 'models/tiny_llava' must be resources/models/<folder>" in message
    deep = {**tiny, "model": "resources/models/a/b"}
    assert "vlms.t.model:" in problems_of(with_(vlms={"t": deep}))
    ok = {**tiny, "model": "resources/models/tiny_llava"}
    validate_config(with_(vlms={"t": ok}), SCHEMA)


def test_two_tiny_architectures_in_one_folder():
    folder = "resources/models/tiny"
    message = problems_of(
        with_(
            vlms={"a": {"backend": "transformers", "tiny": "llava", "model": folder}},
            llms={"b": {"backend": "transformers", "tiny": "qwen2_vl", "model": folder}},
        )
    )
    assert "llms.b.tiny: 'qwen2_vl', but vlms.a builds a 'llava' model" in message


def test_missing_encoder():
    assert "features.encoder: 'vitl14' is not configured under encoders (configured: clip)" in (
        problems_of(with_(features={"encoder": "vitl14"}))
    )
    assert "features.encoder: not set" in problems_of(with_(features={}))
    assert "pica.encoder: 'vitb32' is not configured under encoders" in problems_of(
        with_(pica={"encoder": "vitb32"})
    )
    validate_config(with_(pica={"encoder": "clip"}), SCHEMA)


def test_methods_must_not_be_empty_when_vlms_are_described():
    vlms = {"v": {"backend": "vllm", "model": "m"}}
    message = problems_of(with_(vlms=vlms, describe={"vlms": ["v"], "methods": []}))
    assert "describe.methods: empty while describe.vlms names VLMs" in message
    validate_config(with_(vlms=vlms, describe={"vlms": [], "methods": []}), SCHEMA)


def test_schema_and_reference_problems_are_reported_together():
    message = problems_of(with_(demo={"n_val": -1}, pica={"llms": ["gpt"]}))
    assert "demo.n_val:" in message and "pica.llms.0: 'gpt'" in message


def _documented_keys() -> set[str]:
    return set(re.findall(r"`([a-z_]+(?:\.[A-Za-z0-9_]+)*)`", README.read_text()))


def test_readme_documents_every_schema_key():
    paths = set(schema_key_paths(load_schema(SCHEMA)))
    parts = [p.split(".") for p in paths]
    blocks = {".".join(p[:i]) for p in parts for i in range(1, len(p))}  # documented by leaves
    missing = (paths - blocks) - _documented_keys()
    assert not missing, f"config/README.md does not document {sorted(missing)}"


def test_readme_lists_each_backends_keys():
    """The 'Keys per backend' lines name exactly the keys each backend's definition allows."""
    text = README.read_text()
    schema = load_schema(SCHEMA)
    for section in ("encoders", "vlms", "llms"):
        for backend, definition in backend_definitions(schema, section).items():
            line = re.search(rf"^- `{section}` · `{backend}`: (.*)$", text, re.MULTILINE)
            assert line, f"config/README.md lacks the key list of {section} · {backend}"
            listed = set(re.findall(r"`([a-z_]+)`", line.group(1)))
            assert listed == set(definition["properties"]), (section, backend)


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
