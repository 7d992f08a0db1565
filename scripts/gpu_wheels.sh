#!/usr/bin/env bash
# scripts/gpu_wheels.sh [DIR]: download the wheels the GPU acceptance kit (scripts/gpu_check.sh) needs on a GPU
# machine that has only PyTorch, transformers and accelerate (an NVIDIA CUDA image, e.g. the device machine
# whose package list is the device library's KINDS.md): the quantization tools and what they import beyond such
# an image. Versions are the worker environment's pins (requirements/worker.txt), so the GPU runs the code the
# worker runs. Built for CPython 3.12 on manylinux x86_64; DIR defaults to .gpu-wheels (git-ignored).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$root/.gpu-wheels}"
# The tools, then what they import that such an image lacks (found by importing the kit's code with each
# candidate hidden: llmcompressor needs datasets (dill, multiprocess) and loguru, ModelOpt needs pulp and
# omegaconf, both need pydantic). Declared but never imported by the kit: auto-round, boto3, antlr4.
packages=(llmcompressor compressed-tensors nvidia-modelopt datasets dill multiprocess loguru pulp omegaconf
          pydantic pydantic-core annotated-types typing-inspection)
limit_mib=56  # the device machine takes 64 MiB per call, the repository's own files included

pins=()
for package in "${packages[@]}"; do
  pin="$(grep -i "^${package}==" "$root/requirements/worker.txt" || true)"
  if [[ -z "$pin" ]]; then
    echo "gpu_wheels: $package has no pin in requirements/worker.txt; fix: add it to requirements/worker.in" \
         "and run scripts/lock.sh, or drop it from this script's list" >&2
    exit 2
  fi
  pins+=("$pin")
done

rm -rf "$dir.partial"
mkdir -p "$dir.partial"
echo "gpu_wheels: downloading ${#pins[@]} wheels for cp312 manylinux x86_64 into $dir"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$dir.partial" "${pins[@]}"
count="$(find "$dir.partial" -name '*.whl' | wc -l)"
if [[ "$count" -ne "${#pins[@]}" ]]; then
  echo "gpu_wheels: expected ${#pins[@]} wheels, got $count in $dir.partial" >&2
  exit 1
fi
size_mib="$(du -sm "$dir.partial" | cut -f1)"
if [[ "$size_mib" -gt "$limit_mib" ]]; then
  echo "gpu_wheels: the wheels take $size_mib MiB, more than $limit_mib MiB (the device machine takes 64 MiB per call)" >&2
  exit 1
fi
rm -rf "$dir"
mv "$dir.partial" "$dir"
ls -1 "$dir"
echo "gpu_wheels: $count wheels, $size_mib MiB in $dir"
