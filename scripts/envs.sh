#!/usr/bin/env bash
# Create or reuse the project's virtual environments under $LLMOPS_HOME/venvs.
# An environment is rebuilt only when its pinned requirements file changed (its sha256 is stamped
# inside the venv), so a second `make demo` / `make test` installs nothing.
#
#   scripts/envs.sh airflow worker serving standins
#
# Packages come from your default Python package index (pip/uv settings apply); the CPU build of torch,
# which only worker, serving and bench need, from LLMOPS_TORCH_INDEX_URL / LLMOPS_TORCH_FIND_LINKS
# (scripts/torch_source.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
home="${LLMOPS_HOME:-$root/.llmops}"
venvs="$home/venvs"
source "$root/scripts/torch_source.sh"
uv_version="0.13.8"
mkdir -p "$venvs"

uv_bin="$venvs/uv/bin/uv"
if [[ ! -x "$uv_bin" ]]; then
  echo "[envs] bootstrapping uv $uv_version"
  python3 -m venv "$venvs/uv"
  "$venvs/uv/bin/pip" install -q "uv==$uv_version"
fi

ensure() {  # ensure NAME REQUIREMENTS... (fully pinned files; the venv is synced to exactly their union)
  local name="$1"; shift
  local venv="$venvs/$name" stamp want torch_pin
  want="$( (echo "uv pip sync"; cat "$@") | sha256sum | cut -d' ' -f1)"
  stamp="$venv/.requirements.sha256"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "[envs] $name: up to date ($venv)"
    return
  fi
  echo "[envs] $name: installing $* into $venv"
  local t0=$SECONDS
  torch_args=()
  torch_pin="$(sed -n 's/^torch==\([^ ;]*\).*/\1/p' "$@" | head -n 1)"
  if [[ -n "$torch_pin" ]]; then  # only the environments with torch need a torch source
    torch_source_args "$name" "$torch_pin" || exit 2
  fi
  [[ -x "$venv/bin/python" ]] || "$uv_bin" venv -q --python "$(command -v python3)" "$venv"
  # sync, not install: the files are complete locks, so nothing is re-resolved (a re-resolution would
  # pull packages a lock excludes on purpose, e.g. torchvision into the vLLM environment).
  VIRTUAL_ENV="$venv" "$uv_bin" pip sync -q --python "$venv/bin/python" ${torch_args[@]+"${torch_args[@]}"} "$@"
  echo "$want" >"$stamp"
  echo "[envs] $name: ready in $((SECONDS - t0)) s"
}

for name in "$@"; do
  case "$name" in
    airflow)  ensure airflow "$root/requirements.txt" "$root/requirements/dev.txt" ;;
    worker)   ensure worker "$root/requirements/worker.txt" ;;
    serving)  ensure serving "$root/requirements/serving.txt" ;;
    standins) ensure standins "$root/requirements/standins.txt" ;;
    bench)    ensure bench "$root/requirements/bench.txt" ;;
    *) echo "[envs] unknown environment '$name' (expected airflow, worker, serving, standins, bench)" >&2; exit 2 ;;
  esac
done
