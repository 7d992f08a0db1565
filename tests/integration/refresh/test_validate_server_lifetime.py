"""The validate step's real vLLM (API server, EngineCore, workers) dies with the job that started it when that job
is SIGKILLed, the case that used to leave 1.6-1.9 GB of busy vLLM under PID 1. One real vLLM start (about a
minute on two quiet cores); the SIGTERM case and the process shape are covered cheaply in
tests/unit/test_owned_processes.py."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from llmops.serving.guard import _descendants
from llmops.serving.processes import OWNED_GRACE_S, process_alive

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # one vLLM start on a shared machine
ROOT = Path(__file__).resolve().parents[3]

OWNER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from llmops.serving.ready import ReadyLimit
    from llmops.validate.vllm_server import server_flags, vllm_server
    with vllm_server(Path(sys.argv[1]), server_flags(max_model_len=128), python=sys.executable,
                     ready=ReadyLimit("LLMOPS_VLLM_READY_TIMEOUT_S", 1500)) as base:
        print("ready", base, flush=True)
        time.sleep(1800)
''')


def test_a_sigkilled_validate_job_leaves_no_vllm_process(tiny_model, serving_python):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "include")}
    owner = subprocess.Popen([str(serving_python), "-c", OWNER, str(tiny_model)], env=env, stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    tree: list[int] = []
    try:
        line = owner.stdout.readline()
        assert line.startswith("ready http://127.0.0.1:"), f"vLLM did not start: {line!r}"
        tree = _descendants(owner.pid)
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    for pid in tree if process_alive(pid)]
        assert len(tree) >= 3 and any("vllm.entrypoints.openai.api_server" in c for c in commands), commands
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=60)
        deadline = time.monotonic() + OWNED_GRACE_S + 60
        while any(process_alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [pid for pid in tree if process_alive(pid)]
        assert not left, f"vLLM processes outlived the SIGKILLed job: {left}"
    finally:
        owner.kill()
        for pid in tree:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
