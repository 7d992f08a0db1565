"""docker-compose.yaml and images/airflow: a stack that would come up, checked without a Docker engine.

What is checked, against Airflow's own docker-compose.yaml as the model: every long-running service has a
healthcheck and one-shot services are waited for until they complete; Airflow runs as a non-root user and
airflow-init (root) hands it every writable volume; no secret has a literal default (each is required
from .env, which scripts/compose-env.sh generates); every published port binds to 127.0.0.1 unless
LLMOPS_BIND says otherwise; MinIO's bucket is created with the credentials MinIO runs with; the sample
knowledge base lands on the compose Milvus server. Where Debian's docker-compose is installed (`.ci/run`
installs it) the file is also rendered by it, so interpolation is checked by the real parser.
Nothing here starts a container: no engine runs on these machines.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "images" / "airflow" / "Dockerfile"
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-init"}
ONE_SHOT = {"airflow-init", "minio-buckets"}
REQUIRED = ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY", "POSTGRES_PASSWORD",
            "MINIO_ROOT_PASSWORD", "MINIO_ARTEFACTS_PASSWORD", "MINIO_MILVUS_PASSWORD")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|_KEY($|_)")
needs_compose = pytest.mark.skipif(shutil.which("docker-compose") is None,
                                   reason="Debian's docker-compose is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    """A .env exactly as a user gets it: written by scripts/compose-env.sh."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    subprocess.run([str(ROOT / "scripts" / "compose-env.sh"), str(path)], check=True, capture_output=True)
    return path


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def render(env_file: Path, **extra: str) -> subprocess.CompletedProcess:
    """`docker-compose config` with only the env file (and `extra`) as settings, not this shell's."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(["docker-compose", "--env-file", str(env_file), "-f", str(COMPOSE), "config"],
                          cwd=env_file.parent, env={**env, **extra}, capture_output=True, text=True)


def test_services(compose):
    assert AIRFLOW_SERVICES | {"postgres", "etcd", "minio", "milvus", "minio-buckets"} <= set(compose["services"])


def test_project_mounted_and_importable_in_every_airflow_service(compose):
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        mounts = {m.split(":")[1] for m in service["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= mounts, name
        assert "/opt/airflow/include" in service["environment"]["PYTHONPATH"], name


def test_connections_preset(compose):
    env = compose["services"]["airflow-scheduler"]["environment"]
    for conn in ("LLMOPS_ARTEFACTS", "MILVUS_DEFAULT", "HUGGINGFACE_DEFAULT", "LLMOPS_ALERTS"):
        assert f"AIRFLOW_CONN_{conn}" in env


def test_every_long_running_service_has_a_healthcheck_and_one_shots_are_awaited(compose):
    services = compose["services"]
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name} runs once and must not be restarted"
        else:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name a condition for each service"
        for dep, how in depends.items():
            expected = "service_completed_successfully" if dep in ONE_SHOT else "service_healthy"
            assert how == {"condition": expected}, f"{name} waits for {dep} with {how}, not {expected}"
    scheduler = services["airflow-scheduler"]["depends_on"]
    assert {"minio-buckets", "milvus", "airflow-init", "postgres"} <= set(scheduler), \
        "tasks run in the scheduler (LocalExecutor): it must wait for the bucket and Milvus"


def test_healthchecks_use_tools_the_images_have(compose):
    """MinIO's image has no curl since late 2023 (minio/minio#18371): its healthcheck is `mc ready local`."""
    services = compose["services"]
    assert services["minio"]["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert services["airflow-scheduler"]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"
    assert "8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])
    for name, job in (("airflow-dag-processor", "DagProcessorJob"), ("airflow-triggerer", "TriggererJob")):
        assert f"--job-type {job}" in services[name]["healthcheck"]["test"][1], name


def test_airflow_runs_as_a_user_and_init_hands_it_every_writable_volume(compose):
    services = compose["services"]
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["user"] == "${AIRFLOW_UID:-50000}:0", name
    init = services["airflow-init"]
    assert init["user"] == "0:0"
    script = init["command"][1]
    named_volumes = set(compose["volumes"])
    writable = {m.split(":")[1] for m in init["volumes"] if m.split(":")[0] in named_volumes}
    assert writable == {"/opt/airflow/llmops-home", "/opt/airflow/logs"}
    chown = next(line for line in script.splitlines() if line.strip().startswith("chown"))
    assert '"${AIRFLOW_UID:-50000}:0"' in chown
    for path in writable:
        assert path in chown, f"{path} stays root-owned"
    # The chown comes last: nothing init writes as root afterwards is left behind root-owned.
    assert script.strip().splitlines()[-1].strip() == chown.strip()
    assert "airflow db migrate" in script and "llmops validate" in script


def test_no_secret_has_a_literal_value_or_a_default(compose):
    text = COMPOSE.read_text()
    for name in REQUIRED:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} is not used"
        assert all(use.startswith(":?") for use in uses), f"{name} has a default: {uses}"
    for service_name, service in compose["services"].items():
        env = service.get("environment") or {}
        for key, value in env.items():
            value = str(value)
            if SECRET_NAME.search(key) and not key.endswith("_FILE") and value:
                assert "${" in value, f"{service_name}: {key} is a literal"
            for literal in ("minioadmin", "change-me", "airflow:airflow@"):
                assert literal not in value, f"{service_name}: {key} holds the public default {literal!r}"


