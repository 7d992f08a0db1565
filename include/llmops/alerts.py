"""Failure alerts as webhook payloads: DingTalk robots and a generic JSON webhook. Pure functions.

DingTalk robots with "additional signature" security need `timestamp` and `sign` query parameters:
sign = base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}")), URL-encoded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote_plus, urlencode, urlsplit, urlunsplit

WEBHOOK_KINDS = ("dingtalk", "generic")


@dataclass(frozen=True)
class Failure:
    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    error: str
    log_url: str = ""

    @property
    def title(self) -> str:
        return f"[llmops] {self.dag_id}.{self.task_id} failed"


def dingtalk_payload(failure: Failure, *, at_mobiles: list[str] | None = None) -> dict:
    lines = [
        f"### {failure.title}",
        f"- run: `{failure.run_id}`",
        f"- try: {failure.try_number}",
        f"- error: {failure.error[:500]}",
    ]
    if failure.log_url:
        lines.append(f"- [task log]({failure.log_url})")
    return {
        "msgtype": "markdown",
        "markdown": {"title": failure.title, "text": "\n".join(lines)},
        "at": {"atMobiles": at_mobiles or [], "isAtAll": False},
    }


def generic_payload(failure: Failure) -> dict:
    return {"event": "task_failed", "title": failure.title, **failure.__dict__}


def sign_dingtalk_url(url: str, secret: str, timestamp_ms: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    sign = quote_plus(base64.b64encode(digest).decode())
    parts = urlsplit(url)
    query = "&".join(filter(None, [parts.query, urlencode({"timestamp": timestamp_ms}), f"sign={sign}"]))
    return urlunsplit(parts._replace(query=query))
