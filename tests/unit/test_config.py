"""Registry validation: the shipped files load; broken files fail naming the file, the key and the fix."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmops.config import load_registry
from llmops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "config"


@pytest.fixture
def config_dir(tmp_path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(SHIPPED, target)
    return target


def edit(config_dir: Path, name: str, change) -> None:
    path = config_dir / name
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def test_shipped_registry_is_valid():
    registry = load_registry(SHIPPED)
    assert {"a10", "l20", "h20", "a100", "h100"} <= set(registry.gpu_profiles)
    assert registry.gpu_profile("a10").compute_capability == 8.6
    assert registry.gpu_profile("a10-shared").resource_name == "aliyun.com/gpu-mem"
    for profile in registry.gpu_profiles.values():
        assert "aliyun.accelerator/nvidia_name" in profile.node_selector


def test_fp8_recipe_on_a10_is_refused(config_dir):
    edit(config_dir, "models.yaml", lambda d: d["models"][0]["targets"][1]["gpu_profiles"].append("a10"))
    with pytest.raises(ConfigError) as err:
        load_registry(config_dir)
    text = str(err.value)
    assert "models.yaml" in text and "models[tiny-llama].targets[1].gpu_profiles[3]" in text
    assert "8.9" in text and "8.6" in text and "fix:" in text


@pytest.mark.parametrize(
    ("file", "change", "key", "words"),
    [
        ("models.yaml", lambda d: d["models"][0]["targets"][0].update(recipe="int3-magic"),
         "models[tiny-llama].targets[0].recipe", "not a known recipe"),
        ("models.yaml", lambda d: d["models"][0].update(tensor_parallel_size=0),
         "models[tiny-llama].tensor_parallel_size", "greater than or equal to 1"),
        ("models.yaml", lambda d: d["models"][0].update(reivsion="main"), "models[tiny-llama].reivsion", "spelling"),
        ("models.yaml", lambda d: d["models"][0].pop("repo_id"), "models[tiny-llama].repo_id", "add the key"),
        ("gpu_profiles.yaml", lambda d: d["gpu_profiles"][0].update(resource_name="amd.com/gpu"),
         "gpu_profiles[a10].resource_name", "nvidia.com/gpu"),
        ("deployments.yaml", lambda d: d["deployments"][0].update(gpu_profile="tpu-v5"),
         "deployments[tiny-llama-chat].gpu_profile", "not in gpu_profiles.yaml"),
        ("deployments.yaml", lambda d: d["deployments"][0].update(model="nope"),
         "deployments[tiny-llama-chat].model", "not in models.yaml"),
        # the API server refuses Service 7b-chat (DNS-1035: a letter first); the rule and a fix are named
        ("deployments.yaml", lambda d: d["deployments"][0].update(name="7b-chat"),
         "deployments[7b-chat].name", "DNS-1035 labels"),
        ("deployments.yaml", lambda d: d["deployments"][0]["rollout"].update(keep_previous={"minutes": -5}),
         "deployments[tiny-llama-chat].rollout.keep_previous.minutes", "greater than or equal to 0"),
        ("deployments.yaml", lambda d: d["deployments"][0]["rollout"].update(keep_previous={"replica": 1}),
         "deployments[tiny-llama-chat].rollout.keep_previous.replica", "spelling"),
        ("knowledge_bases.yaml", lambda d: d["knowledge_bases"][0]["chunking"].update(overlap=5000, size=100),
         "knowledge_bases[product-docs].chunking", "lower overlap"),
        ("knowledge_bases.yaml", lambda d: d["knowledge_bases"][0].update(name="Product Docs"),
         "knowledge_bases[Product Docs].name", "lowercase"),
        ("knowledge_bases.yaml", lambda d: d["knowledge_bases"][0]["embedder"].update(quantize="int8"),
         "knowledge_bases[product-docs].embedder", "set backend: onnx"),
    ],
)
def test_broken_file_names_file_key_and_fix(config_dir, file, change, key, words):
    edit(config_dir, file, change)
    with pytest.raises(ConfigError) as err:
        load_registry(config_dir)
    text = str(err.value)
    assert file in text and key in text and words in text, text


def test_a_deployment_name_starting_with_a_digit_is_refused_with_a_fix(config_dir):
    edit(config_dir, "deployments.yaml", lambda d: d["deployments"][0].update(name="7b-chat"))
    with pytest.raises(ConfigError) as err:
        load_registry(config_dir)
    assert "7b-chat-canary" in str(err.value) and "'chat-7b'" in str(err.value)


def test_malformed_yaml_names_line(config_dir):
    (config_dir / "models.yaml").write_text("models:\n  - name: x\n   repo_id: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_registry(config_dir)
    assert "models.yaml" in str(err.value) and "line" in str(err.value) and "not valid YAML" in str(err.value)


def test_duplicate_names_refused(config_dir):
    edit(config_dir, "gpu_profiles.yaml", lambda d: d["gpu_profiles"].append(dict(d["gpu_profiles"][0])))
    with pytest.raises(ConfigError, match="defined twice"):
        load_registry(config_dir)


def test_unknown_lookup_lists_known_names():
    with pytest.raises(ConfigError, match=r"no deployment named 'nope' \(known: tiny-llama-chat, tiny-llama-trtllm\)"):
        load_registry(SHIPPED).deployment("nope")


def test_validate_command_for_users(config_dir):
    ok = subprocess.run([sys.executable, "-m", "llmops", "validate", "--config-dir", str(config_dir)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "registry OK" in ok.stdout
    edit(config_dir, "models.yaml", lambda d: d["models"][0].update(max_model_len="long"))
    bad = subprocess.run([sys.executable, "-m", "llmops", "validate", "--config-dir", str(config_dir)],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "models[tiny-llama].max_model_len" in bad.stderr and "whole number" in bad.stderr


def test_validate_reports_every_problem_of_every_file_in_one_pass(config_dir):
    edit(config_dir, "models.yaml", lambda d: d["models"][0].update(max_model_len="long"))  # schema
    edit(config_dir, "gpu_profiles.yaml", lambda d: d["gpu_profiles"].append(dict(d["gpu_profiles"][1])))  # duplicate
    edit(config_dir, "deployments.yaml", lambda d: d["deployments"][0].update(gpu_profile="tpu-v5"))  # reference
    edit(config_dir, "knowledge_bases.yaml", lambda d: d["knowledge_bases"][0].update(top_k=0))  # schema
    bad = subprocess.run([sys.executable, "-m", "llmops", "validate", "--config-dir", str(config_dir)],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "4 problem(s) in 4 file(s)" in bad.stderr, bad.stderr
    for key in ("models[tiny-llama].max_model_len", "gpu_profiles[a10-shared].name",
                "deployments[tiny-llama-chat].gpu_profile", "knowledge_bases[product-docs].top_k"):
        assert key in bad.stderr, (key, bad.stderr)
    with pytest.raises(ConfigError) as err:  # the tasks' loader says the same, in one error
        load_registry(config_dir)
    assert "4 problem(s)" in str(err.value) and "knowledge_bases.yaml: knowledge_bases[product-docs].top_k" in str(err.value)


def test_validate_only_one_file_ignores_the_others(config_dir):
    (config_dir / "models.yaml").write_text("models: [unclosed\n")
    (config_dir / "gpu_profiles.yaml").unlink()
    only = [sys.executable, "-m", "llmops", "validate", "--config-dir", str(config_dir), "--only", "knowledge_bases.yaml"]
    ok = subprocess.run(only, capture_output=True, text=True)
    assert ok.returncode == 0 and "knowledge_bases.yaml OK" in ok.stdout, ok.stderr
    edit(config_dir, "knowledge_bases.yaml", lambda d: d["knowledge_bases"][0].update(top_k=0))
    bad = subprocess.run(only, capture_output=True, text=True)
    assert bad.returncode == 1 and "knowledge_bases[product-docs].top_k" in bad.stderr
    assert "models.yaml" not in bad.stderr and "gpu_profiles.yaml" not in bad.stderr


def test_signing_keys_are_read_from_files_and_checked(config_dir, tmp_path):
    """deployments.yaml `signing`: key files are read once (relative to the config directory), a key that cannot
    be read or is no public key is a registry problem, and require_signature without keys is refused."""
    from llmops.artefacts.signing import SigningKey

    key = SigningKey.generate()
    (config_dir / "keys").mkdir()
    (config_dir / "keys" / "prod.pub").write_text(key.public.pem)
    path = config_dir / "deployments.yaml"
    data = yaml.safe_load(path.read_text())
    data["deployments"][0]["signing"] = {"require_signature": True, "public_keys": ["keys/prod.pub"]}
    path.write_text(yaml.safe_dump(data))
    deployment = load_registry(config_dir).deployment(data["deployments"][0]["name"])
    assert deployment.signing.require_signature and deployment.signing.public_keys == [key.public.pem]

    for keys, words in ((["keys/missing.pub"], "cannot be read"), ([str(tmp_path / "private.pem")], "not a PEM public"),
                        ([], "no public_keys are listed")):
        (tmp_path / "private.pem").write_bytes(key.private_pem())
        data["deployments"][0]["signing"]["public_keys"] = keys
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError) as err:
            load_registry(config_dir)
        assert words in str(err.value) and "signing" in str(err.value) and "PRIVATE KEY-----\nM" not in str(err.value)


def test_a_signing_key_under_llmops_home_as_the_demo_makes_it(config_dir, tmp_path, monkeypatch):
    """`$LLMOPS_HOME/signing/llmops-signing.pub` (python -m llmops keygen's path in make demo) is read from the
    LLMOPS_HOME this process runs with."""
    from llmops.artefacts.signing import generate_key_pair

    monkeypatch.setenv("LLMOPS_HOME", str(tmp_path / "home"))
    _, public, _ = generate_key_pair(tmp_path / "home" / "signing")
    path = config_dir / "deployments.yaml"
    data = yaml.safe_load(path.read_text())
    data["deployments"][0]["signing"] = {"public_keys": ["$LLMOPS_HOME/signing/llmops-signing.pub"]}
    path.write_text(yaml.safe_dump(data))
    assert load_registry(config_dir).deployment(data["deployments"][0]["name"]).signing.public_keys == [
        public.read_text()]


def test_keep_previous_defaults_to_one_replica_for_30_minutes_and_0_turns_it_off(config_dir):
    edit(config_dir, "deployments.yaml", lambda d: [d["deployments"][0]["rollout"].pop("keep_previous"),
                                                    d["deployments"][1]["rollout"].update(
                                                        keep_previous={"replicas": 0, "minutes": 30})])
    registry = load_registry(config_dir)
    keep = registry.deployment("tiny-llama-chat").rollout.keep_previous
    assert (keep.replicas, keep.minutes, keep.enabled) == (1, 30, True)
    assert not registry.deployment("tiny-llama-trtllm").rollout.keep_previous.enabled
