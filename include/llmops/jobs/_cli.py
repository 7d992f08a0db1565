"""Shared plumbing for job entrypoints: logging, the one-line JSON result, and one-line messages for bad
arguments and for a disk that is full or read-only."""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import sys
import types
import typing
from pathlib import Path

from llmops.errors import LlmopsError, shorten

RESULT_PREFIX = "LLMOPS_RESULT "
# KubernetesPodOperator's xcom sidecar reads this file when do_xcom_push=True.
POD_XCOM_FILE = Path("/airflow/xcom/return.json")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


def emit_result(result: dict) -> None:
    """Print the job's result as the last stdout line; the step factory parses it into XCom."""
    text = json.dumps(result, sort_keys=True, default=str)
    print(RESULT_PREFIX + text, flush=True)
    if POD_XCOM_FILE.parent.is_dir():
        POD_XCOM_FILE.write_text(text)


def parse_result(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


class JobArgumentError(LlmopsError):
    """A job's command-line argument is malformed. The message is one line: the argument, what is wrong, the fix."""

    def __init__(self, argument: str, what: str, fix: str):
        self.argument, self.what, self.fix = argument, what, fix
        super().__init__(f"{argument}: {what}; fix: {fix}")


def parse_item(text: str, argument: str = "--item"):
    """The plan task's WorkItem JSON -> WorkItem, or JobArgumentError naming what is wrong with it."""
    from llmops.refresh import WorkItem

    fix = "pass the item exactly as the model_refresh plan task wrote it (re-run the plan task if it was edited)"
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise JobArgumentError(argument, f"is not JSON ({getattr(exc, 'msg', 'too deeply nested')}): "
                                         f"{shorten(text)}", fix) from None
    if not isinstance(data, dict):
        raise JobArgumentError(argument, f"is a JSON {type(data).__name__}, not an object: {shorten(text)}", fix)
    fields = {f.name: f for f in dataclasses.fields(WorkItem)}
    hints = typing.get_type_hints(WorkItem)
    missing = sorted(name for name, f in fields.items() if f.default is dataclasses.MISSING and name not in data)
    unknown = sorted(set(data) - set(fields))
    if missing or unknown:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        parts = ([f"lacks {listed}"] if missing else []) + (
            [f"has unknown keys {shorten(', '.join(unknown))}"] if unknown else [])
        raise JobArgumentError(argument, " and ".join(parts), fix)
    for name, value in data.items():
        hint = hints[name]
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        allowed = tuple(typing.get_origin(t) or t for t in options)
        allowed += (int,) if float in allowed else ()
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            kinds = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise JobArgumentError(argument, f"key {name} is {shorten(value)}, not {kinds}", fix)
    return WorkItem(**data)


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM}


def os_error_line(exc: OSError, what: str) -> str | None:
    """One line for a full disk or a read-only / not writable place, naming it and the fix; None for other errors."""
    where = shorten(str(exc.filename), 200) if exc.filename else "its volume"
    if exc.errno in _NO_SPACE:
        return (f"{what}: no space left writing {where} ({exc.strerror}); fix: free space on that volume or give it "
                "more (a pod: a larger model-cache PVC or ephemeral storage), then re-run")
    if exc.errno in _NOT_WRITABLE:
        return (f"{what}: {where} is not writable ({exc.strerror}); fix: point it at a writable location "
                "(LLMOPS_STORE_URI / --store-uri for the store, the step's output directory otherwise) or grant "
                "write access, then re-run")
    return None
