"""A tiny reverse proxy that makes a *real* vLLM canary slow or erroring. Test code only.

Why a proxy and not a mock: the canary behind it is a real vLLM process serving real completions; the
proxy only adds what we cannot make a healthy CPU server do on demand (a fixed extra delay per
request, or HTTP 500 on a share of requests), the way a degraded GPU node or a broken sidecar would.
Streaming responses are passed through chunk by chunk so TTFT stays measurable.
"""

from __future__ import annotations

import itertools
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FaultProxy:
    def __init__(self, upstream: str, *, delay_s: float = 0.0, error_every: int = 0):
        self.upstream = upstream.rstrip("/")
        self.delay_s = delay_s
        self.error_every = error_every  # every n-th completion request answers 500 (0: never)
        self._counter = itertools.count(1)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output readable
                pass

            def _forward(self, method: str):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else None
                if self.path.startswith("/v1/"):
                    if proxy.error_every and next(proxy._counter) % proxy.error_every == 0:
                        payload = b'{"error": {"message": "injected fault", "code": 500}}'
                        self.send_response(500)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    time.sleep(proxy.delay_s)
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                with httpx.Client(timeout=60) as client, client.stream(
                        method, proxy.upstream + self.path, content=body, headers=headers) as response:
                    self.send_response(response.status_code)
                    self.send_header("Content-Type", response.headers.get("Content-Type", "application/json"))
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in response.iter_raw():
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")

            def do_GET(self):
                self._forward("GET")

            def do_POST(self):
                self._forward("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
