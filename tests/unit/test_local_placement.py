"""Local stable and canary servers are compared on disjoint CPU sets (vLLM's `auto` bind would put both on the
first core), the track started second takes the half the live one does not use (also after a promotion
swapped them), and the report says when the machine leaves them one shared CPU."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmops.serving import launcher
from llmops.serving.local import DeploymentState, LocalRuntime, Server


@pytest.fixture()
def sleeper():
    """A live process whose command line names a port, as a vLLM server's does."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "--port", "45123"])
    yield proc
    proc.kill()
    proc.wait()


def _runtime(tmp_path) -> LocalRuntime:
    return LocalRuntime(tmp_path, "tiny-llama-chat", "tiny-llama", serving_python=sys.executable)


def _server(pid: int, cpus: str) -> Server:
    return Server(pid, 45123, "v", "/m", "/log", 0.0, cpus=cpus)


def test_the_second_track_takes_the_half_the_live_first_one_does_not_use(tmp_path, sleeper, monkeypatch):
    monkeypatch.setattr(launcher.os, "sched_getaffinity", lambda _: {0, 1, 2, 3})
    monkeypatch.setattr("llmops.serving.local.cuda_available", lambda: False)
    runtime = _runtime(tmp_path)
    assert runtime._cpus_for("stable", DeploymentState()) == "0,1"
    assert runtime._cpus_for("canary", DeploymentState(stable=_server(sleeper.pid, "0,1"))) == "2,3"
    # after a promotion the stable process runs on the canary's half: the next canary takes the other one
    assert runtime._cpus_for("canary", DeploymentState(stable=_server(sleeper.pid, "2,3"))) == "0,1"
    assert runtime._cpus_for("stable", DeploymentState(canary=_server(sleeper.pid, "0,1"))) == "2,3"
    # a dead server holds nothing
    assert runtime._cpus_for("canary", DeploymentState(stable=_server(2**22 + 7, "2,3"))) == "2,3"

    runtime.save(DeploymentState(stable=_server(sleeper.pid, "0,1"), canary=_server(sleeper.pid, "2,3")))
    assert runtime.placement() == "stable on CPUs 0,1, canary on CPUs 2,3 (disjoint, VLLM_CPU_OMP_THREADS_BIND)"


def test_one_cpu_is_shared_and_the_report_says_so(tmp_path, sleeper, monkeypatch):
    monkeypatch.setattr(launcher.os, "sched_getaffinity", lambda _: {3})
    monkeypatch.setattr("llmops.serving.local.os.sched_getaffinity", lambda _: {3})
    monkeypatch.setattr("llmops.serving.local.cuda_available", lambda: False)
    runtime = _runtime(tmp_path)
    stable = _server(sleeper.pid, runtime._cpus_for("stable", DeploymentState()))
    canary = _server(sleeper.pid, runtime._cpus_for("canary", DeploymentState(stable=stable)))
    assert (stable.cpus, canary.cpus) == ("3", "3")
    runtime.save(DeploymentState(stable=stable, canary=canary))
    assert runtime.placement().startswith("stable and canary SHARE CPUs 3")


def test_the_bind_reaches_the_vllm_environment_on_cpu(monkeypatch):
    monkeypatch.setattr(launcher, "cuda_available", lambda: False)
    _, env = launcher.vllm_command("python", "/m", served_name="m", port=1, max_model_len=64, cpus="2,3")
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "2,3"
