#!/usr/bin/env bash
# make test: the whole suite. Tests start the local servers they need (olah, SeaweedFS, vLLM, Milvus)
# on 127.0.0.1 and stop them in their fixtures, also on failure.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
export AIRFLOW_HOME="$LLMOPS_HOME/test/airflow"
"$LLMOPS_HOME/venvs/airflow/bin/ruff" check .
"$LLMOPS_HOME/venvs/airflow/bin/lint-imports" --no-cache  # the import contracts in pyproject.toml, as make lint
# Most tests run in the Airflow environment, driving torch and vLLM steps as subprocesses the way the
# local runtime does. tests/integration/kb embeds in-process, so it runs in the worker environment.
"$LLMOPS_HOME/venvs/airflow/bin/python" -m pytest "$@"
"$LLMOPS_HOME/venvs/worker/bin/python" -m pytest tests/integration/kb "$@"
