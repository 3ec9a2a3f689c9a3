#!/usr/bin/env bash
# Download, on a machine with network, the wheels benchmarks/gpu_check.sh needs on a GPU machine
# that has none: the packages its python lacks, for its Python version and Linux x86_64, with
# no dependencies (name each one needed), under a size cap (what can be carried there).
#
#   benchmarks/gpu_wheels.sh [DIR]      # default DIR: .whl (git-ignored); then on the GPU machine:
#   WHEELS=.whl benchmarks/gpu_check.sh OUT.md
#
# Environment: PY_VERSION (the GPU machine's Python, default 3.12), MAX_MB (default 60: the
# carry limit is 64 MiB for the wheels and the checkout together), EXTRA (more NAME==VERSION).
# Not included, because they cannot fit: faiss-gpu 1.15.1 (135 MB, and it needs CUDA 12's
# cuBLAS, ~600 MB, beside a CUDA 13 torch) and vllm (~340 MB plus its own torch): on such a
# machine checks (b)'s GPU part and (c) report SKIPPED with the reason.
set -euo pipefail

dir=${1:-.whl}
py_version=${PY_VERSION:-3.12}
max_mb=${MAX_MB:-60}
# What gpu_check.sh imports that a stock PyTorch image lacks (pins as in envs/clip.yaml and
# envs/api.yaml): open_clip and its ftfy/wcwidth, faiss-cpu for (b)'s CPU reference, and
# pycocotools (crossmodal.data.prepare imports it).
packages=(open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 faiss-cpu==1.15.1 pycocotools==2.0.11)
read -r -a extra <<<"${EXTRA:-}"
packages+=("${extra[@]}")

platforms=()
for minor in $(seq 17 35); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)

mkdir -p "$dir"
# the public index only: no local constraints, extra indexes or find-links from this machine
env PIP_CONFIG_FILE=/dev/null python3 -m pip download --isolated --no-deps --only-binary=:all: \
  --index-url https://pypi.org/simple --python-version "$py_version" --implementation cp \
  "${platforms[@]}" -d "$dir" "${packages[@]}"

total=$(du -cb "$dir"/*.whl | tail -n 1 | cut -f1)
echo "$(find "$dir" -name '*.whl' | wc -l) wheels in $dir: $((total / 1024 / 1024)) MiB"
if ((total > max_mb * 1024 * 1024)); then
  echo "gpu_wheels.sh: $dir holds more than MAX_MB=$max_mb MiB; drop a wheel from it" >&2
  exit 1
fi
