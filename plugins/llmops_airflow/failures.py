"""Permanent errors of tasks that run in the Airflow worker itself (resolve, plan, select, ...).

The jobs' contract (exit status 2 = permanent, see llmops.jobs._cli) for in-process task bodies:

    @task
    def plan(...):
        with permanent_errors_fail_at_once():
            return plan_run(...)

A permanent `LlmopsError` (llmops.errors.is_permanent) fails the task at once, without retries and with
the error's message; a transient one or any other exception propagates unchanged and is retried.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from llmops.errors import LlmopsError, is_permanent


@contextlib.contextmanager
def permanent_errors_fail_at_once() -> Iterator[None]:
    try:
        yield
    except LlmopsError as exc:
        if not is_permanent(exc):
            raise
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{exc} (permanent error, not retried)") from None
