"""Servers die with their owner: SIGKILL or SIGTERM the process that started them and no descendant is left.

Real processes throughout. The validate step's server is started by the real `llmops.validate.vllm_server`
code; vLLM itself is replaced by a cheap stand-in package (`vllm.entrypoints.openai.api_server` on the
PYTHONPATH: an HTTP server answering /health that forks an "EngineCore" in a session of its own, which starts
a "worker"), because a real vLLM takes minutes to start on these machines; the process shape is vLLM's
(API server -> EngineCore -> worker), the part that outlived its owner before.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from llmops.serving.processes import OWNED_GRACE_S, process_alive, start_owned

API_SERVER = textwrap.dedent("""
    import http.server, os, subprocess, sys
    from pathlib import Path
    port = int(sys.argv[sys.argv.index("--port") + 1])
    pids = Path(os.environ["FAKE_VLLM_PIDS"])
    here = Path(__file__).parent
    subprocess.Popen([sys.executable, str(here / "engine.py")], start_new_session=True)  # leaves the group
    with pids.open("a") as handle:
        handle.write(f"{os.getpid()}\\n")

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if len(pids.read_text().split()) >= 3 else 503)
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
""")
# EngineCore starts a worker; both only sleep.
ENGINE = textwrap.dedent("""
    import os, subprocess, sys, time
    from pathlib import Path
    with open(os.environ["FAKE_VLLM_PIDS"], "a") as handle:
        handle.write(f"{os.getpid()}\\n")
    if sys.argv[1:] != ["worker"]:
        subprocess.Popen([sys.executable, __file__, "worker"])
    time.sleep(600)
