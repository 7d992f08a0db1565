"""A real local Airflow 3 on 127.0.0.1 with this project's DAGs, plugins and stand-ins.

One implementation for `make ui` (`python -m support.airflow_stack`) and for the tests in tests/airflow
(a session fixture): api-server, scheduler (LocalExecutor), dag-processor and triggerer, each in its own
process group under the owner guard (`llmops.serving.guard`): they die with this process however it ends
(Ctrl-C, SIGTERM, SIGKILL), and so do the processes their tasks leave running (the local runtime's stable and
canary vLLM), which the kernel re-parents to the guard (a child subreaper) when their task process ends. Plus
what the pipelines need locally:

- the demo model (tiny-llama) as a Hugging Face repo on an offline olah mirror (`HF_ENDPOINT`);
- the local artefact store (`LLMOPS_STORE_URI`, a folder);
- one Milvus Lite server (`support.milvus`) shared by every process: `LLMOPS_MILVUS_URI` replaces the
  knowledge bases' Milvus Lite files, which one process at a time could open.

Settings follow shared/ENVIRONMENT.md: API base URL and execution API URL on the chosen port, a JWT secret
and API secret key generated once per Airflow home (0600 file), PARALLELISM 4. The scheduler and triggerer
run with `--skip-serve-logs`: their log servers would listen on every interface, and with the
LocalExecutor the api-server reads task logs from the shared log folder anyway. Cron schedules are off
unless `AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=True` is set (manual runs only, so starting the UI does not
start a daily refresh of every model); DAGs are unpaused at creation so a triggered run starts at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from llmops.jobs._cli import parse_result
from support._proc import ROOT, free_port, free_ports, http_ok, start_owned, stop

DEMO_REPO = "llmops-demo/tiny-llama"
COMPONENTS = {  # name -> airflow arguments
    "api-server": ["api-server"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
USERNAME = "admin"


@dataclass
class LocalAirflow:
    """A running stack: where it answers, how to log in, the environment its tasks see."""

    url: str
    username: str
    password: str
    airflow_home: Path
    state: Path
    env: dict[str, str]
    logs: dict[str, Path] = field(default_factory=dict)
    demo_model: Path | None = None
    """The trained demo model's folder (the machine's build that the stack published to its hub mirror)."""
    _token: str | None = None

    def token(self) -> str:
        if self._token is None:
            body = json.dumps({"username": self.username, "password": self.password}).encode()
            request = urllib.request.Request(f"{self.url}/auth/token", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                self._token = json.load(response)["access_token"]
        return self._token

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """One REST call on /api/v2 (`path` starts after it); returns (status, JSON body)."""
        request = urllib.request.Request(
            f"{self.url}/api/v2{path}", method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token()}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, {"detail": text}

    def trigger(self, dag_id: str, conf: dict | None = None, *, run_id: str | None = None) -> str:
        """Trigger `dag_id` with `conf` (validated against its Params by the server); returns the run id
        (`run_id` if given, else the server's)."""
        request = {"logical_date": None, "conf": conf or {}, **({"dag_run_id": run_id} if run_id else {})}
        status, body = self.api("POST", f"/dags/{dag_id}/dagRuns", request)
        if status != 200:
            raise RuntimeError(f"triggering {dag_id} with {conf} answered {status}: {body}")
        return body["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float) -> str:
        """Poll until the run is finished; returns its state (success / failed)."""
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            _, body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            state = body.get("state", "?")
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise TimeoutError(f"{dag_id} run {run_id} still {state} after {timeout:.0f} s\n{self.run_summary(dag_id, run_id)}")

    def run_summary(self, dag_id: str, run_id: str) -> str:
        """Each task instance's state, for assertion messages."""
        _, body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return "\n".join(f"  {ti['task_id']}[{ti.get('map_index', -1)}]: {ti.get('state')} (try {ti.get('try_number')})"
                         for ti in body.get("task_instances", []))

    def task_log(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, try_number: int = 1) -> str:
        """A task instance's log as text (the api-server reads it from the shared log folder)."""
        _, body = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
                                  f"?map_index={map_index}&full_content=true")
        content = body.get("content", [])
        if isinstance(content, list):
            return "\n".join(item.get("event", "") if isinstance(item, dict) else str(item) for item in content)
        return str(content)


def _secrets(airflow_home: Path) -> dict[str, str]:
    """The JWT secret and API secret key, generated once per Airflow home; every component shares them."""
    path = airflow_home / "llmops-secrets.json"
    if not path.exists():
        airflow_home.mkdir(parents=True, exist_ok=True)
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"jwt_secret": secrets.token_urlsafe(64), "secret_key": secrets.token_urlsafe(64)}, handle)
        with contextlib.suppress(FileExistsError):  # first writer wins; a twin's file is as good as ours
            os.link(staged, path)
        staged.unlink()
    return json.loads(path.read_text())


