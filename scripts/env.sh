# Source me: the environment every make target and demo step shares. All state under $LLMOPS_HOME.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export LLMOPS_HOME="${LLMOPS_HOME:-$root/.llmops}"
export LLMOPS_RUNTIME="${LLMOPS_RUNTIME:-local}"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$LLMOPS_HOME/airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$root/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$root/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export AIRFLOW__LOGGING__BASE_LOG_FOLDER="$LLMOPS_HOME/logs"
export PYTHONPATH="$root/include:$root/plugins${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$LLMOPS_HOME/venvs/airflow/bin:$LLMOPS_HOME/venvs/standins/bin:$PATH"
# No hub, no internet at run time: everything comes from the local mirror the demo starts.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-0}" HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1
mkdir -p "$LLMOPS_HOME" "$AIRFLOW_HOME"
