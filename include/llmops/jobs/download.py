"""python -m llmops.jobs.download --model NAME --revision-sha SHA --out DIR [--config-dir D] [--mirror URL]

Download a tracked model's snapshot pinned to a resolved commit sha, under the weight policy, and
verify every file against the hub's checksums. The token comes from env HF_TOKEN (the step factory
fills it from the Airflow Connection); it is never printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from llmops.jobs._cli import emit_result, fail_known, setup_logging
from llmops.settings import get_settings, set_process_defaults

log = logging.getLogger("llmops.jobs.download")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="model name in models.yaml")
    parser.add_argument("--revision-sha", required=True, help="40-hex commit sha from resolve_revision")
    parser.add_argument("--out", type=Path, required=True, help="directory to download into")
    parser.add_argument("--config-dir", type=Path, default=None, help="registry directory (default: settings)")
    parser.add_argument("--mirror", default=None,
                        help="hub or mirror URL used when neither the model's endpoint nor HF_ENDPOINT is set "
                             "(the plan task passes the Hugging Face Connection's host)")
    args = parser.parse_args(argv)
    setup_logging()
    set_process_defaults({"HF_HUB_DISABLE_PROGRESS_BARS": "1"})  # progress goes to our log lines instead

    from llmops.config import load_registry
    from llmops.errors import LlmopsError
    from llmops.hub import download_snapshot, hub_endpoint

    started = time.monotonic()
    try:
        spec = load_registry(args.config_dir).model(args.model)
        out = download_snapshot(spec, args.revision_sha, args.out, token=get_settings().credentials.hf_token or None,
                                mirror=args.mirror)
    except (LlmopsError, OSError) as exc:  # a domain error, or a full or read-only --out: one line, not a traceback
        return fail_known(exc, log, f"download into {args.out}")
    files = [p for p in out.rglob("*") if p.is_file() and ".cache" not in p.relative_to(out).parts]
    emit_result({
        "model": spec.name,
        "repo_id": spec.repo_id,
        "revision": spec.revision,
        "sha": args.revision_sha,
        "endpoint": hub_endpoint(spec, args.mirror),
        "path": str(out),
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "seconds": round(time.monotonic() - started, 1),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
