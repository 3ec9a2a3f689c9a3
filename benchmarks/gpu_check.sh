#!/usr/bin/env bash
# The GPU check: every path that only a GPU exercises, in one script of under 8 minutes on one
# H100/H200, its numbers written to OUT.md as a fragment ready to paste into
# benchmarks/RESULTS.md (date, GPU name from nvidia-smi, one line per check):
#   (a) fp16 feature extraction on 20,000 generated 640x480 JPEGs vs the decode ceiling
#   (b) FAISS flat/IVF on the GPU (crossmodal.index.load_index) vs faiss-cpu exact results
#   (c) a real vLLM server on CUDA serving a tiny LLaVA and a tiny Qwen2-VL, image requests
#       through crossmodal's vllm backend
#   (d) CUSA training: step time against contrastive-only (ViT-B/32, batch 128), then one
#       epoch of cusa-train under torchrun with NCCL on every visible GPU
# A check whose package is missing writes "SKIPPED (reason)" instead of failing the script.
#
# Usage:
#   benchmarks/gpu_check.sh OUT.md                 # on the GPU machine
#   WHEELS=.whl benchmarks/gpu_check.sh OUT.md     # install the wheels in .whl/ first (offline;
#                                                  # benchmarks/gpu_wheels.sh downloads them)
#   benchmarks/gpu_check.sh --cpu-smoke OUT.md     # or CPU_SMOKE=1: tiny sizes, CPU only, to
#                                                  # test the script itself; not GPU numbers
# Environment: WHEELS (wheel folder), PYTHON (default python3), VLLM_PYTHON (a python with vLLM,
# for (c)), ONLY (checks to run,
# e.g. "ab"), TIMEOUT_A..TIMEOUT_D (seconds per check), BUDGET_S (whole script, default 470).
# Exit status: 0 when no check FAILED or TIMED OUT, 1 otherwise, 2 on bad usage.
set -uo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

smoke=${CPU_SMOKE:-0}
out=""
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke | --dry-run) smoke=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *)
      [[ -z "$out" ]] || { echo "gpu_check.sh: one OUT.md only (got $out and $arg)" >&2; exit 2; }
      out=$arg
      ;;
  esac
