"""The case that used to be refused: a good W8A8 of a random Qwen2 whose byte-level BPE emits multi-byte text
(CJK, emoji split into several tokens). Near-flat next-token distributions make free-running greedy text a coin
toss between runtimes and dtypes; judged teacher-forced against the unquantized model served by the same vLLM,
the quantization passes. Two vLLM starts (reference, candidate)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from refresh_helpers import ROOT, SHA, run_job

from llmops.config import load_registry
from llmops.config.schema import ModelSpec
from llmops.refresh.plan import expand_targets

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

GOLDEN = {"golden_prompts": [{"prompt": "서울은"}, {"prompt": "一二三"}, {"prompt": "猫が"}, {"prompt": "🙂"}],
          "max_new_tokens": 8}


@pytest.fixture(scope="module")
def validated(tmp_path_factory, worker_python, serving_python):
    root = tmp_path_factory.mktemp("multibyte")
    built = subprocess.run([str(worker_python), str(ROOT / "tests" / "support" / "validation_models.py"), "qwen2",
                            "--out", str(root / "model")], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    spec = ModelSpec(name="random-qwen2", repo_id="llmops-test/random-qwen2", max_model_len=512, validation=GOLDEN,
                     targets=[{"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]}])
    (item,) = expand_targets([spec], {spec.name: SHA}, load_registry().gpu_profiles, runtime="local",
                             work_root=str(root / "work")).items
    Path(item.source_dir).parent.mkdir(parents=True)
    Path(item.source_dir).symlink_to(root / "model", target_is_directory=True)
    done, _ = run_job(worker_python, "quantize", "--item", item.to_json(), timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    done, result = run_job(serving_python, "validate", "--item", item.to_json(), timeout=2400)
    return item, done, result, json.loads(Path(item.validation_file).read_text())


def test_a_good_w8a8_of_a_random_qwen2_with_multibyte_text_passes(validated):
    item, done, result, record = validated
    assert done.returncode == 0, done.stderr[-4000:]
    assert record["status"] == result["status"] == "passed", record["summary"]
    assert record["positions"] == sum(len(row["reference_token_ids"]) for row in record["greedy"]["prompts"]) > 0
    # the reference continues in several scripts, so multi-byte characters are split across tokens
    reference_texts = "".join(row["reference"] for row in record["greedy"]["prompts"])
    assert any(ord(ch) > 0x2000 for ch in reference_texts), reference_texts
    assert "free-running greedy, information only" in record["summary"]


def test_the_report_explains_the_verdict_per_prompt(validated):
    _, done, _, record = validated
    assert [row["prompt"] for row in record["prompts"]] == [p["prompt"] for p in GOLDEN["golden_prompts"]]
    assert all(row["mean_kl"] <= record["thresholds"]["max_mean_kl"] for row in record["prompts"])
    assert "teacher-forced over" in done.stderr and "mean KL" in done.stderr
