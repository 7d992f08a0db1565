"""Signed lineage at rollout: pre-flight through the real driver (Kubernetes backend on kmock's emulator, a real
file store), and the fetch init container of the pods it would create.

The versions are small checkpoint-shaped directories: pre-flight reads the manifest, the store's checksums and
the signature, never the weights, so no model is needed.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from llmops.artefacts import Manifest, open_store
from llmops.artefacts.signing import SigningKey
from llmops.rollout import driver
from llmops.rollout.errors import PreflightError
from llmops.rollout.request import RolloutRequest, resolve_request
from llmops.serving import manifests as m
from llmops.serving.kubernetes import KubernetesBackend
from llmops_airflow.hooks.vllm_k8s import VllmKubernetesHook

DEPLOYMENT = "tiny-llama-chat"
A10 = {"aliyun.accelerator/nvidia_name": "NVIDIA-A10"}
KEY, OTHER = SigningKey.generate(), SigningKey.generate()


def _version(store, tmp_path, sha: str, signer):
    directory = tmp_path / sha[:4]
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "llama"}')
    (directory / "model.safetensors").write_bytes(os.urandom(2048))
    manifest = Manifest.for_directory(directory, model="tiny-llama", source_repo="llmops-demo/tiny-llama",
                                      source_sha=sha, recipe="unquantized", serving_runtime="vllm",
                                      quantization_format="none", min_compute_capability=0.0, max_model_len=512)
    return store.publish(directory, manifest.prefix, manifest, signer=signer)


def _registry(base, *, require: bool, keys: list[SigningKey]):
    deployment = base.deployment(DEPLOYMENT)
    signing = deployment.signing.model_copy(update={"require_signature": require,
                                                     "public_keys": [k.public.pem for k in keys]})
    deployments = {**base.deployments, DEPLOYMENT: deployment.model_copy(update={"signing": signing})}
    return dataclasses.replace(base, deployments=deployments)


@pytest.fixture
def cluster(kube):
    hook = VllmKubernetesHook("kubernetes_default")
    hook.kube.core_v1_client.create_node({"metadata": {"name": "a10-node-1", "labels": A10},
                                          "status": {"allocatable": {"nvidia.com/gpu": "1"}}}, _preload_content=False)
    return hook


def _preflight(hook, registry, store, uri, tmp_path):
    deployment = registry.deployment(DEPLOYMENT)
    backend = KubernetesBackend(hook, deployment, registry.gpu_profile(deployment.gpu_profile))
    resolved = resolve_request(RolloutRequest(deployment=DEPLOYMENT, version=uri), registry)
    ctx = driver.RolloutContext(resolved, store, backend, registry, "run-1", tmp_path / "report")
    return driver.preflight(ctx)


def test_preflight_verifies_the_signature_and_refuses_what_it_must(kube, cluster, registry, tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    signed = _version(store, tmp_path, "a" * 40, KEY)
    unsigned = _version(store, tmp_path, "b" * 40, None)
    foreign = _version(store, tmp_path, "c" * 40, OTHER)
    strict = _registry(registry, require=True, keys=[KEY])
    writes = kube.writes()

    passed = _preflight(cluster, strict, store, signed, tmp_path)
    assert any(c.startswith(f"signature verifies (key {KEY.key_id[:16]}") for c in passed.checks), passed.checks

    for uri, words in ((unsigned, "has no signature"), (foreign, f"signed by key {OTHER.key_id[:16]}, which is none")):
        with pytest.raises(PreflightError) as err:
            _preflight(cluster, strict, store, uri, tmp_path)
        [problem] = err.value.problems
        assert problem.check == "signature" and words in problem.what and problem.fix, problem

    # one byte of the signed manifest changed behind the store's back: refused, and the changed part named
    path = tmp_path / "store" / store.resolve(signed, "tiny-llama").prefix / "manifest.json"
    data = json.loads(path.read_text())
    data["max_model_len"] = 513
    path.write_text(json.dumps(data, indent=2) + "\n")
    with pytest.raises(PreflightError, match=r"(?s)changed after signing: manifest\.json.*do not serve it"):
        _preflight(cluster, strict, store, signed, tmp_path)
    assert kube.writes() == writes, "pre-flight must not write anything"

    # signatures optional: an unsigned version passes (and says so), a foreign key is still refused
    lenient = _registry(registry, require=False, keys=[KEY])
    passed = _preflight(cluster, lenient, store, unsigned, tmp_path)
    assert "unsigned: accepted (signing.require_signature is false)" in passed.checks
    with pytest.raises(PreflightError, match="none of the trusted keys"):
        _preflight(cluster, lenient, store, foreign, tmp_path)


def test_pods_fetch_init_container_verifies_with_the_deployments_keys(registry):
    strict = _registry(registry, require=True, keys=[KEY, OTHER]).deployment(DEPLOYMENT)
    version = m.VersionRef("file:///store/models/tiny-llama/" + "a" * 40 + "/vllm-unquantized/manifest.json",
                           "tiny-llama")
    pod = m.render_deployment(strict, registry.gpu_profile(strict.gpu_profile), "canary", version, replicas=1)
    [init] = pod["spec"]["template"]["spec"]["initContainers"]
    assert init["command"][-1] == "--require-signature"
    [keys] = [e["value"] for e in init["env"] if e["name"] == "LLMOPS_TRUSTED_PUBLIC_KEYS"]
    assert keys.count("-----BEGIN PUBLIC KEY-----") == 2 and KEY.public.pem.strip() in keys
    plain = registry.deployment(DEPLOYMENT)  # the shipped default: no keys, signatures optional
    pod = m.render_deployment(plain, registry.gpu_profile(plain.gpu_profile), "canary", version, replicas=1)
    [init] = pod["spec"]["template"]["spec"]["initContainers"]
    assert "--require-signature" not in init["command"]
    assert "LLMOPS_TRUSTED_PUBLIC_KEYS" not in [e["name"] for e in init["env"]]
