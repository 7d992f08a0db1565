"""Shared plumbing for job entrypoints: logging, the exit-status contract and the one-line JSON result.

Exit status (what the step factory reads, on both runtimes):
    0                 success; the last stdout line is `LLMOPS_RESULT {json}`
    EXIT_PERMANENT=2  a permanent error (`llmops.errors.is_permanent`): bad input, policy refusal,
                      checksum mismatch, unknown repo/revision, conflict. argparse's usage errors
                      exit 2 too, and are permanent for the same reason. The task fails at once.
    anything else     transient or unexpected (EXIT_TRANSIENT for a known transient error, 1 for a
                      traceback): the task is retried with backoff.
In pods the error is also written to /dev/termination-log, where Kubernetes keeps it as the
container's termination message (shown in the task's failure).

Logs are for people reading an Airflow task log, which already stamps every line: job lines carry no
timestamp of their own, and third-party noise (progress bars, loader chatter, gRPC connection notices)
is dropped here, at the job boundary, for local subprocesses and pods alike (`clean_line`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import dataclasses
import errno
import json
import logging
import re
import signal
import sys
import threading
import types
import typing
from pathlib import Path

from llmops.errors import LlmopsError, is_permanent, shorten
from llmops.jobs.errors import JobArgumentError, StorageError
from llmops.refresh.plan import WorkItem
from llmops.settings import set_process_defaults

RESULT_PREFIX = "LLMOPS_RESULT "
# KubernetesPodOperator's xcom sidecar reads this file when do_xcom_push=True.
POD_XCOM_FILE = Path("/airflow/xcom/return.json")
# Kubernetes' default terminationMessagePath; it exists only inside a container.
TERMINATION_LOG = Path("/dev/termination-log")
TERMINATION_LIMIT = 4000  # Kubernetes keeps at most 4096 bytes of it

EXIT_PERMANENT = 2
EXIT_TRANSIENT = 75  # sysexits' EX_TEMPFAIL

#: Environment every job runs with (the step factory sets it; `setup_logging` defaults it for direct
#: use): no progress bars, no gRPC chatter below errors, unbuffered output so lines arrive in order.
JOB_ENV = {
    "PYTHONUNBUFFERED": "1",
    "TQDM_DISABLE": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "GRPC_VERBOSITY": "ERROR",
}

#: What a local job inherits from the Airflow worker's environment: these exact names, and names starting with
#: one of JOB_ENV_ALLOWED_PREFIXES. That is what any process needs (PATH, HOME, locale, time zone, temporary
#: folder, CA bundles, proxies), this project's settings (LLMOPS_*, the Milvus URI) and the knobs of the
#: libraries the jobs run (Hugging Face, transformers, torch, vLLM, CUDA device selection, thread counts).
#: Nothing else: not DATABASE_URL, SENTRY_DSN, AIRFLOW__*, cloud keys or whatever else the worker happens to
#: carry. A job's secrets come only from its step (`secret_env`, `store_access`), and a name that looks like
#: a secret (SECRET_NAME: HF_TOKEN, VLLM_API_KEY...) is dropped even when it is allowed here. Pods inherit
#: nothing: their env is written out in the pod spec (plugins' step factory). `doctor` lists the names a job sees.
JOB_ENV_ALLOWED = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "MILVUS_URI", "XDG_CACHE_HOME", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH",
})
JOB_ENV_ALLOWED_PREFIXES = ("LC_", "LLMOPS_", "PYTHON", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_",
                            "TQDM_", "TORCH_", "VLLM_", "CUDA_", "NVIDIA_", "GRPC_", "SENTENCE_TRANSFORMERS_")


def job_env_allowed(name: str) -> bool:
    """True when a local job may inherit the variable `name` (JOB_ENV_ALLOWED, minus SECRET_NAME)."""
    return (name in JOB_ENV_ALLOWED or name.startswith(JOB_ENV_ALLOWED_PREFIXES)) and not SECRET_NAME.search(name)


#: Names of variables that hold (or may hold) secrets: Airflow's configuration and Connections, cloud and
#: hub credentials, anything named like a secret. A local job inherits none of them; it gets only the
#: secrets its step declares (plugins' step factory), and `doctor` lists the names it sees.
SECRET_NAME = re.compile(
    r"^(_?AIRFLOW|AWS_|OSS_|ALIBABA_CLOUD_|ALICLOUD_|AZURE_|GOOGLE_APPLICATION_CREDENTIALS$)"
    r"|TOKEN(?!IZER)|SECRET|PASSW|CREDENTIAL|API_KEY|ACCESS_KEY|PRIVATE_KEY|_AUTH$",
    re.IGNORECASE)

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
# Loggers that talk a lot at INFO about themselves rather than about the job.
QUIET_LOGGERS = ("faiss", "faiss.loader", "httpx", "urllib3", "botocore", "boto3", "s3transfer", "filelock",
                 "sentence_transformers.SentenceTransformer", "huggingface_hub", "grpc", "numexpr")

_TIMESTAMP = re.compile(
    r"^\[?\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?\]?\s*(?:\|\s*)?")
_NOISE = re.compile("|".join([
    r"\d+%\|",                                   # tqdm progress bars
    r"\bit/s\]$|\bs/it\]$",                      # ... and their rate suffixes
    r"faiss\.loader|Loading faiss|Successfully loaded faiss|Could not load library with AVX",
    r"GOAWAY|Got goaway|chttp2_transport|ev_poll_posix|fork_posix",  # gRPC connection notices
    r"^[IWE]\d{4} \d{2}:\d{2}:\d{2}\.\d+ +\d+ \S+\.cc:\d+\]",         # other gRPC/absl C-core lines
]))
_LEVEL = re.compile(r"^(?:\S+ \| )?(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|SUCCESS|METRIC)\b(?: +- | )?")
_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "SUCCESS": logging.INFO, "METRIC": logging.INFO,
           "WARN": logging.WARNING, "WARNING": logging.WARNING, "ERROR": logging.ERROR,
           "CRITICAL": logging.CRITICAL}


def clean_line(line: str) -> str | None:
    """One output line as it should reach the task log: no own timestamp; None for third-party noise."""
    if line.startswith(RESULT_PREFIX):
        return line
    line = _TIMESTAMP.sub("", line.rstrip("\r\n"))
    if not line.strip() or _NOISE.search(line):
        return None
    return line


def line_level(line: str, previous: int = logging.INFO) -> tuple[int, str]:
    """(logging level, text) of a cleaned job line.

    `LEVEL name: message` (our format) and `function | LEVEL - message` (loguru, used by llm-compressor)
    carry their level. A traceback is an error; its indented frames and the lines that follow an error
    without a level of their own keep the previous line's level.
    """
    match = _LEVEL.match(line)
    if match:
        return _LEVELS[match.group(1)], line[match.end():] or line
    if line.startswith("Traceback (most recent call last)"):
        return logging.ERROR, line
    return (previous if previous >= logging.WARNING else logging.INFO), line


class _CleanStream:
    """A text stream that passes whole lines through `clean_line` to the stream it wraps."""

    def __init__(self, stream):
        self._stream = stream
        self._partial = ""
        atexit.register(self._close)

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = re.split(r"\r\n|\r|\n", self._partial)
        for line in lines:
            cleaned = clean_line(line)
            if cleaned is not None:
                self._stream.write(cleaned + "\n")
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def _close(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # the wrapped stream may be closed already (tests)
            if self._partial:
                self.write("\n")
            self.flush()

    def __getattr__(self, name):  # fileno, isatty, encoding... of the real stream
        return getattr(self._stream, name)


def setup_logging() -> None:
    """Call first in a job's main(): log format, quiet third-party loggers, clean stdout and stderr."""
    set_process_defaults(JOB_ENV)
    interactive = sys.stderr.isatty()
    # Only a job process (`python -m llmops...`) has its streams wrapped; a test or a notebook calling main()
    # in-process keeps its own (but gets the job's log format on stderr).
    job_process = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", "").startswith("llmops.")
    if job_process and not interactive and not isinstance(sys.stderr, _CleanStream):
        sys.stdout = _CleanStream(sys.stdout)
        sys.stderr = _CleanStream(sys.stderr)
    if job_process and threading.current_thread() is threading.main_thread():
        # SIGTERM (Airflow's kill, a pod's deletion) unwinds the job like Ctrl-C: `finally` blocks and context
        # managers stop what it started (validate's vLLM) and remove its temporary files. Exit 143: transient.
        signal.signal(signal.SIGTERM, _terminated)
    # A person at a terminal has no task log around the job: give them the time.
    logging.basicConfig(level=logging.INFO, format=("%(asctime)s " if interactive else "") + LOG_FORMAT,
                        stream=sys.stderr, force=True)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _terminated(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    logging.getLogger("llmops.jobs").error("stopped by signal %d (SIGTERM): the task was killed or its pod "
                                           "deleted; a retry runs the job again", signum)
    raise SystemExit(128 + signum)


def fail(exc: LlmopsError, log: logging.Logger | None = None) -> int:
    """Report a job's error once, at ERROR level, and return the exit status that classifies it."""
    permanent = is_permanent(exc)
    kind = "permanent error, not retried" if permanent else "transient error, will be retried"
    (log or logging.getLogger("llmops.jobs")).error("%s (%s)", exc, kind)
    if TERMINATION_LOG.exists():
        with contextlib.suppress(OSError):  # read-only /dev: the task log still has the error
            TERMINATION_LOG.write_text(f"{kind}: {exc}"[:TERMINATION_LIMIT])
    return EXIT_PERMANENT if permanent else EXIT_TRANSIENT


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


# --- bad arguments and bad disks: one line naming the input and the fix -----------------------------------------


def item_parser(description: str | None) -> argparse.ArgumentParser:
    """The command line of a job that works on one model_refresh item: `--item` with the plan task's JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--item", required=True, help="a WorkItem as JSON (from the plan task)")
    return parser


def parse_item(text: str, argument: str = "--item") -> WorkItem:
    """The plan task's WorkItem JSON -> WorkItem, or JobArgumentError naming what is wrong with it."""
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


def fail_known(exc: LlmopsError | OSError, log: logging.Logger, what: str) -> int:
    """The exit status of a job stopped by a domain error or by a full / read-only volume (`what` names the step and
    the place), as one logged line; any other OSError propagates: a crash, which the step retries as transient."""
    if not isinstance(exc, LlmopsError):
        known = storage_error(exc, what)
        if known is None:
            raise exc
        exc = known
    return fail(exc, log)


def storage_error(exc: OSError, what: str) -> StorageError | None:
    """A full disk or a read-only / not writable place as one line naming it and the fix; None for other errors."""
    where = shorten(str(exc.filename), 200) if exc.filename else "its volume"
    if exc.errno in _NO_SPACE:
        return StorageError(f"{what}: no space left writing {where} ({exc.strerror})", fix="free space on that "
                            "volume or give it more (a pod: a larger model-cache PVC or ephemeral storage), "
                            "then re-run")
    if exc.errno in _NOT_WRITABLE:
        return StorageError(f"{what}: {where} is not writable ({exc.strerror})", fix="point it at a writable "
                            "location (LLMOPS_STORE_URI / --store-uri for the store, the step's output directory "
                            "otherwise) or grant write access, then re-run")
    return None
