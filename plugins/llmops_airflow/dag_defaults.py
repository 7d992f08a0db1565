"""What every llmops DAG shares: owner, retries with exponential backoff, the failure notifier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llmops_airflow.notifiers import failure_notifier

OWNER = "ml-platform"
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


def default_args(**overrides) -> dict:
    args = {
        "owner": OWNER,
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,  # multiplier: 30 s, 60 s, 120 s, ... capped below
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": [failure_notifier()],
    }
    args.update(overrides)
    return args