done
[[ "$out" == *.md ]] || { echo "gpu_check.sh: name the output .md file, e.g. OUT.md" >&2; exit 2; }
[[ "$smoke" == 1 || "$smoke" == 0 ]] || { echo "gpu_check.sh: CPU_SMOKE must be 0 or 1" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
budget=${BUDGET_S:-470}
start=$(date +%s)
mkdir -p "$(dirname "$out")"
work="${out%.md}.d"  # per-check results and logs, beside OUT.md
rm -rf "$work" && mkdir -p "$work"

# --- setup: the project from this checkout, carried wheels, no network ---------------------
setup_notes=()
site=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-site.XXXXXX")  # carried wheels, installed here
trap 'rm -rf "$site"' EXIT
if [[ -n "${WHEELS:-}" ]]; then
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  shopt -u nullglob
  if ((${#wheels[@]} == 0)); then
    setup_notes+=("WHEELS=$WHEELS holds no .whl file: nothing installed")
  elif timeout 180 "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" "${wheels[@]}" >"$work/wheels.log" 2>&1; then
    names=$(for w in "${wheels[@]}"; do basename "$w" | cut -d- -f1,2; done | paste -sd, -)
    setup_notes+=("installed from $WHEELS: ${names//,/, }")
  else
    setup_notes+=("installing the wheels in $WHEELS FAILED: $(tail -n 1 "$work/wheels.log")")
  fi
fi
export PYTHONPATH="$site:$repo/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
if ! "$py" -c "import crossmodal" >"$work/import.log" 2>&1; then
  setup_notes+=("crossmodal does not import: $(tail -n 1 "$work/import.log")")
fi

if command -v nvidia-smi >/dev/null 2>&1 &&
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null) &&
  [[ -n "$gpu" ]]; then
  gpu_count=$(printf '%s\n' "$gpu" | wc -l)
  gpu="$gpu_count× $(printf '%s\n' "$gpu" | head -n 1 | sed 's/, /, driver /')"
else
  gpu="no GPU (nvidia-smi not found or found no GPU)"
fi
versions=$("$py" -c '
import platform, torch
cuda = torch.version.cuda or "none"
print(f"Python {platform.python_version()}, torch {torch.__version__} (CUDA {cuda})")
' 2>/dev/null || echo "torch does not import in $py")
cores=$(nproc)

# --- the checks ------------------------------------------------------------------------------
declare -A title=(
  [a]="(a) fp16 feature extraction"
  [b]="(b) FAISS on the GPU vs faiss-cpu"
  [c]="(c) vLLM server on CUDA, image requests through the vllm backend"
  [d]="(d) training steps under torchrun"
)
lines=()
bad=0

# run_check KEY DEFAULT_TIMEOUT_S COMMAND...: one line for OUT.md, whatever happens
run_check() {
  local key=$1 limit=$2
  shift 2
  local up=${key^^} res="$work/$key"
  local var="TIMEOUT_$up"
  limit=${!var:-$limit}
  local left=$((budget - ($(date +%s) - start)))
  if [[ -n "${ONLY:-}" && "$ONLY" != *"$key"* ]]; then
    lines+=("- **${title[$key]}**: SKIPPED (not selected: ONLY=$ONLY)")
    return
  fi
  if ((left < 20)); then
    lines+=("- **${title[$key]}**: SKIPPED (the script's budget of ${budget} s is spent)")
    return
  fi
  ((limit > left - 5)) && limit=$((left - 5))
  echo "== ${title[$key]} (limit ${limit} s)" >&2
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=15 "$limit" "$@" --out "$res" >"$res.log" 2>&1
  rc=$?
  local took=$(($(date +%s) - t0)) last
  last=$(grep -v '^\s*$' "$res.log" | tail -n 1 | cut -c1-300)
  if ((rc == 124 || rc == 137)); then
    lines+=("- **${title[$key]}**: TIMED OUT after ${limit} s (last output: ${last:-none})")
    bad=1
  elif ((rc == 0)) && [[ -s "$res.md" ]]; then
    lines+=("$(cat "$res.md")")
  elif [[ -s "$res.md" ]]; then # the step reported its own failure
    lines+=("$(cat "$res.md")")
    bad=1
  else
    lines+=("- **${title[$key]}**: FAILED (exit $rc after ${took} s: ${last:-no output})")
    bad=1
  fi
  echo "   done in ${took} s (exit $rc)" >&2
}

step=("$py" "$repo/benchmarks/gpu_check.py")
if [[ "$smoke" == 1 ]]; then
  run_check a 120 "${step[@]}" features --smoke --n 64 --distinct 16 --workers 2 \
    --batch-size 32 --rounds 1 --cache "$work/cache"
  run_check b 60 "${step[@]}" faiss --smoke --n 5000 --d 64 --queries 50 --nlist 64 --nprobe 8
  run_check c 60 "${step[@]}" vllm --smoke
  run_check d 90 "${step[@]}" train --smoke
else
  run_check a 200 "${step[@]}" features --n 20000 --distinct 4000 --workers "$cores" \
    --batch-size 256 --rounds 2 --cache "${TMPDIR:-/tmp}/cm-gpu-check"
  run_check b 120 "${step[@]}" faiss --n 200000 --d 768 --queries 1000 --nlist 1024 --nprobe 32
  run_check c 200 "${step[@]}" vllm
  run_check d 120 "${step[@]}" train
fi

# --- OUT.md ----------------------------------------------------------------------------------
total=$(($(date +%s) - start))
mode="GPU run"
[[ "$smoke" == 1 ]] && mode="CPU smoke run (sizes shrunk, GPU-only parts skipped: no GPU numbers)"
{
  echo "## GPU check (\`benchmarks/gpu_check.sh\`)"
  echo
  echo "$(date -u +%Y-%m-%d), $gpu; $cores cores, $(uname -m); $versions. $mode, ${total} s in all."
  for note in "${setup_notes[@]}"; do echo "Setup: $note."; done
  echo
  printf '%s\n' "${lines[@]}"
  echo
  echo "<details><summary>Raw results (JSON)</summary>"
  echo
  for key in a b c d; do
    if [[ -s "$work/$key.json" ]]; then
      echo "${title[$key]}:"
      echo
      echo '```json'
      cat "$work/$key.json"
      echo
      echo '```'
      echo
    fi
  done
  echo "</details>"
} >"$out"
echo "wrote $out (logs in $work) in ${total} s" >&2
exit "$bad"
