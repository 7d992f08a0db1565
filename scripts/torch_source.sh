# Source me (scripts/envs.sh and scripts/lock.sh): where the CPU build of torch comes from.
# Only the environments with torch (worker, serving, bench) need it; airflow and standins use none.
#
#   LLMOPS_TORCH_INDEX_URL   a package index holding CPU torch builds (default: PyTorch's CPU wheel index,
#                            the compose build's default too); your mirror of that index, or "" for none
#   LLMOPS_TORCH_FIND_LINKS  a folder of wheels (default: /opt/wheels when that folder exists)
#
# The folder wins when it holds the pinned torch wheel (no network needed); otherwise the index is used,
# together with the folder if one is set. Neither reachable: a clear error naming both settings.
torch_index="${LLMOPS_TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
torch_find_links="${LLMOPS_TORCH_FIND_LINKS:-}"
if [[ -z "$torch_find_links" && -d /opt/wheels ]]; then
  torch_find_links=/opt/wheels
fi

# torch_source_args WHAT [TORCH_VERSION]: fills the array torch_args with uv options, or fails.
# WHAT names the environment or lock in messages; TORCH_VERSION is the pinned version (e.g. 2.13.0+cpu).
torch_source_args() {
  local what="$1" version="${2:-}"
  torch_args=(--index-strategy unsafe-best-match)
  if [[ -n "$torch_find_links" && ! -d "$torch_find_links" && ! "$torch_find_links" =~ ^https?:// ]]; then
    echo "[envs] $what: LLMOPS_TORCH_FIND_LINKS=$torch_find_links is not a folder; fix: point it at a folder" \
      "of wheels, or unset it to use LLMOPS_TORCH_INDEX_URL" >&2
    return 2
  fi
  if [[ -n "$version" && -d "$torch_find_links" ]] && compgen -G "$torch_find_links/torch-${version}-*.whl" >/dev/null; then
    torch_args+=(--find-links "$torch_find_links")  # the pinned wheel is local: no index needed
    return 0
  fi
  if [[ -n "$torch_index" ]] && python3 - "$torch_index" <<'PY'
import sys, urllib.request
try:
    urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=15).close()
except Exception as exc:  # unreachable, wrong URL, no torch there
    sys.exit(f"{sys.argv[1]}: {exc}")
PY
  then
    torch_args+=(--extra-index-url "$torch_index")
    [[ -n "$torch_find_links" ]] && torch_args+=(--find-links "$torch_find_links")
    return 0
  fi
  echo "[envs] $what needs the CPU build of torch${version:+ $version} and found no source:" >&2
  local index_state="is not reachable"
  [[ -n "$torch_index" ]] || index_state="is empty (no index)"
  echo "  LLMOPS_TORCH_INDEX_URL=$torch_index $index_state, and LLMOPS_TORCH_FIND_LINKS=${torch_find_links:-(unset)}" \
    "holds no torch-${version:-*}-*.whl" >&2
  echo "  fix: set LLMOPS_TORCH_INDEX_URL to a reachable index of CPU torch wheels (e.g. your mirror of" \
    "PyTorch's CPU index), or LLMOPS_TORCH_FIND_LINKS to a folder holding the torch wheel" >&2
  return 2
}
