"""python -m llmops.jobs.fetch --manifest-uri URI --dest DIR: the init container of vLLM pods.

Downloads one published version and verifies every file's size and sha256 against its manifest
before vLLM starts (a damaged or partial copy fails the pod, never serves). Re-running with the
files already in place only re-verifies them (a PVC model cache survives pod restarts).
Credentials: AWS_* / OSS_* variables (llmops.artefacts.credentials; from the optional Secret
`llmops-llmops-artefacts`), else the SDK default chain (RRSA on ACK), never arguments. Keys the store
refuses, or none at all, end the container with one line naming the Secret to fix and exit status 2
(permanent), not a traceback that is retried.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from llmops.artefacts import open_store, split_manifest_uri
from llmops.artefacts.credentials import access_error, credentials_from_env
from llmops.errors import LlmopsError
from llmops.jobs._cli import emit_result, fail, fail_known, setup_logging

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest-uri", required=True)
    parser.add_argument("--dest", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()
    started = time.monotonic()
    root = args.manifest_uri
    try:
        root, prefix = split_manifest_uri(args.manifest_uri)
        dest = open_store(root, credentials=credentials_from_env(root)).fetch(prefix, args.dest, verify=True)
    except (LlmopsError, OSError) as exc:  # the pod fails with one line; vLLM never starts
        return fail_known(exc, log, f"fetch into {args.dest}")
    except Exception as exc:
        denied = access_error(exc, root)  # wrong or no keys: one line, permanent (a retry would not fix them)
        if denied is None:
            raise  # a crash or a network error: the traceback goes to the log, the pod restarts
        return fail(denied, log)
    log.info("fetched and verified %s into %s in %.1f s", args.manifest_uri, dest, time.monotonic() - started)
    emit_result({"dest": str(dest), "manifest_uri": args.manifest_uri})
    return 0


if __name__ == "__main__":
    sys.exit(main())
