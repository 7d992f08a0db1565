"""Processes of a local vLLM server: is it alive, which processes are its, stop all of them. Linux /proc only.

Stopping a server stops all of it. vLLM's API server forks an `EngineCore` and workers (about 2.5 GB
and several ports); killing only the main PID leaves them serving. Every server starts in its own
session, in its own working directory, with `LLMOPS_SERVER_TAG=<tag>` in its environment
(`llmops.serving.launcher.start_vllm`); children inherit both. Stopping signals every process whose
working directory is that directory or whose environment carries the tag (SIGTERM, then SIGKILL), also
when the main process is already dead, and never a process that merely reuses a recorded PID. (The
working directory is the reliable mark: vLLM renames its processes with setproctitle, which overwrites
/proc/<pid>/environ.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TAG_VARIABLE = "LLMOPS_SERVER_TAG"
#: How long the guard of an owned process waits after SIGTERM before it SIGKILLs the rest (vLLM needs seconds
#: to shut its engine down; SeaweedFS sometimes never does).
OWNED_GRACE_S = 15.0
GUARD = Path(__file__).with_name("guard.py")


def owned_command(command: list[str], *, grace_s: float = OWNED_GRACE_S) -> list[str]:
    """`command` run under the owner guard (llmops/serving/guard.py): it and every process it starts die with this
    process, also when this process is SIGKILLed. Start it with `start_owned` (or `start_new_session=True`) from
    a thread that lives as long as the command should (the guard tells an ending thread from a dying owner)."""
    return [sys.executable, "-I", str(GUARD), "--owner", str(os.getpid()), "--grace", str(grace_s), "--", *command]


def start_owned(command: list[str], *, grace_s: float = OWNED_GRACE_S, **popen_kwargs) -> subprocess.Popen:
    """Popen of `command` under the owner guard, in a session of its own: `os.killpg(proc.pid, SIGTERM)` (or
    `stop_process(proc.pid)`) stops the whole tree, and the tree dies with this process however it ends.
    The returned process's exit status is the command's (128 + N when signal N ended it)."""
    return subprocess.Popen(owned_command(command, grace_s=grace_s), start_new_session=True, **popen_kwargs)


def process_alive(pid: int, port: int | None = None) -> bool:
    """True if `pid` runs and (when given) was started for `port`, so a reused PID is not mistaken."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    if stat and stat[0] == "Z":
        return False
    return port is None or str(port).encode() in cmdline


def tagged_processes(tag: str, workdir: str = "") -> list[int]:
    """PIDs of live processes of one server: working directory `workdir`, or `LLMOPS_SERVER_TAG=<tag>` in their
    environment (a server and all its children)."""
    if not tag and not workdir:
        return []
    needle = f"{TAG_VARIABLE}={tag}".encode() if tag else None
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            mine = False
            if workdir:
                cwd = os.readlink(entry / "cwd")
                mine = cwd == workdir or cwd == f"{workdir} (deleted)"
            if not mine and needle is not None:
                mine = needle in (entry / "environ").read_bytes().split(b"\0")
            if mine and process_alive(int(entry.name)):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or another user's process
            continue
    return pids


def stop_process(pid: int, *, grace_s: float = 20.0, port: int | None = None, tag: str = "",
                 workdir: str = "") -> None:
    """Stop a server and every process it started: SIGTERM, wait, then SIGKILL.

    With `tag` / `workdir`, every process of the server (see `tagged_processes`) is signalled, whether or not `pid` still runs (a killed main
    process leaves its engine children behind). Without a tag (state written before tags existed): PIDs
    are reused quickly on busy machines, so with `port` only a process started for that port is signalled,
    and its group only if it leads it (our processes start their own session).
    """
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        marked = bool(tag or workdir)
        targets = tagged_processes(tag, workdir) if marked else []
        if not marked:
            if port is not None and not process_alive(pid, port):
                return
            targets = [pid]
        if not targets:
            return
        for target in targets:
            try:
                if not marked and os.getpgid(target) == target:
                    os.killpg(target, sig)
                else:
                    os.kill(target, sig)
            except ProcessLookupError:
                continue
            except PermissionError:
                continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            alive = tagged_processes(tag, workdir) if marked else [p for p in targets if process_alive(p)]
            if not alive:
                return
            time.sleep(0.2)


def available_memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0