def test_compose_env_writes_fresh_private_secrets(env_file, tmp_path):
    values = read_env(env_file)
    assert set(REQUIRED) <= set(values)
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    other = tmp_path / ".env"
    subprocess.run([str(ROOT / "scripts" / "compose-env.sh"), str(other)], check=True, capture_output=True)
    assert all(values[k] != read_env(other)[k] for k in REQUIRED), "secrets must be random, not a default"
    before = other.read_text()
    rerun = subprocess.run([str(ROOT / "scripts" / "compose-env.sh"), str(other)], check=True,
                           capture_output=True, text=True)
    assert other.read_text() == before and "kept" in rerun.stdout
    for k in REQUIRED:
        assert values[k] not in rerun.stdout + rerun.stderr
    from cryptography.fernet import Fernet

    Fernet(values["AIRFLOW_FERNET_KEY"])  # Airflow refuses a malformed key at start


@needs_compose
def test_docker_compose_refuses_to_render_without_the_secrets(tmp_path):
    empty = tmp_path / ".env"
    empty.write_text("")
    result = render(empty)
    assert result.returncode != 0
    assert "run scripts/compose-env.sh" in result.stderr


@needs_compose
def test_published_ports_bind_loopback_unless_the_user_opts_out(env_file):
    result = render(env_file)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    published = [(name, port) for name, s in rendered["services"].items() for port in s.get("ports", [])]
    assert {name for name, _ in published} == {"airflow-apiserver", "minio", "milvus"}
    for name, port in published:
        host_ip = port["host_ip"] if isinstance(port, dict) else str(port).split(":")[0]
        assert host_ip == "127.0.0.1", f"{name} publishes {port}"
    opened = yaml.safe_load(render(env_file, LLMOPS_BIND="0.0.0.0", LLMOPS_AIRFLOW_PORT="18081").stdout)
    api = opened["services"]["airflow-apiserver"]["ports"][0]
    assert str(api).startswith("0.0.0.0:18081:8080") or api.get("host_ip") == "0.0.0.0"


def test_each_store_client_has_its_own_identity(compose):
    """MinIO's root key stays with MinIO and the one-shot that creates buckets and users; Milvus and the tasks each
    get a user of their own, limited to their bucket (a leaked task key cannot read or delete Milvus's segments)."""
    import json

    services = compose["services"]
    users = {}
    for name, service in services.items():
        env = service.get("environment") or {}
        if any("MINIO_ROOT_PASSWORD" in str(v) for v in env.values()):
            users.setdefault("root", set()).add(name)
    assert users["root"] == {"minio", "minio-buckets"}
    milvus = services["milvus"]["environment"]
    assert "MINIO_MILVUS_USER" in milvus["MINIO_ACCESS_KEY_ID"]
    assert "MINIO_MILVUS_PASSWORD" in milvus["MINIO_SECRET_ACCESS_KEY"]
    conn = services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_LLMOPS_ARTEFACTS"]
    assert "MINIO_ARTEFACTS_USER" in conn and "MINIO_ARTEFACTS_PASSWORD" in conn
    command = services["minio-buckets"]["command"][0]
    assert '"$$MINIO_ARTEFACTS_USER:llmops-artefacts"' in command and '"$$MINIO_MILVUS_USER:a-bucket"' in command
    policy = re.search(r"printf '([^']+)'", command).group(1) % ("b", "b")
    assert json.loads(policy)["Statement"][0]["Resource"] == ["arn:aws:s3:::b", "arn:aws:s3:::b/*"]
    for who in ("ARTEFACTS", "MILVUS"):
        user = f'"$$MINIO_{who}_USER"'
        assert f"mc admin user add local {user}" in command and f"policy attach local {user} --user {user}" in command
    assert "minio-buckets" in services["milvus"]["depends_on"], "Milvus starts once its user exists"


