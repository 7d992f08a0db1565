"""Bad input, every door: one clear message naming the input and the fix, and nothing changed.

Three doors, as users reach them:
- the DAGs' trigger forms: each Param's own JSON schema (what the form and the REST API check), then the
  run's first task (model_rollout's request resolution against the registry; kb_reindex's selection);
- the registry files, through `load_registry` (what `make validate` and every task load);
- the jobs' command lines, as real subprocesses in the worker environment (the command the local runtime
  runs), including a store on a full disk and a read-only store, made real with a tmpfs and a read-only
  bind mount in a private mount namespace (`unshare`).

Every case asserts a short message that names the input, a `fix`, no traceback, and an artefact store
whose files (names, sizes, sha256) are exactly what they were. Rollout requests are refused at request
resolution, before the pre-flight opens the store or the cluster, so no cluster object can exist.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmops.artefacts import Manifest, open_store
from llmops.config import load_registry
from llmops.errors import ConfigError, LlmopsError
from llmops.settings import PROJECT_ROOT

LONG = "a" * 200_000
MAX_MESSAGE = 2_000  # a 200,000-character input must not come back whole


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def store_root(tmp_path_factory) -> Path:
    """A file store holding one published version: what every case must leave exactly as it was."""
    root = tmp_path_factory.mktemp("store")
    src = tmp_path_factory.mktemp("published")
    (src / "model.safetensors").write_bytes(os.urandom(4096))
    (src / "config.json").write_text("{}")
    manifest = Manifest.for_directory(src, model="tiny-llama", source_repo="o/m", source_sha="b" * 40, recipe="r",
                                      serving_runtime="vllm", quantization_format="none", min_compute_capability=0.0,
                                      max_model_len=16)
    open_store(root.as_uri()).publish(src, manifest.prefix, manifest)
    return root


@pytest.fixture
def unchanged(store_root):
    before = snapshot(store_root)
    yield store_root
    assert snapshot(store_root) == before, "a refused input changed the store"


def assert_clear(message: str, *names: str) -> None:
    assert len(message) < MAX_MESSAGE, f"{len(message)}-character message"
    assert "Traceback" not in message
    assert "fix" in message.lower(), message
    for name in names:
        assert name in message, f"{name!r} not named in: {message[:500]}"


# --- the DAGs' Params ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dags():
    from airflow.models import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    assert not bag.import_errors
    return bag.dags


@pytest.mark.parametrize(("dag_id", "param", "value", "named"), [
    ("kb_reindex", "mode", "sideways", "'sideways' is not one of"),
    ("kb_reindex", "knowledge_base", "Bad NS!", "'Bad NS!' is not one of"),
    ("model_refresh", "model", "../../kube-system", "'../../kube-system' is not one of"),
    ("model_refresh", "recipes", ["no-such-recipe"], "'no-such-recipe' is not one of"),
    ("model_rollout", "traffic_strategy", "teleport", "'teleport' is not one of"),
    ("model_rollout", "analysis_window_s", 10**30, "is greater than the maximum of 86400"),
])
def test_a_param_outside_its_schema_is_refused_by_the_form(dags, unchanged, dag_id, param, value, named):
    """Airflow's own message (the form shows it beside the field): the value and the rule it broke."""
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError) as refused:
        dags[dag_id].params.get_param(param).resolve(value=value)
    assert named in str(refused.value)
    assert len(str(refused.value)) < MAX_MESSAGE


def rollout_params(dags, **changes) -> dict:
    """The model_rollout form's defaults with `changes`, as the first task receives them."""
    params = {k: dags["model_rollout"].params.get_param(k).value for k in dags["model_rollout"].params}
    for key, value in changes.items():
        if key in ("max_p95_latency_ratio", "max_error_rate", "min_golden_pass_rate"):
            params["thresholds"] = {**(params["thresholds"] or {}), key: value}  # empty: the registry applies
        else:
            params[key] = value
    return params


