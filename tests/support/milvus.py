"""The local runtime's Milvus: a Milvus Lite data directory served to every process by `milvus-lite server`.

A plain Milvus Lite file is held by one process: a re-index would lock every reader out for its whole
run. Served, the same directory answers many clients at once, so readers keep querying the live alias
while a full build fills the next version.

    with milvus_lite_server(home / "milvus" / "milvus.db") as uri:     # http://127.0.0.1:<free port>
        os.environ["LLMOPS_MILVUS_URI"] = uri                           # the registry's Lite files -> this server

From a shell (the demo, `make ui`):
    eval "$(python tests/support/milvus.py start --data-dir DIR --pid-file FILE)"   # exports LLMOPS_MILVUS_URI
    python tests/support/milvus.py stop --pid-file FILE
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(1, str(Path(__file__).resolve().parents[2] / "include"))

from llmops.kb.index import LOCAL_SERVER_RECORD
from support._proc import LLMOPS_HOME, free_port, start_owned, stop, wait_until


def milvus_lite_binary() -> str:
    """`milvus-lite` of the current environment, else the Airflow or worker environment's."""
    candidates = [Path(sys.executable).with_name("milvus-lite")]
    candidates += [LLMOPS_HOME / "venvs" / env / "bin" / "milvus-lite" for env in ("airflow", "worker")]
    for candidate in candidates:
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError("milvus-lite is not installed; fix: scripts/envs.sh airflow")


def _answers(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def start_milvus_lite(data_dir: Path, port: int | None = None, log: Path | None = None,
                      timeout: float = 60, owned: bool = True) -> tuple[subprocess.Popen, str]:
    """Start `milvus-lite server` on 127.0.0.1 over `data_dir` in its own process group; return it and its URI.

    `owned` (default): it dies with this process (`start_owned`); `milvus.py start` starts one that outlives
    it, stopped by `milvus.py stop` (the demo scripts' trap)."""
    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = log or data_dir.parent / f"{data_dir.name}.server.log"
    with open(log, "ab") as out:
        command = [milvus_lite_binary(), "server", "--data-dir", str(data_dir), "--host", "127.0.0.1", "--port",
                   str(port)]
        if owned:
            proc = start_owned(command, stdout=out, stderr=subprocess.STDOUT)
        else:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: _answers(port), timeout=timeout, what=f"milvus-lite server on {data_dir}", proc=proc,
                   log=log)
    except BaseException:
        stop(proc)
        raise
    return proc, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def milvus_lite_server(data_dir: Path, port: int | None = None, record: Path | None = None) -> Iterator[str]:
    """Serve `data_dir` while the block runs; `record`: also write the server's "PID URI" there (the file
    `llmops.kb.index.local_server` reads: `make ui` records $LLMOPS_HOME's server for scripts/kb and every job)."""
    proc, uri = start_milvus_lite(data_dir, port)
    try:
        if record is not None:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(f"{proc.pid} {uri}\n")
        yield uri
    finally:
        if record is not None and record.exists() and record.read_text().split()[:1] == [str(proc.pid)]:
            record.unlink()
        stop(proc, grace=10)


def _stop_pid_file(pid_file: Path) -> None:
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:  # only a group we lead: never signal a reused PID's group
            os.killpg(pid, signal.SIGTERM)
    pid_file.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="start or stop the local runtime's Milvus Lite server")
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--data-dir", type=Path, default=LLMOPS_HOME / "milvus" / "milvus.db")
    parser.add_argument("--pid-file", type=Path, default=LLMOPS_HOME / LOCAL_SERVER_RECORD)
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    if args.action == "stop":
        _stop_pid_file(args.pid_file)
        return 0
    _stop_pid_file(args.pid_file)
    proc, uri = start_milvus_lite(args.data_dir, args.port, owned=False)
    args.pid_file.write_text(f"{proc.pid} {uri}\n")
    print(f"export LLMOPS_MILVUS_URI={uri}")
    print(f"milvus-lite server on {uri} serving {args.data_dir} (pid {proc.pid})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
