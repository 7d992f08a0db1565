"""Stopping a local server stops every process it started, also when its main process is already dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from llmops.serving.processes import TAG_VARIABLE, process_alive, stop_process, tagged_processes

# The child gets an environment without the tag: vLLM renames its processes (setproctitle), which overwrites
# /proc/<pid>/environ, so only the inherited working directory still marks the EngineCore as the server's.
PARENT = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env={"PATH": os.environ["PATH"]})
print("started", flush=True)
time.sleep(120)
"""


def test_killing_the_main_pid_leaves_children_that_stop_process_still_stops(tmp_path):
    tag = f"test-{os.getpid()}-{time.time()}"
    workdir = tmp_path / "server"
    workdir.mkdir()
    main = subprocess.Popen([sys.executable, "-c", PARENT], env={**os.environ, TAG_VARIABLE: tag}, cwd=workdir,
                            start_new_session=True, stdout=subprocess.PIPE, text=True)
    try:
        assert main.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 10
        while len(tagged_processes(tag, str(workdir))) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        children = set(tagged_processes(tag, str(workdir))) - {main.pid}
        assert children, "the child is found by its working directory"
        assert not set(tagged_processes(tag)) & children, "(its environment does not carry the tag)"
        os.kill(main.pid, signal.SIGKILL)  # the main process dies alone, as after an OOM kill
        main.wait()
        assert any(process_alive(pid) for pid in children), "the child outlives its parent"
        stop_process(main.pid, grace_s=5, tag=tag, workdir=str(workdir))
        assert not any(process_alive(pid) for pid in children)
        assert tagged_processes(tag, str(workdir)) == []
    finally:
        for pid in tagged_processes(tag, str(workdir)):
            os.kill(pid, signal.SIGKILL)
