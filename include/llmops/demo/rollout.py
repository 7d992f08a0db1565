"""Helpers for scripts/demo_model_rollout.sh and bench/rollout.py (local runtime only).

    python -m llmops.demo.rollout versions      # -> JSON {"baseline": uri, "candidate": uri}
    python -m llmops.demo.rollout stop          # stop the demo deployment's vLLM processes
    python -m llmops.demo.rollout report        # print the newest rollout report of the deployment

`versions` picks the version model_refresh published last for the vLLM runtime (the candidate) and
the one before it (the baseline the canary is compared with). If the store has fewer than two, it
takes the tiny model (`llmops.demo.tiny_model.demo_model`: the machine's one accepted build) and publishes
it, recorded honestly as a local build
(source_repo local/make_tiny_model, source sha = the git object id of its weights), recipe `unquantized`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmops.artefacts import ArtefactNotFoundError, Manifest, open_store
from llmops.demo.tiny_model import demo_model
from llmops.hashing import git_blob_sha1
from llmops.serving.local import LocalRuntime
from llmops.settings import get_settings

MODEL = "tiny-llama"
DEPLOYMENT = "tiny-llama-chat"


def publish_local_build(store, model_dir: Path, source_sha: str | None = None) -> str:
    """Publish a locally built tiny model, unquantized, for the vLLM runtime. `source_sha` defaults to the
    git object id of its weights (distinct shas publish distinct versions of the same files)."""
    source_sha = source_sha or git_blob_sha1(model_dir / "model.safetensors")
    manifest = Manifest.for_directory(model_dir, model=MODEL, source_repo="local/make_tiny_model",
                                      source_sha=source_sha, recipe="unquantized", serving_runtime="vllm",
                                      quantization_format="none", min_compute_capability=0.0, max_model_len=512)
    return store.publish(model_dir, manifest.prefix, manifest)


def versions() -> dict:
    settings = get_settings()
    store = open_store(settings.store_uri)
    try:
        candidate = store.resolve("latest", MODEL, runtime="vllm").uri
    except ArtefactNotFoundError:
        candidate = None
    published = [m.uri for m in store.list_versions(MODEL) if m.serving_runtime == "vllm"]
    older = [uri for uri in published if uri != candidate]
    if candidate is None or not older:
        local = publish_local_build(store, demo_model())
        if candidate is None:
            candidate = local
        baseline = local if local != candidate else None
    else:
        baseline = older[-1]
    return {"baseline": baseline, "candidate": candidate,
            "source": "model_refresh" if candidate in published and baseline != candidate else "local build"}


def stop() -> None:
    settings = get_settings()
    LocalRuntime(settings.home, DEPLOYMENT, MODEL, serving_python=settings.serving_python).stop_all()


def newest_report() -> Path | None:
    root = get_settings().home / "reports" / "rollouts" / DEPLOYMENT
    reports = sorted(root.glob("*/report.md"), key=lambda p: p.stat().st_mtime)
    return reports[-1] if reports else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["versions", "stop", "report"])
    args = parser.parse_args(argv)
    if args.command == "versions":
        print(json.dumps(versions()))
    elif args.command == "stop":
        stop()
    else:
        report = newest_report()
        if report is None:
            print("no rollout report yet", file=sys.stderr)
            return 1
        print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
