"""Failure notifier posting to a DingTalk robot or a generic JSON webhook.

Configured by an Airflow Connection (default id `llmops_alerts`), for example
    AIRFLOW_CONN_LLMOPS_ALERTS='{"conn_type": "http", "host": "https://oapi.dingtalk.com/robot/send?access_token=...",
                                 "password": "<signing secret>", "extra": {"kind": "dingtalk"}}'
`extra.kind` is `dingtalk` or `generic`; `password` is DingTalk's signing secret (optional). Without the
Connection the notifier logs one line and does nothing: a missing alert channel never fails a DAG.
"""

from __future__ import annotations

import time

import httpx
from airflow.sdk import BaseHook, BaseNotifier

from llmops.alerts import WEBHOOK_KINDS, Failure, dingtalk_payload, generic_payload, sign_dingtalk_url

DEFAULT_CONN_ID = "llmops_alerts"


class WebhookNotifier(BaseNotifier):
    template_fields = ("conn_id",)

    def __init__(self, conn_id: str = DEFAULT_CONN_ID, timeout: float = 10.0):
        super().__init__()
        self.conn_id = conn_id
        self.timeout = timeout

    def _connection(self):
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:  # the Connection is optional; other lookup failures are real errors
            return None

    def notify(self, context) -> None:
        conn = self._connection()
        if conn is None:
            self.log.info("alert connection %r is not configured; no alert sent", self.conn_id)
            return
        ti = context.get("ti") or context.get("task_instance")
        failure = Failure(
            dag_id=getattr(context.get("dag"), "dag_id", "") or (ti.dag_id if ti else ""),
            run_id=getattr(context.get("dag_run"), "run_id", "") or "",
            task_id=getattr(ti, "task_id", "") or "",
            try_number=int(getattr(ti, "try_number", 0) or 0),
            error=str(context.get("exception") or "failed"),
            log_url=getattr(ti, "log_url", "") or "",
        )
        kind = (conn.extra_dejson or {}).get("kind", "generic")
        if kind not in WEBHOOK_KINDS:
            self.log.error("connection %r: extra.kind=%r is not one of %s; fix the Connection", self.conn_id,
                           kind, WEBHOOK_KINDS)
            return
        url = conn.host if "://" in (conn.host or "") else f"{conn.schema or 'https'}://{conn.host}"
        if kind == "dingtalk":
            payload = dingtalk_payload(failure)
            if conn.password:
                url = sign_dingtalk_url(url, conn.password, int(time.time() * 1000))
        else:
            payload = generic_payload(failure)
        try:
            response = httpx.post(url, json=payload, timeout=self.timeout)
            response.raise_for_status()
            self.log.info("alert sent to connection %r (%s): %s", self.conn_id, kind, failure.title)
        except httpx.HTTPError as exc:  # never let an alert failure hide the task failure
            self.log.error("alert to connection %r failed: %s", self.conn_id, type(exc).__name__)


def failure_notifier(conn_id: str = DEFAULT_CONN_ID) -> WebhookNotifier:
    return WebhookNotifier(conn_id=conn_id)