@needs_compose
def test_buckets_milvus_and_tasks_use_the_credentials_from_env(env_file, tmp_path):
    custom = tmp_path / ".env"
    custom.write_text(env_file.read_text().replace("MINIO_ROOT_USER=llmops", "MINIO_ROOT_USER=team-store"))
    result = render(custom)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    env = read_env(custom)
    assert services["minio"]["environment"]["MINIO_ROOT_USER"] == "team-store"
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == env["MINIO_ROOT_PASSWORD"]
    assert services["minio-buckets"]["environment"]["MINIO_ROOT_PASSWORD"] == env["MINIO_ROOT_PASSWORD"]
    assert services["milvus"]["environment"]["MINIO_SECRET_ACCESS_KEY"] == env["MINIO_MILVUS_PASSWORD"]
    import json

    conn = json.loads(services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_LLMOPS_ARTEFACTS"])
    assert (conn["login"], conn["password"]) == ("llmops-artefacts", env["MINIO_ARTEFACTS_PASSWORD"])
    assert services["milvus"]["environment"]["MINIO_ACCESS_KEY_ID"] == "milvus"
    assert len({env["MINIO_ROOT_PASSWORD"], env["MINIO_ARTEFACTS_PASSWORD"], env["MINIO_MILVUS_PASSWORD"]}) == 3


def test_image_builds_venvs_owned_by_the_airflow_user_with_torch_from_a_build_argument(compose):
    """Read against the base image's rules: /opt is root's, pip refuses to run as root, PIP_USER is set."""
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    user = None
    venv_root_made_by = venv_made_by = None
    for line in lines:
        if line.startswith("USER "):
            user = line.split()[1]
        if "mkdir -p /opt/llmops/venvs" in line:
            venv_root_made_by = user
            assert "chown -R airflow:0 /opt/llmops" in line
        if "python -m venv /opt/llmops/venvs" in line:
            venv_made_by = user
    assert venv_root_made_by == "root" and venv_made_by == "airflow"
    text = DOCKERFILE.read_text()
    assert "ARG TORCH_INDEX_URL=" in text and '--index-url "$TORCH_INDEX_URL"' in text
    assert "-u PIP_USER" in text, "the base image's PIP_USER breaks pip inside a venv"
    assert "/opt/wheels" not in text and "find-links" not in text, "no local wheel folder in an image build"
    build = compose["x-airflow"]["build"]
    assert build["dockerfile"] == "images/airflow/Dockerfile" and "TORCH_INDEX_URL" in build["args"]
    ignore = (ROOT / "images" / "airflow" / "Dockerfile.dockerignore").read_text().splitlines()
    for copied in re.findall(r"^COPY (?:--chown=\S+ )?(.+) \S+$", text, flags=re.M):
        for source in copied.split():
            assert f"!{source}" in ignore, f"{source} is copied but excluded from the build context"


def test_sample_knowledge_base_runs_on_the_compose_milvus(compose, tmp_path):
    """airflow-init's registry step, run for real on include/config, then loaded by the project's loader."""
    init = compose["services"]["airflow-init"]["command"][1]
    step = next(line for line in init.splitlines() if "compose_registry.py" in line).split()
    assert step[2:] == ["/opt/airflow/include/config", "/opt/airflow/llmops-home/config", "http://milvus:19530"]
    env = compose["x-airflow"]["environment"]
    assert env["LLMOPS_CONFIG_DIR"] == step[3]
    assert json_host(env["AIRFLOW_CONN_MILVUS_DEFAULT"]) == step[4]

    target = tmp_path / "config"
    for _ in range(2):  # re-running airflow-init replaces what the first run wrote
        subprocess.run([sys.executable, str(ROOT / "images" / "airflow" / "compose_registry.py"),
                        str(ROOT / "include" / "config"), str(target), step[4]], check=True, capture_output=True)
    from llmops.config import load_registry

    registry = load_registry(target)
    kb = registry.knowledge_base("product-docs")
    assert (kb.milvus.uri, kb.milvus.connection_id) == ("http://milvus:19530", "milvus_default")
    original = load_registry(ROOT / "include" / "config")
    assert registry.models.keys() == original.models.keys()
    assert (target / "models.yaml").resolve() == (ROOT / "include" / "config" / "models.yaml").resolve()
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in (ROOT / "include" / "config").glob("*.yaml"))


def json_host(conn: str) -> str:
    import json

    return json.loads(conn)["host"]
