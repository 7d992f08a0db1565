#!/usr/bin/env bash
# Demo of kb_reindex on the local runtime (no network, no GPU):
#   1. copy the sample knowledge base under $LLMOPS_HOME/demo/kb and point a registry copy at it;
#   2. serve its Milvus Lite data to every process (`milvus-lite server`, LLMOPS_MILVUS_URI), as the local
#      runtime does, so the search at the end (another process) could run during any re-index;
#   3. a dry run of `kb_reindex__product-docs` (the knowledge base's own DAG) sizes the job and estimates
#      its time; the first real run builds product_docs_v1 and creates the alias (heartbeat in its log);
#   4. edit one document and delete another, run the DAG again -> only the edited one is embedded;
#   5. print the counts of both runs and answer a question from the alias.
# Needs the airflow and worker environments (scripts/envs.sh airflow worker).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export LLMOPS_HOME="${LLMOPS_HOME:-$root/.llmops}"
demo="$LLMOPS_HOME/demo/kb"
airflow_bin="$LLMOPS_HOME/venvs/airflow/bin"
worker_python="$LLMOPS_HOME/venvs/worker/bin/python"
for needed in "$airflow_bin/airflow" "$worker_python"; do
  [[ -x "$needed" ]] || { echo "[kb demo] $needed is missing; run scripts/envs.sh airflow worker" >&2; exit 2; }
done

rm -rf "$demo"
mkdir -p "$demo/config" "$demo/airflow"
cp -r "$root/include/sample_kb/product-docs" "$demo/docs"
cp "$root"/include/config/*.yaml "$demo/config/"
# The registry copy reads the documents from the copy and writes a Milvus Lite file of its own.
"$airflow_bin/python" - "$demo" <<'EOF'
import sys
from pathlib import Path

import yaml

demo = Path(sys.argv[1])
path = demo / "config" / "knowledge_bases.yaml"
data = yaml.safe_load(path.read_text())
for kb in data["knowledge_bases"]:
    if kb["name"] == "product-docs":
        kb["source"]["uri"] = str(demo / "docs")
        kb["milvus"]["uri"] = str(demo / "milvus.db")
path.write_text(yaml.safe_dump(data, sort_keys=False))
EOF

# The local runtime's Milvus: the Lite data directory served to every process (stopped on exit, by PID).
eval "$("$airflow_bin/python" "$root/tests/support/milvus.py" start --data-dir "$demo/milvus.db" \
  --pid-file "$demo/milvus.pid")"
trap '"$airflow_bin/python" "$root/tests/support/milvus.py" stop --pid-file "$demo/milvus.pid"' EXIT
echo "[kb demo] Milvus Lite served on $LLMOPS_MILVUS_URI"

export LLMOPS_CONFIG_DIR="$demo/config" LLMOPS_RUNTIME=local
export AIRFLOW_HOME="$demo/airflow" AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER="$root/dags" AIRFLOW__CORE__PLUGINS_FOLDER="$root/plugins"
export PYTHONPATH="$root/include:$root/plugins:$root/dags${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$airflow_bin:$PATH"
airflow db migrate >"$demo/airflow/db-migrate.log" 2>&1

dag=kb_reindex__product-docs
run_dag() {  # run_dag LABEL CONF -> the DAG's report
  local label="$1" conf="$2" log="$demo/$1.log"
  echo "[kb demo] $label: airflow dags test $dag -c '$conf' (log: $log)"
  local t0=$SECONDS
  if ! airflow dags test "$dag" -c "$conf" >"$log" 2>&1; then
    tail -40 "$log"; echo "[kb demo] $label failed" >&2; exit 1
  fi
  grep -q "DagRun Finished: dag_id=$dag.*state=success" "$log" || { tail -40 "$log"; exit 1; }
  echo "[kb demo] $label finished in $((SECONDS - t0)) s; heartbeat and summary from the task log:"
  grep -E "progress product-docs: (embedding|loading)|dry run: |summary product-docs" "$log" \
    | sed -E 's/^.*INFO llmops\.[a-z_.]+: /  /; s/ \[airflow\.task.*$//' | sort -u | tail -6
}

run_dag dry-run '{"mode": "full", "dry_run": true}'
run_dag first-run '{"mode": "incremental"}'
echo "[kb demo] editing guides/retries.md and deleting faq/upgrades.md"
cat >>"$demo/docs/guides/retries.md" <<'EOF'

## Jitter

Orbit adds up to ten percent of random jitter to every retry delay, so that jobs failing together
do not all retry at the same second.
EOF
rm "$demo/docs/faq/upgrades.md"
run_dag second-run '{"mode": "incremental"}'

report_of() {  # the report task's table (header + the knowledge base's row)
  grep -m2 -E "^(knowledge base +mode|product-docs +(full|incremental))" "$demo/$1.log"
}
echo
echo "[kb demo] counts, first run (builds the collection and the alias):"
report_of first-run | sed 's/^/  /'
echo "[kb demo] counts, second run (one document edited, one deleted):"
report_of second-run | sed 's/^/  /'
if ! grep -qE "summary product-docs: mode=incremental .* embedded=1 docs/[0-9]+ chunks .*skipped=10 deleted=1 docs" \
    "$demo/second-run.log"; then
  echo "[kb demo] expected the second run to embed only the edited document and delete the removed one" >&2
  exit 1
fi

question="How much random jitter does Orbit add to retry delays?"
echo
echo "[kb demo] question: $question"
"$worker_python" -m llmops.jobs.kb_reindex --kb product-docs --mode search --query "$question" 2>/dev/null \
  | grep -v '^LLMOPS_RESULT'
