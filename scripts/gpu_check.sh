#!/usr/bin/env bash
# scripts/gpu_check.sh [--dry-run] [--out DIR] [--wheels DIR] [--budget-s N] [--tiny-model DIR]: the GPU
# acceptance kit (--tiny-model: use a tiny Llama that llmops.jobs.make_tiny_model already built).
#
# On a machine with an NVIDIA GPU: quantizes the tiny Llama and a random Qwen2 with the project's recipes
# (llm-compressor GPTQ W4A16 calibrated on the GPU, W4A16, W8A8; ModelOpt FP8 with the unified checkpoint export
# TensorRT-LLM loads) and validates each against the unquantized model with the teacher-forced metric
# (transformers on CUDA). Results: DIR/gpu-check.json and DIR/gpu-check.md (default DIR: .llmops/gpu-check).
#   - With wheels (scripts/gpu_wheels.sh fills .gpu-wheels), a bare CUDA image with Python 3.12, torch,
#     transformers and accelerate is enough: they are installed into a temporary folder, nothing else changes.
#     Without wheels the interpreter must already have the worker's packages (the worker image does).
#     The interpreter is LLMOPS_GPU_PYTHON (default python3).
#   - --dry-run runs the same steps on the CPU in the worker environment (make test does, so the kit never rots).
# The whole run stops after LLMOPS_GPU_CHECK_TIMEOUT seconds (default 480 on a GPU, 1800 for the dry run on a
# possibly busy CPU); no new recipe starts after --budget-s (default 420, dry run 1500). Exit status 1 when a step
# failed (the results say which and why).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dry_run=0 out="" wheels="$root/.gpu-wheels" budget="" args_extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    --budget-s) budget="$2"; shift 2 ;;
    --tiny-model) args_extra+=(--tiny-model "$2"); shift 2 ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1; fix: see scripts/gpu_check.sh --help" >&2; exit 2 ;;
  esac
done
home="${LLMOPS_HOME:-$root/.llmops}"
out="${out:-$home/gpu-check}"
if [[ "$dry_run" == 1 ]]; then
  timeout_s="${LLMOPS_GPU_CHECK_TIMEOUT:-1800}" budget="${budget:-1500}"
else
  timeout_s="${LLMOPS_GPU_CHECK_TIMEOUT:-480}" budget="${budget:-420}"
fi
# Nothing is fetched: the models are built here, and a hub lookup on a machine without network would hang.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false
pythonpath="$root/include"
if [[ "$dry_run" == 1 ]]; then
  "$root/scripts/envs.sh" worker >/dev/null
  python="$home/venvs/worker/bin/python"
  args=(--dry-run)
else
  python="${LLMOPS_GPU_PYTHON:-python3}"
  args=()
  if compgen -G "$wheels/*.whl" >/dev/null; then
    site="$(mktemp -d "${TMPDIR:-/tmp}/llmops-gpu-site.XXXXXX")"
    trap 'rm -rf "$site"' EXIT
    echo "gpu_check: installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels into $site"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
    pythonpath="$pythonpath:$site"
  fi
fi
mkdir -p "$out"
export PYTHONPATH="$pythonpath${PYTHONPATH:+:$PYTHONPATH}"
echo "gpu_check: $python, results in $out (stops after ${timeout_s} s)"
timeout --kill-after=10 "$timeout_s" "$python" -m llmops.jobs.gpu_check --out "$out" --budget-s "$budget" \
  "${args[@]}" "${args_extra[@]}"
