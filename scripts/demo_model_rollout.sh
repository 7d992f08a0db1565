#!/usr/bin/env bash
# Demo of model_rollout on the local runtime (real vLLM processes on 127.0.0.1, no GPU, no network):
#   1. pick the version model_refresh published last (the candidate) and a baseline to compare it with
#      (the previous vLLM version, or the tiny model built and published here if there is none);
#   2. `airflow dags test model_rollout` with the baseline: an initial deployment (stable = baseline);
#   3. `airflow dags test model_rollout` with the candidate: canary, traffic steps 50 -> 100 %, analysis
#      (golden prompts, alternating load, /metrics), verdict, promote or roll back, report;
#   4. print the verdict and where the report is; stop the vLLM processes (LLMOPS_DEMO_KEEP_SERVING=1 keeps them).
# A roll back is a legitimate outcome (the report says why); the demo fails only if no verdict was reached.
# Needs the airflow, worker and serving environments (scripts/envs.sh airflow worker serving).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$root"
export AIRFLOW_HOME="$LLMOPS_HOME/demo/rollout/airflow" LLMOPS_RUNTIME=local
mkdir -p "$AIRFLOW_HOME"
log="$LLMOPS_HOME/demo/rollout"
# 120 s per step: on a busy 2-core machine a 20 s window (3 rounds) promotes an identical canary only ~77 % of
# the time, 120 s ~94 % (python bench/judge.py --window-s 120); the deployment's default 300 s is what the
# README's error budget states.
window="${LLMOPS_DEMO_WINDOW_S:-120}"

cleanup() { [[ "${LLMOPS_DEMO_KEEP_SERVING:-0}" == 1 ]] || python -m llmops.demo.rollout stop; }
trap cleanup EXIT
python -m llmops.demo.rollout stop  # a clean slate: no leftovers of an earlier demo
rm -rf "$LLMOPS_HOME/reports/rollouts/tiny-llama-chat"
airflow db migrate >"$log/db-migrate.log" 2>&1 || { tail -n 20 "$log/db-migrate.log"; exit 1; }

versions="$(python -m llmops.demo.rollout versions)"
baseline="$(python -c 'import json,sys; print(json.loads(sys.argv[1])["baseline"] or "")' "$versions")"
candidate="$(python -c 'import json,sys; print(json.loads(sys.argv[1])["candidate"])' "$versions")"
echo "[rollout demo] candidate: $candidate"
echo "[rollout demo] baseline:  ${baseline:-none (initial deployment only)}"

run() {  # run NAME VERSION STEPS WINDOW
  local conf
  conf="$(printf '{"deployment": "tiny-llama-chat", "version": "%s", "steps": %s, "analysis_window_s": %s}' "$2" "$3" "$4")"
  echo "[rollout demo] $1: airflow dags test model_rollout -c '$conf'"
  local started=$SECONDS
  airflow dags test model_rollout -c "$conf" >"$log/$1.log" 2>&1 && status=ok || status=failed
  echo "[rollout demo] $1: DAG run $status in $((SECONDS - started)) s (log: $log/$1.log)"
}

if [[ -n "$baseline" ]]; then
  run initial "$baseline" "[100]" 10
  head -n 1 "$(python -m llmops.demo.rollout report)" | grep -q PROMOTED \
    || { echo "[rollout demo] the baseline did not deploy"; tail -n 40 "$log/initial.log"; exit 1; }
fi
run canary "$candidate" "[50, 100]" "$window"

report="$(python -m llmops.demo.rollout report)"
echo
awk '/^vLLM \/metrics/ {exit} {print}' "$report"  # the summary, checks, numbers and golden outputs
verdict="$(head -n 1 "$report" | sed -E 's/.*\*\*(.*)\*\*.*/\1/')"
stored="$(grep -o '"store_markdown": "[^"]*"' "$log/canary.log" | tail -n 1 | cut -d'"' -f4 || true)"
echo "[rollout demo] verdict: $verdict"
echo "[rollout demo] report: $report (and report.html beside it)"
echo "[rollout demo] stored next to the artefact: ${stored:-(not stored, see $log/canary.log)}"
[[ "$verdict" == PROMOTED || "$verdict" == ROLLED_BACK ]]
