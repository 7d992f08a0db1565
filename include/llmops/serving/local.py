"""The local runtime: stable and canary are real vLLM processes (serving environment) on 127.0.0.1.

`LocalRuntime` is the rollout port (`llmops.serving.port.RolloutBackend`) on this machine: artefacts fetched
and verified from the store into a model cache, served by vLLM processes started by `llmops.serving.launcher`
and stopped, with all their children, by `llmops.serving.processes`.

State lives in `$LLMOPS_HOME/serving/<deployment>/state.json` (which process serves which version on
which port, the canary weight, the previous version) so separate Airflow tasks, a retry, or the demo
script see the same deployment. `rollout.json` beside it is the rollout record (`llmops.rollout.record`: the
lock, the resolved request, the progress), replaced atomically under a file lock with a generation check. Every server runs in its own working directory
`serving/<deployment>/servers/<tag>/`.

There is no load balancer locally: the canary weight is recorded (and reported) but the analysis
probes each backend directly, exactly as on Kubernetes.

Warm roll back: a promotion given `keep` leaves the replaced stable process running as `kept` until `kept_until`
(state.json); `restore_warm` makes it the stable process again (no vLLM start) and stops the one it replaces;
`release_warm` stops it (the driver does so when it expired, and before any canary starts).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmops.canary.probes import generation_ok
from llmops.hardware import cuda_available
from llmops.seams import pause_point
from llmops.serving.errors import LocalRuntimeError
from llmops.serving.launcher import cpu_halves, free_port, start_vllm
from llmops.serving.port import Problem, Readiness, Track, WaitTarget, WarmCopy, verify_by_download
from llmops.serving.processes import available_memory_bytes, process_alive, stop_process, tagged_processes
from llmops.serving.ready import ReadyLimit, wait_until_ready

log = logging.getLogger(__name__)

VLLM_CPU_RSS_BYTES = int(1.6 * 1024**3)  # one tiny-model vLLM CPU server, measured ~1.4 GB


@dataclass
class Server:
    """One running vLLM server of a track, as recorded in state.json."""

    pid: int
    port: int
    version: str  # manifest URI
    model_dir: str
    log_path: str
    started_at: float
    tag: str = ""  # LLMOPS_SERVER_TAG of the process and its children
    workdir: str = ""  # the server's own working directory, inherited by its children
    extra_args: list[str] = field(default_factory=list)
    cpus: str = ""  # VLLM_CPU_OMP_THREADS_BIND of the server ("" on GPU or from before it was recorded)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class DeploymentState:
    stable: Server | None = None
    canary: Server | None = None
    canary_percent: int = 0
    previous_version: str | None = None
    history: list[dict] = field(default_factory=list)
    kept: Server | None = None  # the replaced stable process, kept warm after a promotion
    kept_until: float | None = None

    @classmethod
    def from_dict(cls, data: dict) -> DeploymentState:
        return cls(stable=Server(**data["stable"]) if data.get("stable") else None,
                   canary=Server(**data["canary"]) if data.get("canary") else None,
                   canary_percent=data.get("canary_percent", 0), previous_version=data.get("previous_version"),
                   history=data.get("history", []), kept=Server(**data["kept"]) if data.get("kept") else None,
                   kept_until=data.get("kept_until"))


def process_ready(identifiers: dict) -> Readiness:
    """The local readiness check (the trigger runs it too): the process runs and a real generation succeeds."""
    pid, port = identifiers["pid"], identifiers["port"]
    if not process_alive(pid, port):
        return Readiness(False, f"the {identifiers.get('track', '')} vLLM process {pid} exited; "
                                f"see {identifiers.get('log_path', 'its log')}", fatal=True)
    ok, detail = generation_ok(identifiers["url"], identifiers["model"], timeout_s=10)
    return Readiness(ok, detail)


def read_record_at(identifiers: dict) -> tuple[dict | None, str | None]:
    """The rollout record in `identifiers["path"]` and its generation (a trigger reads it this way too)."""
    try:
        stored = json.loads(Path(identifiers["path"]).read_text())
    except FileNotFoundError:
        return None, None
    return stored["record"], str(stored["generation"])


def stop_server(server: Server) -> None:
    stop_process(server.pid, port=server.port, tag=server.tag, workdir=server.workdir)
    if server.workdir and not tagged_processes(server.tag, server.workdir):
        shutil.rmtree(server.workdir, ignore_errors=True)


class LocalRuntime:
    """One deployment on this machine, and the rollout port over it (`runtime = "local"`).

    `model_cache` holds the verified copies vLLM serves (default `<home>/serving/models`)."""

    runtime = "local"

    def __init__(self, home: Path, deployment: str, model: str, *, serving_python: str,
                 max_model_len: int = 512, extra_args: list[str] | None = None, model_cache: Path | None = None):
        self.root = Path(home) / "serving" / deployment
        self.root.mkdir(parents=True, exist_ok=True)
        self.model_cache = Path(model_cache) if model_cache is not None else Path(home) / "serving" / "models"
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

    # --- the rollout record (lock, request, progress: llmops.rollout.record) ------------------------
    @property
    def record_path(self) -> Path:
        return self.root / "rollout.json"

    def read_record(self) -> tuple[dict | None, str | None]:
        return read_record_at(self.record_identifiers())

    def record_identifiers(self) -> dict:
        return {"runtime": self.runtime, "path": str(self.record_path)}

    def write_record(self, data: dict, version: str | None) -> str | None:
        """Compare-and-swap on the generation number, under an exclusive lock on a guard file; the new content
        replaces the old atomically (a reader never sees half a record, a SIGKILL never leaves one)."""
        with open(self.root / "rollout.guard", "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                _, current = self.read_record()
                if current != version:
                    return None
                generation = int(current or 0) + 1
                tmp = self.record_path.with_name(f".rollout.json.{os.getpid()}.tmp")
                tmp.write_text(json.dumps({"generation": generation, "record": data}, indent=1))
                os.replace(tmp, self.record_path)
                return str(generation)
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def lock_holder(self) -> str | None:
        record, _ = self.read_record()
        return record["run_id"] if record and record.get("status") != "finished" else None

    # --- processes -----------------------------------------------------------------------------
    def _cpus_for(self, track: str, state: DeploymentState) -> str:
        """The half of this process's CPUs the other track's live server does not use: two servers compared
        with each other must not share a core (vLLM's `auto` bind puts both on the first one)."""
        if cuda_available():
            return ""
        first, second = cpu_halves()
        other: Server | None = state.canary if track == "stable" else state.stable
        if other is not None and other.cpus in (first, second) and process_alive(other.pid, other.port):
            return second if other.cpus == first else first
        return first if track == "stable" else second

    def placement(self) -> str:
        """Where stable and canary run, for the rollout report: disjoint CPU sets, or that they share one."""
        state = self.load()
        if state.stable is None or state.canary is None or not (state.stable.cpus and state.canary.cpus):
            return ""
        stable, canary = set(state.stable.cpus.split(",")), set(state.canary.cpus.split(","))
        if stable & canary:
            return (f"stable and canary SHARE CPUs {','.join(sorted(stable & canary))} (this process may use "
                    f"{len(os.sched_getaffinity(0))} CPU): their latencies are compared under contention")
        return (f"stable on CPUs {state.stable.cpus}, canary on CPUs {state.canary.cpus} "
                "(disjoint, VLLM_CPU_OMP_THREADS_BIND)")

    def _start(self, track: str, version: str, model_dir: Path, extra_args: list[str]) -> Server:
        cpus = self._cpus_for(track, self.load())
        port = free_port()
        log_path = self.root / f"{track}-{port}.log"
        tag = f"{track}-{port}-{uuid.uuid4().hex[:12]}"
        workdir = self.root / "servers" / tag
        workdir.mkdir(parents=True)
        process = start_vllm(self.serving_python, model_dir, served_name=self.model, port=port,
                             max_model_len=self.max_model_len, log_path=log_path, extra_args=extra_args, tag=tag,
                             cwd=workdir, cpus=cpus)
        log.info("started %s vLLM for %s on port %d (pid %d, args %s, CPUs %s, log %s)", track, version, port,
                 process.pid, extra_args, cpus or "-", log_path)
        return Server(process.pid, port, version, str(model_dir), str(log_path), time.time(), tag, str(workdir),
                      list(extra_args), cpus)

    def deploy(self, track: str, version: str, model_dir: Path, *, extra_args: list[str] | None = None) -> Server:
        """Start (or keep, if it already serves `version` with these arguments) the process of `track`.

        Idempotent. The deployment's `extra_args` come first, then this track's own (`extra_args`)."""
        args = [*self.extra_args, *(extra_args or [])]
        state = self.load()
        current: Server | None = getattr(state, track)
        if (current and current.version == version and current.extra_args == args
                and process_alive(current.pid, current.port)):
            log.info("%s already serves %s on port %d", track, version, current.port)
            return current
        if current:
            stop_server(current)
        server = self._start(track, version, model_dir, args)
        setattr(state, track, server)
        self._event(state, f"{track}_started", version=version, port=server.port)
        self.save(state)
        return server

    def wait_ready(self, track: str, *, timeout_s: float | None = None, poll_s: float = 2.0) -> float:
        """Block until `process_ready` holds for `track` (starting a stable outside a rollout: fixtures, the
        benchmark); return the seconds since it was started. The limit is `LLMOPS_VLLM_READY_TIMEOUT_S` unless
        `timeout_s` is given; an expired wait is retried once with twice the limit (`llmops.serving.ready`)."""
        server = self._server(track)
        identifiers = self._identifiers(track, server)
        limit = ReadyLimit.vllm()
        if timeout_s is not None:
            limit = ReadyLimit(limit.setting, timeout_s)

        def check() -> tuple[bool, str]:
            ready = process_ready(identifiers)
            if ready.fatal:
                raise LocalRuntimeError(f"{self.deployment}: {track} cannot become ready ({ready.detail})",
                                        fix=f"see its log ({server.log_path})")
            return ready.ready, ready.detail

        wait_until_ready(check, limit, f"{self.deployment}: {track} (vLLM on port {server.port})", poll_s=poll_s)
        return time.time() - server.started_at

    def set_weights(self, canary_percent: int) -> None:
        state = self.load()
        state.canary_percent = canary_percent
        self._event(state, "weights", canary_percent=canary_percent)
        self.save(state)

    def promote(self, keep: tuple[int, float] | None = None) -> Server:
        """The canary process becomes the stable one; the old stable is stopped, or with `keep` (replicas,
        until) kept running until then (replicas > 0: locally there is one process). Idempotent."""
        state = self.load()
        if state.canary is None:
            if state.stable is None:
                raise LocalRuntimeError(f"{self.deployment}: nothing to promote")
            return state.stable  # already promoted (a retry)
        old, earlier = state.stable, state.kept
        state.previous_version = old.version if old else state.previous_version
        state.stable, state.canary, state.canary_percent = state.canary, None, 0
        keeping = bool(keep and keep[0] > 0 and old and old.pid != state.stable.pid
                       and process_alive(old.pid, old.port))
        state.kept, state.kept_until = (old, keep[1]) if keeping else (None, None)
        self._event(state, "promoted", version=state.stable.version, kept_until=state.kept_until)
        self.save(state)
        pause_point("promote")  # a test seam (llmops.seams): kill tests stop the task here
        for server in (earlier, None if keeping else old):
            if server and server.pid != state.stable.pid:
                stop_server(server)
        return state.stable

    def restore_warm(self, version: str) -> None:
        """The kept process of `version` becomes the stable one again (no vLLM start); the stable process it
        replaces is stopped. Idempotent: a retry after the swap finds `version` stable and nothing kept."""
        state = self.load()
        kept = state.kept
        if kept is None or kept.version != version:
            if state.stable is not None and state.stable.version == version:
                return
            raise LocalRuntimeError(f"{self.deployment}: no kept process of {version} to restore",
                                    fix="trigger again: the rollout then starts a canary of it")
        replaced = state.stable
        state.stable, state.kept, state.kept_until = kept, None, None
        state.previous_version = replaced.version if replaced else state.previous_version
        self._event(state, "warm_restored", version=version, port=kept.port)
        self.save(state)
        if replaced is not None and replaced.pid != kept.pid:
            stop_server(replaced)

    def warm_copy(self) -> WarmCopy | None:
        state = self.load()
        if state.kept is None:
            return None
        return WarmCopy(state.kept.version, state.kept_until or 0.0, 1, state.kept.url,
                        WaitTarget("local", "previous", self._identifiers("previous", state.kept)))

    def release_warm(self) -> str | None:
        state = self.load()
        kept = state.kept
        if kept is None:
            return None
        state.kept, state.kept_until = None, None
        self._event(state, "kept_released", version=kept.version)
        self.save(state)
        stop_server(kept)
        return f"vLLM process {kept.pid} of {kept.version} (port {kept.port})"

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
        for server in (state.canary, state.stable, state.kept):
            if server is not None:
                stop_server(server)
        state.stable = state.canary = state.kept = None
        self.save(state)

    # --- the rollout port (llmops.serving.port.RolloutBackend) ---------------------------------
    def model_dir(self, manifest) -> Path:
        return self.model_cache / manifest.model / hashlib.sha256((manifest.uri or "").encode()).hexdigest()[:12]

    def stable_version(self) -> str | None:
        stable = self.load().stable
        return stable.version if stable and process_alive(stable.pid, stable.port) else None

    def previous_version(self) -> str | None:
        return self.load().previous_version

    def verify_artefact(self, store, manifest) -> list[str]:
        return verify_by_download(store, manifest, self.model_dir(manifest))  # also the copy vLLM will serve

    def capacity_problems(self, facts) -> list[Problem]:
        free = available_memory_bytes()
        if free >= VLLM_CPU_RSS_BYTES:
            return []
        return [Problem("capacity", f"the canary vLLM needs ~{VLLM_CPU_RSS_BYTES / 2**30:.1f} GiB of memory, "
                                    f"{free / 2**30:.1f} GiB are available", "stop other servers and retry")]

    def deploy_canary(self, manifest, run_id: str, extra_args: list[str] | None = None) -> None:
        self.deploy("canary", manifest.uri, self.model_dir(manifest), extra_args=extra_args)

    def wait_target(self, track: Track, manifest=None) -> WaitTarget:
        return WaitTarget("local", track, self._identifiers(track, self._server(track)))

    def _server(self, track: Track) -> Server:
        server = getattr(self.load(), track)
        if server is None:
            raise LocalRuntimeError(f"{self.deployment}: no {track} process to wait for")
        return server

    def _identifiers(self, track: Track, server: Server) -> dict:
        return {"url": server.url, "pid": server.pid, "port": server.port, "model": self.model, "track": track,
                "log_path": server.log_path}

    def check_ready(self, target: WaitTarget) -> Readiness:
        return process_ready(target.identifiers)

    def endpoints(self) -> tuple[str | None, str]:
        state = self.load()
        if state.canary is None:
            raise LocalRuntimeError(f"{self.deployment}: no canary is running")
        return (state.stable.url if state.stable else None), state.canary.url

    def canary_gone(self) -> str | None:
        canary = self.load().canary
        if canary is None:
            return "no canary process is recorded"
        if not process_alive(canary.pid, canary.port):
            return f"the canary vLLM process {canary.pid} (port {canary.port}) exited; see {canary.log_path}"
        return None

    def begin_promote(self, manifest, keep: tuple[int, float] | None = None) -> bool:
        self.promote(keep)  # the canary process, already serving and judged, becomes the stable one
        return False

    def finish_promote(self) -> None:
        pass
