#!/usr/bin/env bash
# Re-pin every environment from its .in file. torch's CPU build comes from LLMOPS_TORCH_FIND_LINKS.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/envs.sh >/dev/null  # bootstraps uv
uv="${LLMOPS_HOME:-.llmops}/venvs/uv/bin/uv"
torch="--find-links ${LLMOPS_TORCH_FIND_LINKS:-/opt/wheels} --index-strategy unsafe-best-match"
"$uv" pip compile -q --python-version 3.11 requirements.in -o requirements.txt
"$uv" pip compile -q --python-version 3.11 requirements/dev.in -o requirements/dev.txt
"$uv" pip compile -q --python-version 3.11 requirements/standins.in -o requirements/standins.txt
"$uv" pip compile -q --python-version 3.11 $torch requirements/worker.in -o requirements/worker.txt
"$uv" pip compile -q --python-version 3.11 $torch --excludes requirements/serving-excludes.txt \
  requirements/serving.in -o requirements/serving.txt
echo "pinned: requirements.txt requirements/{dev,worker,serving,standins}.txt"
