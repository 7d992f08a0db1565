"""Small process helpers shared by the stand-ins: free ports, readiness polling, stop by PID.

Every stand-in server starts with `start_owned` (llmops.serving.processes): it dies with the test process that
started it, also when pytest is SIGKILLed or stopped by a timeout, so no SeaweedFS, olah or Milvus outlives a
run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from llmops.serving.processes import start_owned

__all__ = ["ROOT", "LLMOPS_HOME", "STANDINS_BIN", "free_port", "free_ports", "wait_until", "http_ok", "stop",
           "start_owned"]

ROOT = Path(__file__).resolve().parents[2]
LLMOPS_HOME = Path(os.environ.get("LLMOPS_HOME", str(ROOT / ".llmops")))
STANDINS_BIN = LLMOPS_HOME / "venvs" / "standins" / "bin"


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (the OS picks from the ephemeral range, away from 8080/18080)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (held open together so the OS cannot hand out one twice)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen | None = None,
               log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready:\n{tail}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet, any error means "try again"
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} was not ready after {timeout:.0f} s:\n{tail}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500


def stop(proc: subprocess.Popen, *, grace: float = 5.0) -> None:
    """SIGTERM the process group we started, then SIGKILL if it hangs (weed's SIGTERM sometimes does)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait(timeout=10)