@pytest.mark.parametrize(("changes", "names"), [
    ({"deployment": "../../kube-system"}, ["deployment", "fix"]),
    ({"deployment": "Bad NS!"}, ["deployment"]),
    ({"deployment": LONG}, ["deployment"]),
    ({"max_error_rate": math.nan}, ["max_error_rate", "finite"]),
    ({"max_p95_latency_ratio": math.inf}, ["max_p95_latency_ratio", "finite"]),
    ({"steps": [50, 10]}, ["steps", "[10, 50, 100]"]),
    ({"analysis_window_s": 10**30}, ["analysis_window_s"]),
    ({"version": "latest\nrm -rf /"}, ["version"]),
])
def test_a_rollout_request_is_refused_before_anything_runs(dags, unchanged, changes, names):
    """What the validate_request task runs: the form's values against the registry."""
    from llmops.rollout.request import RolloutRequest, resolve_request

    with pytest.raises(LlmopsError) as refused:
        resolve_request(RolloutRequest.from_params(rollout_params(dags, **changes)), load_registry())
    assert_clear(str(refused.value), *names)
    if "max_error_rate" in changes or "max_p95_latency_ratio" in changes:
        assert "greater than" not in str(refused.value) and "less than" not in str(refused.value)


def test_the_rollout_forms_defaults_resolve(dags):
    """The battery's baseline is a valid request: each refusal above is caused by its one change."""
    from llmops.rollout.request import RolloutRequest, resolve_request

    assert resolve_request(RolloutRequest.from_params(rollout_params(dags)), load_registry()).steps


@pytest.mark.parametrize("name", ["Bad NS!", LONG])
def test_an_unknown_knowledge_base_is_refused_by_the_selection(unchanged, name):
    from llmops.kb.runs import job_arguments

    with pytest.raises(ConfigError) as refused:
        job_arguments(load_registry().knowledge_bases, name)
    assert_clear(str(refused.value), "knowledge_base")


# --- the registry files --------------------------------------------------------------------------------------


def _edit(config: Path, file: str, change) -> None:
    data = yaml.safe_load((config / file).read_text())
    change(data)
    (config / file).write_text(yaml.safe_dump(data, sort_keys=False))


def _deployment(data):
    return data["deployments"][0]


