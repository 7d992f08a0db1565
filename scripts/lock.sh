#!/usr/bin/env bash
# Re-pin every environment from its .in file. torch's CPU build (worker, serving) comes from
# LLMOPS_TORCH_INDEX_URL / LLMOPS_TORCH_FIND_LINKS (scripts/torch_source.sh); the others need no torch source.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/envs.sh >/dev/null  # bootstraps uv
uv="${LLMOPS_HOME:-.llmops}/venvs/uv/bin/uv"
source scripts/torch_source.sh
torch_source_args "make lock" "$(sed -n 's/^torch==\([^ ;]*\).*/\1/p' requirements/worker.txt | head -n 1)" || exit 2
torch="${torch_args[*]}"
"$uv" pip compile -q --python-version 3.11 requirements.in -o requirements.txt
"$uv" pip compile -q --python-version 3.11 requirements/dev.in -o requirements/dev.txt
"$uv" pip compile -q --python-version 3.11 requirements/standins.in -o requirements/standins.txt
"$uv" pip compile -q --python-version 3.11 $torch requirements/worker.in -o requirements/worker.txt
"$uv" pip compile -q --python-version 3.11 $torch --excludes requirements/serving-excludes.txt \
  requirements/serving.in -o requirements/serving.txt
echo "pinned: requirements.txt requirements/{dev,worker,serving,standins}.txt"
