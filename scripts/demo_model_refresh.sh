#!/usr/bin/env bash
# make demo, model_refresh step: the project's tiny model, served as a Hugging Face repo by an offline olah
# mirror, goes through the real DAG on the local runtime (`airflow dags test model_refresh`): resolve, plan,
# download through huggingface_hub, quantize (llm-compressor W8A8 and ModelOpt FP8 on CPU), validate the vLLM
# checkpoint with real vLLM, publish to the local store, emit the Asset event. A second run then skips
# everything already published. State: $LLMOPS_HOME/demo/model_refresh, artefacts: $LLMOPS_STORE_URI.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/signing_key.sh"  # publish signs with the demo key (Connection llmops_signing)
cd "$root"

demo="$LLMOPS_HOME/demo/model_refresh"
mkdir -p "$demo"
airflow db migrate >"$demo/db-migrate.log" 2>&1 || { tail -n 20 "$demo/db-migrate.log"; exit 1; }

# The machine's one accepted build of the demo model (llmops.demo.tiny_model): trained the first time only.
echo "[model_refresh] the tiny demo model (trained once per machine, then cached; the first time ~1-5 min)"
"$LLMOPS_HOME/venvs/worker/bin/python" -m llmops.jobs.make_tiny_model >"$demo/make-model.log" 2>&1 \
  || { tail -n 20 "$demo/make-model.log"; exit 1; }
model_dir="$(sed -n 's/^LLMOPS_RESULT //p' "$demo/make-model.log" | tail -n 1 | python -c 'import json,sys; print(json.load(sys.stdin)["path"])')"

# olah and its repo helpers are the stand-ins the tests use (tests/support/olah.py).
PYTHONPATH="$root/tests:$PYTHONPATH" python - "$demo" "$model_dir" <<'PY'
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from support.olah import olah_server, publish_repo, repo_path
from support.refresh_report import report_from_log

from llmops.artefacts import open_store
from llmops.settings import get_settings

demo, model_dir = Path(sys.argv[1]), Path(sys.argv[2])
mirrors, repo = demo / "hf-mirror", "llmops-demo/tiny-llama"
if not (repo_path(mirrors, repo) / ".git").exists():  # publish once: a new commit would be a new sha to build
    sha = publish_repo(mirrors, repo, model_dir, branch="main", message="tiny-llama made by llmops.demo")
    print(f"[model_refresh] published the tiny model to the local hub mirror as {repo}@main ({sha[:12]})")


def report(log: Path) -> str:
    """The DAG's closing report (logged line by line by its `report` task) from the run log."""
    try:
        return report_from_log(log.read_text(errors="replace"), "model_refresh: ")
    except AssertionError:
        return ""


with olah_server(mirrors, work_dir=demo / "olah") as endpoint:
    env = {**os.environ, "HF_ENDPOINT": endpoint}
    print(f"[model_refresh] offline Hugging Face mirror (olah) at {endpoint}")
    for run, title in ((1, "run 1"), (2, "run 2: everything is published now, so it must skip")):
        log = demo / f"run{run}.log"
        started = time.monotonic()
        with open(log, "w") as out:
            code = subprocess.run(["airflow", "dags", "test", "model_refresh", "-c", json.dumps({"model": "tiny-llama"})],
                                  stdout=out, stderr=subprocess.STDOUT, env=env).returncode
        print(f"\n[model_refresh] {title} ({time.monotonic() - started:.0f} s, log {log})")
        if code != 0:
            print("\n".join(log.read_text(errors="replace").splitlines()[-60:]))
            sys.exit(f"[model_refresh] airflow dags test model_refresh failed (exit {code}); full log: {log}")
        print(report(log) or "(no report found in the log)")

store = open_store(get_settings().store_uri)
print("\n[model_refresh] published versions of tiny-llama:")
for manifest in store.list_versions("tiny-llama"):
    check = manifest.model_extra.get("validation", {})
    verdict = (f"validated by {check.get('runtime')}: mean KL {check.get('mean_kl')} nats against the unquantized "
               f"model, confident top-1 {check.get('confident_top1')}"
               if check.get("status") == "passed" else f"validation {check.get('status')}: {check.get('reason')}")
    print(f"  {manifest.uri}\n    {manifest.serving_runtime} {manifest.quantization_format} "
          f"({manifest.recipe}), needs compute capability {manifest.min_compute_capability}+, "
          f"{len(manifest.files)} files, {manifest.total_size / 2**20:.1f} MiB; {verdict}")

# signed lineage: what a platform team checks before trusting a version (exit 1 on any mismatch)
newest = store.list_versions("tiny-llama")[-1]
print(f"\n[model_refresh] python -m llmops verify {newest.uri} --public-key $LLMOPS_HOME/signing/llmops-signing.pub")
subprocess.run([sys.executable, "-m", "llmops", "verify", newest.uri, "--public-key",
                str(get_settings().home / "signing" / "llmops-signing.pub")])
PY