REGISTRY_CASES = {
    "namespace path": ("deployments.yaml", lambda d: _deployment(d).update(namespace="../../kube-system"),
                       "deployments[tiny-llama-chat].namespace"),
    "namespace with space": ("deployments.yaml", lambda d: _deployment(d).update(namespace="Bad NS!"),
                             "deployments[tiny-llama-chat].namespace"),
    "service account": ("deployments.yaml", lambda d: _deployment(d).update(service_account="Bad SA"),
                        "deployments[tiny-llama-chat].service_account"),
    # a name too long to echo is located by its index
    "long name": ("deployments.yaml", lambda d: _deployment(d).update(name=LONG), "deployments[0].name"),
    "image newline": ("deployments.yaml", lambda d: _deployment(d).update(image="vllm/vllm-openai:v1\nEVIL"),
                      "deployments[tiny-llama-chat].image"),
    "replicas": ("deployments.yaml", lambda d: _deployment(d).update(replicas=10**6, max_replicas=10**6),
                 "deployments[tiny-llama-chat].replicas"),
    "probe timeout": ("deployments.yaml", lambda d: _deployment(d)["rollout"]["probe"].update(timeout_s=10**9),
                      "deployments[tiny-llama-chat].rollout.probe.timeout_s"),
    "threshold NaN": ("deployments.yaml",
                      lambda d: _deployment(d)["rollout"]["thresholds"].update(max_error_rate=math.nan),
                      "deployments[tiny-llama-chat].rollout.thresholds.max_error_rate"),
    "threshold inf": ("deployments.yaml",
                      lambda d: _deployment(d)["rollout"]["thresholds"].update(max_p95_latency_ratio=math.inf),
                      "deployments[tiny-llama-chat].rollout.thresholds.max_p95_latency_ratio"),
    "no rollout golden prompts": ("deployments.yaml", lambda d: _deployment(d)["rollout"].update(golden_prompts=[]),
                                  "deployments[tiny-llama-chat].rollout.golden_prompts"),
    "limit below request": ("deployments.yaml",
                            lambda d: _deployment(d).update(resources={"memory": "64Gi", "memory_limit": "32Gi"}),
                            "deployments[tiny-llama-chat].resources"),
    "max_model_len": ("models.yaml", lambda d: d["models"][0].update(max_model_len=10**30),
                      "models[tiny-llama].max_model_len"),
    "no model golden prompts": ("models.yaml", lambda d: d["models"][0]["validation"].update(golden_prompts=[]),
                                "models[tiny-llama].validation.golden_prompts"),
    "min_agreement NaN": ("models.yaml", lambda d: d["models"][0]["validation"].update(min_agreement=math.nan),
                          "models[tiny-llama].validation.min_agreement"),
    "gpu memory inf": ("gpu_profiles.yaml", lambda d: d["gpu_profiles"][0].update(gpu_memory_gib=math.inf),
                       "gpu_profiles[a10].gpu_memory_gib"),
    # what would otherwise pass `make validate` and fail only in a run
    "empty revision": ("models.yaml", lambda d: d["models"][0].update(revision=""), "models[tiny-llama].revision"),
    "revision with a space": ("models.yaml", lambda d: d["models"][0].update(revision="main branch"),
                              "models[tiny-llama].revision"),
    "revision climbing": ("models.yaml", lambda d: d["models"][0].update(revision="../../etc"),
                          "models[tiny-llama].revision"),
    "endpoint without scheme": ("models.yaml", lambda d: d["models"][0].update(endpoint="ftp//nowhere"),
                                "models[tiny-llama].endpoint"),
    "endpoint ftp": ("models.yaml", lambda d: d["models"][0].update(endpoint="ftp://mirror.example"),
                     "models[tiny-llama].endpoint"),
    "empty hf connection": ("models.yaml", lambda d: d["models"][0].update(hf_connection_id=""),
                            "models[tiny-llama].hf_connection_id"),
    "repo_id": ("models.yaml", lambda d: d["models"][0].update(repo_id="just-a-name"), "owner/name"),
    "two targets, one prefix": ("models.yaml", lambda d: d["models"][0]["targets"].append(
        dict(d["models"][0]["targets"][0])), "models[tiny-llama].targets"),
    "profile listed twice": ("models.yaml", lambda d: d["models"][0]["targets"][0].update(gpu_profiles=["a10", "a10"]),
                             "models[tiny-llama].targets[0].gpu_profiles"),
    "empty prometheus connection": ("deployments.yaml",
                                    lambda d: _deployment(d)["rollout"].update(prometheus_connection_id=""),
                                    "deployments[tiny-llama-chat].rollout.prometheus_connection_id"),
    "milvus ftp": ("knowledge_bases.yaml", lambda d: d["knowledge_bases"][0]["milvus"].update(uri="ftp://x"),
                   "knowledge_bases[product-docs].milvus.uri"),
    "kb cron out of range": ("knowledge_bases.yaml", lambda d: d["knowledge_bases"][0].update(schedule="61 * * * *"),
                             "knowledge_bases[product-docs].schedule"),
    "kb cron bad day": ("knowledge_bases.yaml", lambda d: d["knowledge_bases"][0].update(schedule="0 3 * * mon-xyz"),
                        "knowledge_bases[product-docs].schedule"),
    "kb source missing": ("knowledge_bases.yaml",
                          lambda d: d["knowledge_bases"][0]["source"].update(uri="include/no-such-folder"),
                          "knowledge_bases[product-docs].source.uri"),
    "kb endpoint": ("knowledge_bases.yaml", lambda d: d["knowledge_bases"][0]["source"].update(
        kind="s3", uri="s3://docs/kb", endpoint="ftp//nowhere"), "knowledge_bases[product-docs].source.endpoint"),
}