""")

OWNER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from llmops.serving.ready import ReadyLimit
    from llmops.validate.vllm_server import server_flags, vllm_server
    with vllm_server(Path(sys.argv[1]), server_flags(max_model_len=512), python=sys.executable,
                     ready=ReadyLimit("LLMOPS_VLLM_READY_TIMEOUT_S", 600)) as base:
        print("ready", base, flush=True)
        time.sleep(600)
''')


def _fake_vllm(root: Path) -> Path:
    package = root / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (root / "vllm", root / "vllm" / "entrypoints", package):
        (folder / "__init__.py").write_text("")
    (package / "api_server.py").write_text(API_SERVER)
    (package / "engine.py").write_text(ENGINE)
    return root


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if process_alive(pid)]
        if not alive:
            return []
        time.sleep(0.2)
    return [pid for pid in pids if process_alive(pid)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_validate_server_dies_with_its_owner(tmp_path, sig):
    pids_file = tmp_path / "pids"
    env = {**os.environ, "FAKE_VLLM_PIDS": str(pids_file),
           "PYTHONPATH": os.pathsep.join([str(_fake_vllm(tmp_path / "fake")), os.environ["PYTHONPATH"]])}
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    pids: list[int] = []
    try:
        assert owner.stdout.readline().startswith("ready http://127.0.0.1:")
        pids = [int(pid) for pid in pids_file.read_text().split()]
        assert len(pids) == 3 and all(process_alive(pid) for pid in pids), "API server, engine and worker run"
        os.kill(owner.pid, sig)
        owner.wait(timeout=60)
        left = _wait_gone(pids, OWNED_GRACE_S + 30)
        assert not left, f"processes of the validate server outlived their owner: {left}"
    finally:
        owner.kill()
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


STUBBORN = textwrap.dedent('''
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                              "signal.SIG_IGN); time.sleep(600)"], start_new_session=True)
    print(os.getpid(), child.pid, flush=True)
    time.sleep(600)
''')


def test_the_guard_kills_what_ignores_sigterm_and_survives_a_thread_that_ends(tmp_path):
    """The owner starts the server from a thread that then ends (the kernel's parent-death signal follows the
    thread): the server keeps running; when the owner is SIGKILLed, even processes that ignore SIGTERM and left
    the process group are gone after the grace period."""
    owner_code = textwrap.dedent(f'''
        import subprocess, sys, threading, time
        from llmops.serving.processes import start_owned
        box = []
        thread = threading.Thread(target=lambda: box.append(start_owned(
            [sys.executable, "-c", {STUBBORN!r}], grace_s=1, stdout=subprocess.PIPE, text=True)))
        thread.start()
        thread.join()
        pids = box[0].stdout.readline().split()
        time.sleep(1.5)
        print(*pids, box[0].poll() is None, flush=True)
        time.sleep(600)
    ''')
    owner = subprocess.Popen([sys.executable, "-c", owner_code], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    pids: list[int] = []
    try:
        server, child, running = owner.stdout.readline().split()
        pids = [int(server), int(child)]
        assert running == "True", "the server outlived the thread that started it"
        assert all(process_alive(pid) for pid in pids)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=60)
        assert not _wait_gone(pids, 30)
    finally:
        owner.kill()
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_an_owned_command_reports_its_own_exit_status(tmp_path):
    assert start_owned([sys.executable, "-c", "raise SystemExit(2)"]).wait(timeout=60) == 2
    assert start_owned([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"]).wait(timeout=60) == 137


SEAWEED_OWNER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from support.seaweed import seaweed_server
    with seaweed_server(Path(sys.argv[1])) as server:
        print(server.pid, flush=True)
        time.sleep(600)
''')


def test_a_stand_in_server_dies_with_the_test_process(tmp_path):
    """`make test` stopped by a timeout (SIGKILL of pytest) leaves no SeaweedFS (olah and Milvus start the same
    way, through support._proc.start_owned)."""
    tests_dir = Path(__file__).resolve().parents[1]
    owner = subprocess.Popen([sys.executable, "-c", SEAWEED_OWNER, str(tmp_path / "s3"), str(tests_dir)],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    weed: list[int] = []
    try:
        guard = int(owner.stdout.readline())
        weed = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(guard)], capture_output=True,
                                                   text=True).stdout.split()]
        assert weed and all("weed" in Path(f"/proc/{pid}/cmdline").read_text() for pid in weed)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=60)
        assert not _wait_gone([guard, *weed], OWNED_GRACE_S + 30)
    finally:
        owner.kill()
        for pid in weed:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_server_that_outlives_its_task_still_dies_with_make_ui(tmp_path):
    """make ui's scheduler runs tasks that start vLLM servers meant to outlive the task (the local runtime's
    stable and canary, in sessions of their own). Here a component started like make ui's (`start_owned`) runs a
    "task" that starts such a server and exits: the server is re-parented to the component's guard, not PID 1,
    and dies when the make-ui process is SIGKILLed."""
    task = textwrap.dedent('''
        import subprocess, sys
        server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
        print(server.pid, flush=True)
    ''')
    component = f"import subprocess, sys, time; subprocess.run([sys.executable, '-c', {task!r}]); time.sleep(600)"
    make_ui = textwrap.dedent(f'''
        import subprocess, sys, time
        from llmops.serving.processes import start_owned
        proc = start_owned([sys.executable, "-c", {component!r}], stdout=subprocess.PIPE, text=True)
        print(proc.stdout.readline().strip(), proc.pid, flush=True)
        time.sleep(600)
    ''')
    owner = subprocess.Popen([sys.executable, "-c", make_ui], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    server = 0
    try:
        server, guard = map(int, owner.stdout.readline().split())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the task has exited: its server's parent is now the guard
            parent = int(Path(f"/proc/{server}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if parent == guard:
                break
            time.sleep(0.1)
        assert parent == guard, "the orphaned server was re-parented to the component's guard"
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(timeout=60)
        assert not _wait_gone([server], OWNED_GRACE_S + 30)
    finally:
        owner.kill()
        if server and process_alive(server):
            os.kill(server, signal.SIGKILL)
