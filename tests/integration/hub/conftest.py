"""One olah mirror per test session, serving small repos built for the hub tests.

Weights here are random bytes named like weights: the hub path never parses them, so building the
trained tiny model (13 s, worker env) would add nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmops.config.schema import ModelSpec
from support.olah import olah_server, publish_repo, tamper_lfs_object

TARGETS = [{"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]}]


@dataclass
class Mirror:
    endpoint: str
    path: Path
    shas: dict[str, str]  # "tiny@v1", "tiny@main", "tiny@dev", ...
    weights: dict[str, bytes]  # "tiny@<sha>" -> model.safetensors bytes

    def spec(self, repo: str, revision: str = "main", **fields) -> ModelSpec:
        return ModelSpec(name=fields.pop("name", "test-model"), repo_id=f"llmops-test/{repo}", revision=revision,
                         endpoint=self.endpoint, targets=TARGETS,
                         **{"validation": {"golden_prompts": [{"prompt": "Hello"}]}, **fields})


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> Mirror:
    root = tmp_path_factory.mktemp("hub")
    mirrors = root / "mirrors"
    shas, weights = {}, {}

    def tiny(version: int) -> dict:
        data = os.urandom(256 * 1024 + version)
        return {"config.json": json.dumps({"model_type": "llama", "version": version}),
                "tokenizer.json": json.dumps({"version": version}), "model.safetensors": data,
                "README.md": f"tiny v{version}\n"}

    for label, branch, tags, version in (("v1", "main", ["v1"], 1), ("main", "main", [], 2), ("dev", "dev", [], 3)):
        files = tiny(version)
        sha = publish_repo(mirrors, "llmops-test/tiny", files, branch=branch, tags=tags)
        shas[f"tiny@{label}"] = sha
        weights[f"tiny@{sha}"] = files["model.safetensors"]
    shas["pickle-only@main"] = publish_repo(mirrors, "llmops-test/pickle-only", {
        "config.json": "{}", "pytorch_model.bin": os.urandom(4096), "tokenizer.json": "{}"})
    shas["custom-code@main"] = publish_repo(mirrors, "llmops-test/custom-code", {
        "config.json": json.dumps({"auto_map": {"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"}}),
        "modeling_custom.py": "class CustomForCausalLM: ...\n", "model.safetensors": os.urandom(4096)})
    shas["auto-map@main"] = publish_repo(mirrors, "llmops-test/auto-map", {  # auto_map pointing at another repo
        "config.json": json.dumps({"auto_map": {"AutoModel": "other/repo--modeling.Model"}}),
        "model.safetensors": os.urandom(4096)})
    shas["tampered@main"] = publish_repo(mirrors, "llmops-test/tampered", tiny(9))
    tamper_lfs_object(mirrors, "llmops-test/tampered", "model.safetensors")
    with olah_server(mirrors, work_dir=root / "olah") as endpoint:
        yield Mirror(endpoint=endpoint, path=mirrors, shas=shas, weights=weights)
