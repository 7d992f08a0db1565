"""The owner guard: a process that runs one command and stops its whole tree when the owner dies.

    python -I .../llmops/serving/guard.py --owner PID --grace SECONDS -- COMMAND [ARGS...]

Started by `llmops.serving.processes.owned` (never by hand). A server or job started through it dies with
the process that started it (its owner), however the owner ends: a clean exit, SIGTERM (what Airflow's kill
sends), or SIGKILL, which leaves no chance to clean up. How:

- the guard asks the kernel for a signal when its parent dies (`prctl(PR_SET_PDEATHSIG)`). The kernel sends
  it when the *thread* that started the guard ends, not the process: on that signal the guard checks that
  the owner PID is really gone (its parent is no longer the owner) and otherwise re-arms and keeps running;
- it is a child subreaper (`PR_SET_CHILD_SUBREAPER`): processes of its tree whose own parent died (vLLM's
  EngineCore and workers when the API server is killed) are re-parented to the guard, not to PID 1, so it
  still finds them;
- the command runs in the guard's process group (the owner starts the guard in a session of its own), so a
  `killpg` of the guard's PID reaches every process of the tree at once, and the command's own process
  gets SIGKILL from the kernel should the guard itself be SIGKILLed;
- on SIGTERM or SIGINT (the owner's stop, the owner's death), the guard sends SIGTERM to every process of
  its tree, waits `--grace` seconds, then SIGKILLs what is left, and exits 128 + the signal.
When the command exits by itself, what it left behind is stopped the same way and the guard exits with
the command's status (128 + N when a signal N ended it), so the owner reads the command's exit status.

Standard library only, run with `python -I` (isolated: no PYTHONPATH, no script directory on sys.path),
so it starts in milliseconds in any of the project's interpreters and imports nothing of the project.
Linux only (/proc, prctl).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: The parent-death signal: not SIGTERM, so a thread of the owner that ends (the kernel's "parent" is the
#: thread that forked) can be told apart from a real stop.
OWNER_DIED = signal.SIGUSR1

_libc = ctypes.CDLL(None, use_errno=True)
_stop_signal: int | None = None


def _prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _on_stop(signum, frame) -> None:
    global _stop_signal
    _stop_signal = _stop_signal or signum


def _descendants(root: int) -> list[int]:
    """Live descendants of `root` (from /proc's parent links; zombies excluded)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _reap() -> dict[int, int]:
    """Collect every exited child (orphans re-parented to us included): {pid: wait status}."""
    statuses = {}
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return statuses
        if pid == 0:
            return statuses
        statuses[pid] = status


def _stop_tree(grace: float) -> None:
    me = os.getpid()
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        targets = _descendants(me)
        if not targets:
            return
        for pid in targets:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap()
            if not _descendants(me):
                return
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: guard.py --owner PID --grace SECONDS -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    owner = int(options[options.index("--owner") + 1])
    grace = float(options[options.index("--grace") + 1])
    if not command:
        print("guard.py: no command given", file=sys.stderr)
        return 2

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_stop)
    signal.signal(OWNER_DIED, lambda signum, frame: None)  # checked in the loop below
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, OWNER_DIED)
    if os.getppid() != owner:  # the owner died before the parent-death signal was armed
        return 128 + signal.SIGTERM

    child = os.fork()
    if child == 0:  # the command: same process group as the guard; SIGKILLed by the kernel if the guard dies
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, OWNER_DIED):
                signal.signal(sig, signal.SIG_DFL)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() == os.getpid():  # impossible, but never exec an orphan
                os._exit(127)
            os.execvp(command[0], command)
        except BaseException as exc:  # noqa: BLE001 - the child must never return into the guard's code
            print(f"guard.py: cannot run {command[0]}: {exc}", file=sys.stderr, flush=True)
        os._exit(127)

    status = None
    while status is None and _stop_signal is None:
        if os.getppid() != owner:  # the owner is gone (SIGKILL, crash, exit without stopping us)
            _on_stop(signal.SIGTERM, None)
            break
        _prctl(PR_SET_PDEATHSIG, OWNER_DIED)  # re-arm: the thread that started us may have ended
        status = _reap().get(child)
        if status is None:
            time.sleep(0.2)  # a signal handler cuts it short only to set the flag; polling costs nothing here
    if _stop_signal is not None:
        _stop_tree(grace)
        return 128 + _stop_signal
    _stop_tree(grace)  # what the command left behind (orphaned workers)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
