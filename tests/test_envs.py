"""Per-rule conda environments: every rule names one; every env file parses and pins; the pip
part of every env resolves against PyPI as one consistent set (the pins co-install).

The resolution runs ``pip install --dry-run --report`` for the env's Python on Linux x86_64,
isolated from this machine's pip configuration (its constraints file, extra local indexes and
``find-links`` wheel folder would otherwise decide what resolves), so it answers for a fresh
cluster node, and installs nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO

ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))

# The nodes the envs are built on: glibc 2.31 or newer (Ubuntu 20.04, Debian 11, RHEL 9 and
# later). vLLM >= 0.24 needs it (llguidance 1.7 ships manylinux_2_31 wheels only), so RHEL 8
# (glibc 2.28) cannot build the vllm env from wheels.
TARGET_GLIBC_MINOR = 31
TARGET_ARCH = "x86_64"
PUBLIC_INDEX = "https://pypi.org/simple"
RESOLVE_TIMEOUT_S = 900


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


def conda_and_pip(path: Path) -> tuple[list[str], list[str]]:
    """The env file's conda dependencies and its pip requirements."""
    deps = yaml.safe_load(path.read_text())["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    return conda, pip


def conda_pin(path: Path, name: str) -> str:
    """The version the env file pins for conda package ``name`` (``python``, ``pip``)."""
    conda, _ = conda_and_pip(path)
    return next(d.split("=", 1)[1] for d in conda if d.startswith(f"{name}="))


def env_python(path: Path) -> str:
    return conda_pin(path, "python")


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
    conda, pip = conda_and_pip(path)
    assert any(d.startswith("python=") for d in conda)
    for dep in conda:
        assert re.search(r"=[0-9]", dep), f"{path.name}: conda dependency not pinned: {dep}"
    for dep in pip:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][A-Za-z0-9.+]*", dep), (
            f"{path.name}: pip dependency not pinned exactly: {dep}"
        )


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_conda_part_is_only_python_and_pip(path):
    """Every library comes from pip, so the pip resolution below covers the whole env: a conda
    library (e.g. faiss-gpu) would bring its own numpy and CUDA runtime that pip never sees."""
    conda, _ = conda_and_pip(path)
    names = sorted(re.split(r"[=<>]", d.split("::")[-1])[0] for d in conda)
    assert names == ["pip", "python"], f"{path.name}: move {names} to the pip section"


def isolated_pip_env() -> dict[str, str]:
    """This process's environment without any pip setting, and no pip config file at all.

    ``--isolated`` alone still reads the global config file (/etc/xdg/pip/pip.conf here, with
    a constraints file and local indexes); ``PIP_CONFIG_FILE=/dev/null`` makes pip skip every
    config file.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_resolution_sees_no_machine_pip_configuration():
    """The settings the resolution runs with: none of this machine's (constraints, indexes,
    find-links), so what resolves here resolves on a fresh node."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "config", "list"],
        env=isolated_pip_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""


def target_platforms() -> list[str]:
    """Every manylinux tag a glibc-2.{TARGET_GLIBC_MINOR} x86_64 node accepts (pip does not
    widen ``--platform manylinux_2_X`` to older glibc versions by itself)."""
    tags = [f"manylinux_2_{m}_{TARGET_ARCH}" for m in range(TARGET_GLIBC_MINOR, 4, -1)]
    return tags + [f"manylinux{v}_{TARGET_ARCH}" for v in ("2014", "2010", "1")]


@dataclass
class Resolution:
    env: str
    seconds: float
    returncode: int
    output: str
    report: dict | None
    target_created: bool