def test_every_problem_of_every_entry_in_one_pass(tmp_path):
    """An unknown GPU profile is reported beside the entry's other errors, and both files' problems at once."""
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "include" / "config", config)
    _edit(config, "models.yaml", lambda d: d["models"][0].update(max_model_len=10**30, targets=[
        {"recipe": "llmcompressor-w8a8", "gpu_profiles": ["no-such-gpu"]}]))
    _edit(config, "knowledge_bases.yaml", lambda d: d["knowledge_bases"][0].update(schedule="61 * * * *"))
    _edit(config, "deployments.yaml", lambda d: _deployment(d).update(replicas=10**6, gpu_profile="no-such-pool"))
    with pytest.raises(ConfigError) as refused:
        load_registry(config)
    assert_clear(str(refused.value), "models[tiny-llama].max_model_len",
                 "models[tiny-llama].targets[0].gpu_profiles[0]", "no-such-gpu", "knowledge_bases[product-docs].schedule",
                 "deployments[tiny-llama-chat].replicas", "deployments[tiny-llama-chat].gpu_profile", "no-such-pool")


@pytest.mark.parametrize("case", sorted(REGISTRY_CASES))
def test_a_bad_registry_file_is_refused_naming_the_key(tmp_path, unchanged, case):
    file, change, key = REGISTRY_CASES[case]
    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "include" / "config", config)
    load_registry(config)  # the copy is valid before the change
    _edit(config, file, change)
    before = snapshot(config)
    with pytest.raises(ConfigError) as refused:
        load_registry(config)
    assert_clear(str(refused.value), file, key)
    assert snapshot(config) == before
    if "NaN" in case or "inf" in case:
        assert "finite" in str(refused.value)


# --- the jobs' command lines ---------------------------------------------------------------------------------


def job(module: str, *arguments: str, wrap: list[str] | None = None, env: dict | None = None):
    """Run a job the way the local runtime does (LocalJobOperator's command and PYTHONPATH)."""
    from llmops_airflow.steps import LocalJobOperator

    command = LocalJobOperator(task_id="t", job="doctor").command()[:1] + ["-m", module, *arguments]
    full_env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "include"), **(env or {})}
    return subprocess.run([*(wrap or []), *command], capture_output=True, text=True, env=full_env, timeout=600)


def assert_one_clear_line(result, *names: str) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line or "failed" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    assert_clear(errors[0], *names)
    return errors[0]


@pytest.mark.parametrize(("module", "item", "names"), [
    ("llmops.jobs.publish", "not json", ["--item", "not JSON"]),
    ("llmops.jobs.quantize", json.dumps({"model": 1}), ["--item", "lacks"]),
    ("llmops.jobs.validate", "[]", ["--item", "list"]),
    ("llmops.jobs.publish", LONG[:100_000], ["--item"]),  # one argv string is capped at 128 KiB
])
def test_a_malformed_item_is_one_line(unchanged, module, item, names):
    result = job(module, "--item", item, "--store-uri", unchanged.as_uri()) if module.endswith("publish") else \
        job(module, "--item", item)
    assert_one_clear_line(result, *names)


def test_a_bad_manifest_uri_fails_the_init_container_in_one_line(unchanged, tmp_path):
    result = job("llmops.jobs.fetch", "--manifest-uri", "models/../../etc/passwd", "--dest", str(tmp_path / "d"))
    assert_one_clear_line(result, "manifest URI")
    assert not (tmp_path / "d").exists()


@pytest.fixture
def checkpoint_item(tmp_path):
    """A planned work item whose checkpoint passed validation (2 MiB of weights): ready to publish."""
    from llmops.refresh.plan import expand_targets

    registry = load_registry()
    plan = expand_targets(list(registry.models.values()), {m: "c" * 40 for m in registry.models},
                          registry.gpu_profiles, runtime="local", work_root=str(tmp_path / "work"))
    item = next(i for i in plan.items if i.runtime == "vllm")
    checkpoint = Path(item.checkpoint_dir)
    checkpoint.mkdir(parents=True)
    for n in range(4):
        (checkpoint / f"model-{n}.safetensors").write_bytes(os.urandom(512 * 1024))
    (checkpoint / "llmops_quantize.json").write_text(json.dumps({"scheme": "W8A8", "params": {}, "tool_versions": {}}))
    Path(item.validation_file).write_text(json.dumps({"status": "passed", "agreement": 1.0}))
    return item


