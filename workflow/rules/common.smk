# Config validation, preflight checks and the stage wiring every rule file uses.
# A rule names its stage; crossmodal.workflow says which files and settings fill its job.
import re

from crossmodal import workflow as wf
from crossmodal.config import validate_config
from crossmodal.preflight import preflight

validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
preflight(config)
STAGES = wf.stages_for(config)

# Jobs run `python -m crossmodal` from this checkout's src/, so a per-rule conda env needs only
# the dependencies (envs/*.yaml), and every job runs exactly the code of this checkout.
SRC = str(Path(workflow.basedir) / "src")
shell.prefix('export PYTHONPATH="%s${{PYTHONPATH:+:$PYTHONPATH}}"; ' % SRC)
ENV = {name: f"../../envs/{name}.yaml" for name in ("clip", "vllm", "api", "eval")}


def code(command):
    """Hash of the code behind a stage: editing it reruns the stage (and what follows)."""
    return wf.code_version(command, SRC)


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
    method="base|recod|recod_img",
    k="[0-9]+",
    shard="[0-9]+",
    shards="[0-9]+",