def airflow_settings(airflow_home: Path, port: int, logs: Path) -> dict[str, str]:
    """The AIRFLOW__* settings of every component (ENVIRONMENT.md, "Learned since")."""
    keys = _secrets(airflow_home)
    url = f"http://127.0.0.1:{port}"
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(logs),
    }


class _DemoModel:
    """The tiny demo model from the machine's cache (`llmops.jobs.make_tiny_model --cache`), looked up (or, the
    first time, trained: about a minute idle, longer on a busy machine) in the background while Airflow starts.
    The builder's lock makes a twin wait for the first build and reuse it."""

    def __init__(self, cache: Path, env: Mapping[str, str], worker_python: Path, log: Path):
        self.log = log
        self.path: Path | None = None
        self.out = open(log, "w+b")  # noqa: SIM115 - read back in wait(), closed in stop()
        self.proc: subprocess.Popen | None = start_owned(
            [str(worker_python), "-m", "llmops.jobs.make_tiny_model", "--cache", str(cache)],
            stdout=self.out, stderr=subprocess.STDOUT, env=dict(env))

    def wait(self) -> Path:
        if self.path is None:
            assert self.proc is not None
            code = self.proc.wait()
            self.proc = None
            result = parse_result(self.log.read_text(errors="replace")) if code == 0 else None
            if result is None:
                raise RuntimeError(f"building the demo model failed:\n{self.log.read_text(errors='replace')[-3000:]}")
            self.path = Path(result["path"])
        return self.path

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.out.close()


def _start(name: str, args: list[str], env: Mapping[str, str], logs: Path, airflow_bin: Path) -> subprocess.Popen:
    log = logs / f"{name}.log"
    with open(log, "ab") as out:
        return start_owned([str(airflow_bin / "airflow"), *args], stdout=out, stderr=subprocess.STDOUT,
                           env=dict(env), cwd=ROOT)


