#!/usr/bin/env bash
# make ui: the Airflow UI on 127.0.0.1 with this project's DAGs and plugins, a real scheduler (LocalExecutor),
# dag-processor and triggerer, and the local stand-ins the pipelines need (the demo model on an offline hub
# mirror, the local store, a Milvus Lite server). Prints the URL and the login; Ctrl-C stops everything.
# The same code starts the Airflow the tests in tests/airflow drive (tests/support/airflow_stack.py).
#   LLMOPS_UI_PORT   the port (default 28080, or a free one when that is taken)
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/signing_key.sh"  # publish signs with the demo key (Connection llmops_signing)
cd "$root"
PYTHONPATH="$root/tests:$PYTHONPATH" exec "$LLMOPS_HOME/venvs/airflow/bin/python" -m support.airflow_stack
