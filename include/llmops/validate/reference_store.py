"""The reference a quantized candidate is judged against: the UNQUANTIZED checkpoint served by the same runtime,
with the same dtype and flags, answering the same golden prompts. Comparing across runtimes (transformers in
fp32 against vLLM in bf16) judged the runtime, not the quantization.

A reference is recorded once per (repo, commit, runtime and its version, dtype, flags, golden set) and reused by
every recipe of that commit: `obtain_reference` returns the stored record or records it. Two validate jobs of one
commit (two recipes, mapped in parallel) may race for it: an exclusive lock (fcntl.flock on a file beside the
record) makes the second wait while the first serves the source checkpoint, and the record is published with a
hard link that never replaces an existing one, so even where the lock is not honoured both read one record.

A record: {"key": ..., "prompts": [{"prompt", "prompt_token_ids", "token_ids", "text", "top_logprobs"}], ...}:
the greedy continuation of each golden prompt and, per continuation token, the reference's own top-k logprobs
from the same teacher-forced request the candidate gets (llmops.validate.teacher_forced).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from llmops.validate.errors import ValidationFailed

log = logging.getLogger(__name__)

#: Bumped when the record's content changes meaning (older records are then recorded again).
RECORD_VERSION = 1


def reference_key(*, repo_id: str, sha: str, runtime: str, runtime_versions: dict, flags: dict, golden: dict,
                  top_k: int) -> dict:
    """Everything the reference's answers depend on; equal keys give interchangeable records."""
    return {"record_version": RECORD_VERSION, "repo_id": repo_id, "sha": sha, "runtime": runtime,
            "runtime_versions": dict(sorted(runtime_versions.items())), "flags": flags,
            "golden": {"prompts": [p["prompt"] for p in golden.get("prompts", [])],
                       "max_new_tokens": golden.get("max_new_tokens")}, "top_k": top_k}


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def reference_path(directory: Path, key: dict) -> Path:
    return Path(directory) / f"{key['runtime']}-{key_digest(key)}.json"


def _load(path: Path, key: dict) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationFailed(f"reference record {path} is unreadable ({exc})",
                               fix="delete it; the next validation records it again") from None
    if record.get("key") != key:
        raise ValidationFailed(f"reference record {path} was recorded for another source or serving setup",
                               fix="delete it; the next validation records it again")
    return record


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _publish(path: Path, record: dict) -> bool:
    """Write `record` at `path` unless one is there already; True when this call wrote it."""
    partial = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    try:
        partial.write_text(json.dumps(record, sort_keys=True))
        try:
            os.link(partial, path)  # atomic create: never replaces a record another writer published
        except FileExistsError:
            return False
        return True
    finally:
        partial.unlink(missing_ok=True)


def obtain_reference(directory: Path, key: dict, record: Callable[[], list[dict]]) -> tuple[dict, bool]:
    """(the reference record for `key`, whether this call recorded it). `record()` serves the unquantized
    checkpoint and returns its prompts; it runs only when no record exists, and by one caller at a time."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = reference_path(directory, key)
    existing = _load(path, key)
    if existing is not None:
        log.info("reusing the reference recorded at %s", path)
        return existing, False
    with _locked(path.with_suffix(".lock")):
        existing = _load(path, key)  # recorded by the job that held the lock before us
        if existing is not None:
            log.info("reusing the reference another job recorded at %s while this one waited", path)
            return existing, False
        started = time.monotonic()
        log.info("recording the reference (the unquantized checkpoint, served as the candidate will be) at %s", path)
        data = {"key": key, "prompts": record(), "seconds": round(time.monotonic() - started, 1),
                "recorded_at": time.time()}
        if not _publish(path, data):
            return _load(path, key) or data, False
        return data, True