def fetch_pip(version: str, folder: Path) -> Path:
    """pip ``version``'s wheel from PyPI: the pip the env installs with, run from its wheel
    (``python pip.whl/pip ...``, as pip documents for bootstrapping), so the resolver and its
    rules are the env's own, whatever pip this machine has."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "-q"]
        + ["--only-binary=:all:", "--index-url", PUBLIC_INDEX, "-d", str(folder)]
        + [f"pip=={version}"],
        env=isolated_pip_env(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = folder / f"pip-{version}-py3-none-any.whl"
    assert wheel.is_file(), f"pip {version} downloaded no {wheel.name}"
    return wheel


def resolve(path: Path, work: Path, pip_wheel: Path) -> Resolution:
    """``pip install --dry-run --report`` of the env's pip section for its Python on Linux."""
    _, pip_reqs = conda_and_pip(path)
    work.mkdir(parents=True)
    reqs, report, target = work / "requirements.txt", work / "report.json", work / "target"
    reqs.write_text("\n".join(pip_reqs) + "\n")
    cmd = [
        *(sys.executable, str(pip_wheel / "pip"), "install", "--isolated", "--dry-run"),
        *("--ignore-installed", "--report", str(report), "--index-url", PUBLIC_INDEX),
        *("--python-version", env_python(path), "--implementation", "cp"),
        "--only-binary=:all:",
        *(f"--platform={p}" for p in target_platforms()),
        # pip < 24.? accepts platform options only with --target; --dry-run never writes there
        *("--target", str(target), "--progress-bar", "off", "-r", str(reqs)),
    ]
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, env=isolated_pip_env(), capture_output=True, text=True, timeout=RESOLVE_TIMEOUT_S
        )
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, output = -1, f"timed out after {RESOLVE_TIMEOUT_S}s: {exc.stderr or ''}"
    seconds = time.perf_counter() - start
    loaded = json.loads(report.read_text()) if code == 0 and report.exists() else None
    return Resolution(path.stem, seconds, code, output, loaded, target.exists())


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory, request) -> dict[str, Resolution]:
    """All envs resolved at once, in parallel threads (each is mostly waiting on downloads)."""
    work = tmp_path_factory.mktemp("resolve")
    pips = {v: fetch_pip(v, work / "pip") for v in {conda_pin(p, "pip") for p in ENV_FILES}}
    with ThreadPoolExecutor(max_workers=len(ENV_FILES)) as pool:
        futures = {
            p.stem: pool.submit(resolve, p, work / p.stem, pips[conda_pin(p, "pip")])
            for p in ENV_FILES
        }
        done = {name: f.result() for name, f in futures.items()}
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # shown in CI's log, with or without -s
            reporter.write_line("")
            for r in done.values():
                state = "resolved" if r.returncode == 0 else f"FAILED (rc {r.returncode})"
                reporter.write_line(f"envs/{r.env}.yaml pip section: {state} in {r.seconds:.0f} s")
    return done


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.slow
@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_co_install_on_linux(path, resolutions):
    """The env's pins resolve together, from PyPI alone, to exactly the pinned versions, and
    the dry run installs nothing."""
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if running != env_python(path):
        pytest.skip(
            f"pip evaluates environment markers for the running Python {running}; run this test "
            f"with Python {env_python(path)} to resolve {path.name}"
        )
    r = resolutions[path.stem]
    tail = "\n".join(r.output.strip().splitlines()[-30:])
    assert r.returncode == 0, f"{path.name}: pins do not co-install:\n{tail}"
    assert not r.target_created, "the dry run wrote into its --target folder"
    assert r.report is not None
    assert r.report["pip_version"] == conda_pin(path, "pip"), "resolved with another pip"
    got = {canonical(i["metadata"]["name"]): i for i in r.report["install"]}
    _, pins = conda_and_pip(path)
    for pin in pins:
        name, version = pin.split("==")
        name = canonical(name.split("[")[0])
        assert name in got, f"{path.name}: {name} missing from the resolution"
        assert got[name]["metadata"]["version"] == version, f"{path.name}: {pin} not honoured"
    urls = [i["download_info"]["url"] for i in r.report["install"]]
    local = [u for u in urls if not u.startswith("https://")]
    assert not local, f"{path.name}: resolved from local files, not the index: {local}"
    local_versions = [n for n, i in got.items() if "+" in i["metadata"]["version"]]
    assert not local_versions, f"{path.name}: local-build versions resolved: {local_versions}"
