"""python -m llmops.jobs.fetch --manifest-uri URI --dest DIR [--require-signature]: the init container of vLLM pods.

Verifies the manifest's signature against the deployment's public keys (LLMOPS_TRUSTED_PUBLIC_KEYS, PEM
blocks; `--require-signature` refuses an unsigned version, as pre-flight does), then downloads the version
and verifies every file's size and sha256 against that manifest before vLLM starts (a damaged or partial
copy, or a changed or foreign signature, fails the pod, never serves). Re-running with the
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

from llmops.artefacts import ArtefactNotFoundError, open_store, split_manifest_uri
from llmops.artefacts.credentials import access_error, credentials_from_env
from llmops.artefacts.errors import SignatureRefused
from llmops.artefacts.signing import public_keys_from_text
from llmops.errors import LlmopsError
from llmops.jobs._cli import emit_result, fail, fail_known, setup_logging
from llmops.settings import TRUSTED_KEYS_ENV, get_settings

log = logging.getLogger(__name__)


def check_signature(store, prefix: str, uri: str, *, require: bool):
    """The manifest's signature against LLMOPS_TRUSTED_PUBLIC_KEYS: SignatureRefused when it does not verify, or
    (with `require`) when the version is unsigned or no key is configured. Returns the manifest checked (None:
    nothing to check without keys or `require`)."""
    keys = public_keys_from_text(get_settings().trusted_public_keys, TRUSTED_KEYS_ENV)
    if not keys and not require:
        return None
    manifest = store.read_manifest(prefix)
    if manifest is None:
        raise ArtefactNotFoundError(f"{uri} does not exist (no manifest)", fix="roll out a published version")
    check = store.verify_signature(manifest, keys)
    problem = check.problem(require_signature=require)
    if problem:
        raise SignatureRefused(problem, fix="nothing was downloaded; see the rollout's pre-flight for the fix")
    log.info("%s: %s", uri, check.summary() if check.ok else f"{check.status}, accepted (signature not required)")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest-uri", required=True)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--require-signature", action="store_true",
                        help=f"refuse a version without a signature by one of the keys in {TRUSTED_KEYS_ENV}")
    args = parser.parse_args(argv)
    setup_logging()
    started = time.monotonic()
    root = args.manifest_uri
    try:
        root, prefix = split_manifest_uri(args.manifest_uri)
        store = open_store(root, credentials=credentials_from_env(root))
        checked = check_signature(store, prefix, args.manifest_uri, require=args.require_signature)
        dest = store.fetch(prefix, args.dest, verify=True, manifest=checked)  # the very manifest verified
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
