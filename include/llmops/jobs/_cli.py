"""Shared plumbing for job entrypoints: logging and the one-line JSON result."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

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
