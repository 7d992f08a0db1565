"""Failure alerts: payloads, DingTalk signing, and the notifier posting to a real local HTTP server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pytest

from llmops.alerts import Failure, dingtalk_payload, sign_dingtalk_url

FAILURE = Failure(dag_id="model_rollout", run_id="manual__1", task_id="analyse", try_number=2,
                  error="canary p95 ratio 3.1 > 1.5", log_url="http://airflow/log")


def test_dingtalk_signature_is_verifiable():
    url = sign_dingtalk_url("https://robot.example/send?access_token=t", "SEC123", 1700000000000)
    query = parse_qs(urlsplit(url).query)
    assert query["access_token"] == ["t"] and query["timestamp"] == ["1700000000000"]
    expected = base64.b64encode(hmac.new(b"SEC123", b"1700000000000\nSEC123", hashlib.sha256).digest()).decode()
    assert unquote_plus(urlsplit(url).query.split("sign=")[1]) == expected


def test_dingtalk_markdown_names_dag_task_and_error():
    payload = dingtalk_payload(FAILURE)
    assert payload["msgtype"] == "markdown"
    text = payload["markdown"]["text"]
    assert "model_rollout.analyse" in text and "p95 ratio 3.1" in text and "(http://airflow/log)" in text


@pytest.fixture
def webhook():
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "json": json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"errcode":0}')

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", received
    server.shutdown()


def _context():
    ti = SimpleNamespace(dag_id="kb_reindex", task_id="reindex", try_number=1, log_url="")
    return {"ti": ti, "dag_run": SimpleNamespace(run_id="scheduled__x"), "exception": RuntimeError("boom")}


@pytest.mark.parametrize("kind", ["dingtalk", "generic"])
def test_notifier_posts_to_the_connection(webhook, monkeypatch, kind):
    from llmops_airflow.notifiers import WebhookNotifier

    url, received = webhook
    conn = json.dumps({"conn_type": "http", "host": f"{url}/robot/send?access_token=abc",
                       "password": "s3cret", "extra": {"kind": kind}})
    monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_ALERTS", conn)
    WebhookNotifier().notify(_context())
    assert len(received) == 1
    sent = received[0]
    if kind == "dingtalk":
        assert "sign=" in sent["path"] and "timestamp=" in sent["path"]
        assert "kb_reindex.reindex" in sent["json"]["markdown"]["text"]
    else:
        assert sent["json"]["event"] == "task_failed" and sent["json"]["error"] == "boom"
    assert "s3cret" not in json.dumps(sent["json"])


def test_notifier_without_connection_sends_nothing(webhook, monkeypatch):
    from llmops_airflow.notifiers import WebhookNotifier

    _, received = webhook
    monkeypatch.delenv("AIRFLOW_CONN_LLMOPS_ALERTS", raising=False)
    WebhookNotifier(conn_id="llmops_alerts_absent").notify(_context())
    assert received == []