def _namespace_wrapper(script: str) -> list[str]:
    """`sh -c script` in a private mount namespace (as root, or as a mapped root in a user namespace)."""
    unshare = shutil.which("unshare")
    for flags in (["-m"], ["-r", "-m"]):
        if unshare and subprocess.run([unshare, *flags, "true"], capture_output=True).returncode == 0:
            return [unshare, *flags, "sh", "-c", script, "sh"]
    pytest.skip("no private mount namespace here (unshare -m / -rm refused): cannot make a full or read-only disk")


def test_a_read_only_store_is_one_line_and_untouched(unchanged, checkpoint_item):
    root = str(unchanged)
    wrap = _namespace_wrapper(f'mount --bind "{root}" "{root}" && mount -o remount,bind,ro "{root}" && exec "$@"')
    result = job("llmops.jobs.publish", "--item", checkpoint_item.to_json(), "--store-uri", unchanged.as_uri(),
                 wrap=wrap)
    assert_one_clear_line(result, root, "not writable", "Read-only file system")


def test_a_full_store_is_one_line_and_leaves_no_partial_file(tmp_path, checkpoint_item):
    store = tmp_path / "full-store"
    store.mkdir()
    listing = tmp_path / "left.txt"
    wrap = _namespace_wrapper(f'mount -t tmpfs -o size=1m tmpfs "{store}" && "$@"; rc=$?; '
                              f'(cd "{store}" && find . -type f) > "{listing}"; exit $rc')
    result = job("llmops.jobs.publish", "--item", checkpoint_item.to_json(), "--store-uri", store.as_uri(), wrap=wrap)
    assert_one_clear_line(result, "no space left", str(store))
    left = listing.read_text().split()
    assert not [p for p in left if p.endswith("manifest.json")], "a manifest over missing bytes"
    assert not [p for p in left if ".incomplete" in p or "/.tmp-" in p], f"partial files left: {left}"


# --- deployment settings from the environment (read once, at DAG parse and job start) -------------------------


@pytest.mark.parametrize(("variable", "value"), [
    ("LLMOPS_NAMESPACE", "../../kube-system"),
    ("LLMOPS_NAMESPACE", "Bad NS!"),
    ("LLMOPS_WORKER_IMAGE", "llmops-worker:0.1.0\nEVIL"),
    ("LLMOPS_SERVING_IMAGE", LONG),
    ("LLMOPS_SERVICE_ACCOUNT", "Bad SA"),
])
def test_a_bad_kubernetes_setting_is_refused_naming_the_variable(monkeypatch, unchanged, variable, value):
    from llmops.errors import SettingsError
    from llmops.settings import get_settings

    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError) as refused:
            get_settings()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert_clear(str(refused.value), variable)


def test_publish_signs_with_the_key_it_is_handed_and_a_bad_key_changes_nothing(tmp_path, checkpoint_item):
    """The publish job as the local runtime runs it, with the key the step factory hands over
    (LLMOPS_SIGNING_PRIVATE_KEY): the version is signed by it and the key never reaches the output; a key that is
    no usable private key fails in one line before anything is sent."""
    from llmops.artefacts import open_store
    from llmops.artefacts.signing import SigningKey

    key = SigningKey.generate()
    store_dir = tmp_path / "signed-store"
    bad = job("llmops.jobs.publish", "--item", checkpoint_item.to_json(), "--store-uri", store_dir.as_uri(),
              env={"LLMOPS_SIGNING_PRIVATE_KEY": key.public.pem})  # the public half by mistake
    assert_one_clear_line(bad, "LLMOPS_SIGNING_PRIVATE_KEY", "llmops_signing")
    assert not store_dir.exists() or not any(store_dir.rglob("*.json")), "nothing may be sent with a bad key"

    pem = key.private_pem().decode()
    good = job("llmops.jobs.publish", "--item", checkpoint_item.to_json(), "--store-uri", store_dir.as_uri(),
               env={"LLMOPS_SIGNING_PRIVATE_KEY": pem})
    assert good.returncode == 0, good.stderr[-3000:]
    assert f"with key {key.key_id}" in good.stderr
    body = pem.splitlines()[1]
    assert body not in good.stdout + good.stderr + bad.stdout + bad.stderr, "the private key was printed"
    store = open_store(store_dir.as_uri())
    assert store.verify_signature(store.read_manifest(checkpoint_item.prefix), [key.public]).ok
