"""The trigger form: out-of-range values are refused before anything runs (by the Params' JSON schema
in the form, and again by the request model in the first task)."""

from __future__ import annotations

import pytest

from llmops.config import load_registry
from llmops.errors import ConfigError
from llmops.rollout.request import RolloutRequest, resolve_request

BASE = {"model": "tiny-llama", "deployment": "tiny-llama-chat", "version": "latest"}


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def rollout_dag():
    from airflow.models import DagBag

    from llmops.settings import PROJECT_ROOT

    return DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "model_rollout.py")).dags["model_rollout"]


@pytest.mark.parametrize(("key", "value"), [
    ("steps", [0, 100]), ("steps", [10, 150]), ("steps", []), ("analysis_window_s", 1),
    ("thresholds", {"max_p95_latency_ratio": 0.5}), ("thresholds", {"max_error_rate": 2}),
    ("thresholds", {"unknown": 1}), ("traffic_strategy", "dns"), ("deployment", "nope"), ("version", "v2"),
])
def test_the_form_refuses_out_of_range_values(rollout_dag, key, value):
    import copy

    params = copy.deepcopy(rollout_dag.params)
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match=key):
        params[key] = value  # the form validates each value as it is set
        params.validate()


def test_the_form_defaults_apply_the_registry_not_the_schema(rollout_dag, tmp_path):
    """A trigger with only deployment and version gets deployments.yaml's values (issue 19: the form's
    pre-filled schema defaults used to override a registry that said otherwise)."""
    import shutil

    import yaml

    from llmops.settings import PROJECT_ROOT

    config = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "include" / "config", config)
    data = yaml.safe_load((config / "deployments.yaml").read_text())
    data["deployments"][0]["rollout"].update(
        steps=[50, 100], analysis_window_s=30,
        thresholds={"max_p95_latency_ratio": 4.0, "max_error_rate": 0.05, "min_golden_pass_rate": 0.5})
    (config / "deployments.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    values = {**rollout_dag.params.validate(), "deployment": "tiny-llama-chat", "version": "latest"}
    resolved = resolve_request(RolloutRequest.from_params(values), load_registry(config))
    assert (resolved.steps, resolved.window_s) == ([50, 100], 30)
    t = resolved.thresholds
    assert (t.max_p95_latency_ratio, t.max_error_rate, t.min_golden_pass_rate) == (4.0, 0.05, 0.5)


@pytest.mark.parametrize(("params", "match"), [
    ({"steps": [50, 10, 100]}, "strictly increasing"),
    ({"steps": [10, 50]}, "ending at 100"),
    ({"thresholds": {"max_error_rate": 1.5}}, "max_error_rate"),
    ({"analysis_window_s": 2}, "analysis_window_s"),
])
def test_request_model_names_the_input_and_the_fix(params, match):
    with pytest.raises(ConfigError, match=match):
        RolloutRequest.from_params({**BASE, **params})


def test_deployment_and_model_are_checked_against_the_registry():
    registry = load_registry()
    with pytest.raises(ConfigError, match="known: tiny-llama-chat"):
        resolve_request(RolloutRequest(**{**BASE, "deployment": "other"}), registry)
    with pytest.raises(ConfigError, match="serves model 'tiny-llama'"):
        resolve_request(RolloutRequest(**{**BASE, "model": "llama-3"}), registry)


def test_empty_values_fall_back_to_the_deployment_defaults():
    registry = load_registry()
    resolved = resolve_request(RolloutRequest.from_params({**BASE, "steps": [], "analysis_window_s": None,
                                                           "thresholds": {"max_error_rate": 0.2}}), registry)
    spec = registry.deployment("tiny-llama-chat").rollout
    assert resolved.steps == spec.steps and resolved.window_s == spec.analysis_window_s
    assert resolved.thresholds.max_error_rate == 0.2
    assert resolved.thresholds.max_p95_latency_ratio == spec.thresholds.max_p95_latency_ratio


def test_the_deployment_fixes_the_model_and_optional_fields_may_be_empty(rollout_dag):
    assert "model" not in rollout_dag.params
    import copy

    params = copy.deepcopy(rollout_dag.params)
    for optional in ("steps", "thresholds", "analysis_window_s", "canary_extra_args"):
        params[optional] = None  # the form's empty value is valid and means "the deployment's default"
    values = params.validate()
    resolved = resolve_request(RolloutRequest.from_params(values), load_registry())
    assert resolved.deployment.model == "tiny-llama" and resolved.steps == [10, 50, 100]
    assert resolved.window_s == 300 and resolved.probe_concurrency >= 8


def test_canary_extra_args_are_strings():
    request = RolloutRequest.from_params({"deployment": "tiny-llama-chat", "canary_extra_args": ["--max-num-seqs", "1"]})
    assert request.canary_extra_args == ["--max-num-seqs", "1"]


@pytest.mark.parametrize("args, refused", [
    (["--trust-remote-code"], "--trust-remote-code"),
    (["--trust_remote_code"], "--trust_remote_code"),  # vLLM reads '_' as '-'
    (["--trust-remote"], "--trust-remote"),  # an abbreviation argparse would expand
    (["--host", "0.0.0.0"], "--host"),
    (["--port=9000"], "--port"),
    (["--allowed-local-media-path", "/"], "--allowed-local-media-path"),
    (["--api-key", "x"], "--api-key"),
    (["--ssl-keyfile", "k.pem"], "--ssl-keyfile"),
    (["--served-model-name", "other"], "--served-model-name"),
    (["--middleware", "evil.module"], "--middleware"),
    (["0.0.0.0"], "a value without a flag"),
    (["--max-num-seqs 4"], "in one entry"),
    (["--max-num-seqs"], "needs a value"),
    (["--max-num-seqs", "--host"], "needs a value"),
    (["--enforce-eager=1"], "takes no value"),
])
def test_canary_extra_args_outside_the_tuning_allow_list_are_refused(registry, args, refused):
    request = RolloutRequest.from_params({"deployment": "tiny-llama-chat", "canary_extra_args": args})
    with pytest.raises(ConfigError, match="canary_extra_args") as err:
        resolve_request(request, registry)
    assert refused in str(err.value) and "fix:" in str(err.value)


def test_tuning_flags_pass_the_canary_extra_args_check(registry):
    args = ["--max-num-seqs", "4", "--max_num_batched_tokens=2048", "--enforce-eager", "--gpu-memory-utilization",
            "0.8", "--no-enable-prefix-caching"]
    request = RolloutRequest.from_params({"deployment": "tiny-llama-chat", "canary_extra_args": args})
    assert resolve_request(request, registry).request.canary_extra_args == args
    trt = RolloutRequest(deployment="tiny-llama-trtllm", canary_extra_args=["--max-num-seqs", "4"])
    with pytest.raises(ConfigError, match="not a tuning flag"):  # the allow-list is the runtime's own
        resolve_request(trt, registry)


def test_the_form_leaves_registry_values_empty_and_shows_them(rollout_dag):
    values = rollout_dag.params.validate()
    assert {k: values[k] for k in ("steps", "thresholds", "analysis_window_s")} == dict.fromkeys(
        ("steps", "thresholds", "analysis_window_s"))
    shown = rollout_dag.params.get_param("analysis_window_s").schema["description_md"]
    assert "`tiny-llama-chat`: 300" in shown