def _descendants(pids: list[int]) -> dict[int, str]:
    """Every live descendant of `pids` -> its start time (/proc), so a reused PID is never signalled later."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            pid = int(stat.parent.name)
            children.setdefault(int(fields[1]), []).append(pid)
            started[pid] = fields[19]
    found: dict[int, str] = {}
    todo = list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = started[child]
                todo.append(child)
    return found


def _stop_all(procs: list[subprocess.Popen], grace: float = 20) -> None:
    """SIGTERM every process group we started at once; after `grace` seconds SIGKILL whatever is left of them
    and of their descendants (task and job processes run in process groups of their own)."""
    tree = _descendants([proc.pid for proc in procs])
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in procs:
        stop(proc, grace=5)  # SIGKILLs a group that ignored SIGTERM
    for pid, started in tree.items():
        with contextlib.suppress(OSError, IndexError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19] == started:
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def local_airflow(
    state: Path,
    *,
    base_env: Mapping[str, str],
    airflow_home: Path | None = None,
    port: int | None = None,
    venvs: Path | None = None,
    demo_model_cache: Path | None = None,
    mirrors: Path | None = None,
    config_dir: Path | None = None,
    timeout: float = 300,
    echo: Callable[[str], None] = lambda line: None,
) -> Iterator[LocalAirflow]:
    """Start the stack with the pipelines' state under `state` (their LLMOPS_HOME: store, task logs, Airflow
    home, Milvus data) and the stack's own under `state/ui` (server logs, hub mirror); stop it on exit.

    `base_env` is the environment to start from (its AIRFLOW__* settings win over the optional defaults,
    never over the ones that tie the components together). `demo_model_cache` is the machine's cache of demo model builds (default: base_env's LLMOPS_HOME/cache/demo-models),
    `mirrors` holds the hub mirror's repos (share both with `make demo` to build the same commit).
    `config_dir` is the registry (default: `LLMOPS_CONFIG_DIR` of `base_env`, else include/config).
    """
    state = Path(state).resolve()
    venvs = Path(venvs or Path(base_env.get("LLMOPS_HOME", ROOT / ".llmops")) / "venvs")
    airflow_bin = venvs / "airflow" / "bin"
    airflow_home = Path(airflow_home or state / "airflow")
    logs = state / "logs"
    own = state / "ui"
    server_logs = own / "logs"
    for folder in (state, airflow_home, logs, own, server_logs):
        folder.mkdir(parents=True, exist_ok=True)
    for needed in (airflow_bin / "airflow", venvs / "worker" / "bin" / "python", venvs / "standins" / "bin" / "olah-cli"):
        if not needed.exists():
            raise RuntimeError(f"{needed} is missing; fix: scripts/envs.sh airflow worker serving standins")
    port = port or free_port()

    env = dict(base_env)
    env.setdefault("AIRFLOW__CORE__PARALLELISM", "4")
    env.setdefault("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "False")
    env.update(airflow_settings(airflow_home, port, logs))
    env.update({
        "LLMOPS_HOME": str(state), "LLMOPS_RUNTIME": "local",
        "LLMOPS_WORKER_PYTHON": str(venvs / "worker" / "bin" / "python"),
        "LLMOPS_SERVING_PYTHON": str(venvs / "serving" / "bin" / "python"),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT / "plugins")]),
        "PATH": os.pathsep.join([str(airflow_bin), env.get("PATH", "/usr/bin:/bin")]),
        "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1",
    })
    env.setdefault("LLMOPS_STORE_URI", (state / "store").as_uri())

    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        echo(f"preparing the metadata DB and the demo model (pipeline state in {state})")
        with open(server_logs / "db-migrate.log", "ab") as out:
            migrate = start_owned([str(airflow_bin / "airflow"), "db", "migrate"], stdout=out,
                                  stderr=subprocess.STDOUT, env=env)
        stack.callback(stop, migrate)
        from llmops.kb.index import LOCAL_SERVER_RECORD
        from support.milvus import milvus_lite_server
        from support.olah import olah_server, publish_repo, repo_path

        cache = Path(demo_model_cache or Path(base_env.get("LLMOPS_HOME", ROOT / ".llmops")) / "cache" / "demo-models")
        model = _DemoModel(cache, env, venvs / "worker" / "bin" / "python", server_logs / "demo-model.log")
        stack.callback(model.stop)
        mirrors = Path(mirrors or own / "hf-mirror")
        if migrate.wait() != 0:
            raise RuntimeError("airflow db migrate failed:\n"
                               + (server_logs / "db-migrate.log").read_text(errors="replace")[-3000:])

        env["HF_ENDPOINT"] = stack.enter_context(olah_server(mirrors, work_dir=own / "olah"))
        # The knowledge bases' Milvus Lite files -> one served data directory every process can open.
        # Recorded in the pipelines' home: scripts/kb and any job run there find it (llmops.kb.index.local_server).
        env["LLMOPS_MILVUS_URI"] = stack.enter_context(milvus_lite_server(
            state / "milvus" / "milvus.db", record=state / LOCAL_SERVER_RECORD))
        env["LLMOPS_CONFIG_DIR"] = str(config_dir or base_env.get("LLMOPS_CONFIG_DIR") or ROOT / "include" / "config")
        echo(f"stand-ins: hub mirror {env['HF_ENDPOINT']} ({DEMO_REPO}), Milvus {env['LLMOPS_MILVUS_URI']}, "
             f"store {env['LLMOPS_STORE_URI']}, registry {env['LLMOPS_CONFIG_DIR']}")

        procs = {name: _start(name, args, env, server_logs, airflow_bin) for name, args in COMPONENTS.items()}
        stack.callback(_stop_all, list(procs.values()))
        url = env["AIRFLOW__API__BASE_URL"]

        def healthy() -> bool:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    tail = (server_logs / f"{name}.log").read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"airflow {name} exited with {proc.returncode}:\n{tail}")
            return http_ok(f"{url}/api/v2/monitor/health")

        _wait(healthy, timeout, "the api-server")
        passwords = airflow_home / "simple_auth_manager_passwords.json.generated"
        _wait(passwords.exists, 60, f"{passwords}")
        airflow = LocalAirflow(url=url, username=USERNAME, password=json.loads(passwords.read_text())[USERNAME],
                               airflow_home=airflow_home, state=state, env=env,
                               logs={name: server_logs / f"{name}.log" for name in procs})

        expected = {path.stem for path in (ROOT / "dags").glob("*.py") if not path.name.startswith("_")}

        def parsed() -> bool:
            healthy()
            _, errors = airflow.api("GET", "/importErrors")
            if errors.get("import_errors"):
                raise RuntimeError("the DAG files do not import:\n" + "\n".join(
                    f"{e['filename']}: {e['stack_trace']}" for e in errors["import_errors"]))
            _, dags = airflow.api("GET", "/dags?limit=100")
            return expected <= {dag["dag_id"] for dag in dags.get("dags", [])}

        _wait(parsed, timeout, f"the DAGs {sorted(expected)}")
        airflow.demo_model = model.wait()
        if not (repo_path(mirrors, DEMO_REPO) / ".git").exists():  # once: a new commit is a new sha to build
            publish_repo(mirrors, DEMO_REPO, airflow.demo_model, branch="main", message="tiny-llama for the local Airflow")
        echo(f"Airflow is up in {time.monotonic() - started:.0f} s")
        yield airflow


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def main() -> int:
    """`make ui`: serve the stack until Ctrl-C."""
    home = Path(os.environ.get("LLMOPS_HOME", ROOT / ".llmops")).resolve()
    port = int(os.environ.get("LLMOPS_UI_PORT") or 0) or None
    if port is None:
        port = 28080 if _port_free(28080) else free_ports(1)[0]

    def on_signal(signum, frame):  # Ctrl-C or SIGTERM: unwind once, stopping everything we started
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    base = {k: v for k, v in os.environ.items() if k != "AIRFLOW_HOME"}
    try:
        with local_airflow(home, base_env=base, port=port, venvs=home / "venvs",
                           mirrors=home / "demo" / "model_refresh" / "hf-mirror",
                           echo=lambda line: print(f"[ui] {line}", flush=True)) as airflow:
            print(f"\n  Airflow UI:  {airflow.url}\n  login:       {airflow.username} / {airflow.password}\n"
                  f"  server logs: {airflow.state / 'ui' / 'logs'}   task logs: {airflow.state / 'logs'}\n"
                  f"  schedules:   {'on' if airflow.env['AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE'] == 'True' else 'off (manual runs; AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=True for cron)'}\n"
                  "  Ctrl-C stops everything.\n", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("[ui] stopping", flush=True)
    print("[ui] stopped", flush=True)
    return 0


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


if __name__ == "__main__":
    sys.exit(main())
