#!/usr/bin/env bash
# make demo: run every pipeline end to end on the local runtime, on embedded defaults.
# Each pipeline's step lives in scripts/demo_<dag_id>.sh and starts (and stops) the servers it needs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"

echo "== llmops demo: state in $LLMOPS_HOME, runtime $LLMOPS_RUNTIME"
python -m llmops validate
airflow db migrate >"$LLMOPS_HOME/logs-db-migrate.txt" 2>&1 || { cat "$LLMOPS_HOME/logs-db-migrate.txt"; exit 1; }

for dag_id in model_refresh model_rollout kb_reindex; do
  echo
  echo "== $dag_id"
  started=$SECONDS
  if [[ -x "scripts/demo_$dag_id.sh" ]]; then
    "scripts/demo_$dag_id.sh"
  else
    airflow dags test "$dag_id" >"$LLMOPS_HOME/demo-$dag_id.log" 2>&1 \
      || { tail -n 40 "$LLMOPS_HOME/demo-$dag_id.log"; exit 1; }
    echo "$dag_id: run succeeded (log: $LLMOPS_HOME/demo-$dag_id.log)"
  fi
  echo "== $dag_id done in $((SECONDS - started)) s"
done
echo
echo "== demo finished: artefacts in $LLMOPS_HOME/store, logs in $LLMOPS_HOME"
