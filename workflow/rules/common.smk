# Config validation and helpers shared by every rule file.
import re
from pathlib import Path

from crossmodal.config import validate_config
from crossmodal import workflow as wf

validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))

# Jobs run `python -m crossmodal` from this checkout's src/, so a per-rule conda env needs only
# the dependencies (envs/*.yaml), and every job runs exactly the code of this checkout.
SRC = Path(workflow.basedir) / "src"
shell.prefix('export PYTHONPATH="%s${{PYTHONPATH:+:$PYTHONPATH}}"; ' % SRC)
ENV = {name: f"../../envs/{name}.yaml" for name in ("clip", "vllm", "api", "eval")}


if config["features"].get("encoder") not in config["encoders"]:
    raise ValueError(
        f"features.encoder: {config['features'].get('encoder')!r} is not one of the "
        f"configured encoders {sorted(config['encoders'])}"
    )

def model_env(section, name):
    """Served or in-process models need the vLLM/torch stack; API models the light one."""
    backend = config[section][name]["backend"]
    return ENV["api"] if backend in ("anthropic", "openai") else ENV["vllm"]


wildcard_constraints:
    collection="[A-Za-z0-9_]+",
    dataset="[A-Za-z0-9_]+",
    split="[A-Za-z0-9_]+",
    encoder="|".join(map(re.escape, config["encoders"])) or "(?!)",
    vlm="|".join(map(re.escape, config["vlms"])) or "(?!)",
    llm="|".join(map(re.escape, config["llms"])) or "(?!)",
    k="[0-9]+",


def final_targets():
    return wf.summary_targets(config)
