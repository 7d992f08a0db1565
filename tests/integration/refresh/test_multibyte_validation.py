"""Validation compares greedy token ids, not decoded text: a tiny model trained on CJK sentences, whose byte-level
vocabulary splits most characters into several tokens, quantized (llm-compressor W8A8) and validated by real vLLM
on CPU. Cut after six new tokens, some continuations end inside a character: transformers renders the partial
bytes as U+FFFD, vLLM holds them back. The ids still agree, so validation passes; judged on the same real outputs,
ids that differ fail even where the decoded texts are equal. One vLLM start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from refresh_helpers import SHA, run_job

from llmops.config import load_registry
from llmops.config.schema import ModelSpec
from llmops.refresh.plan import expand_targets
from llmops.validate.golden import GoldenSet, judge_agreement

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

FACTS = ["東京は日本の首都です。", "北京是中国的首都。", "서울은 한국의 수도입니다。", "富士山は日本一高い山です。",
         "长城很长。", "ラーメンが好きです。", "一二三四五六七八九十。", "猫が窓の外を見ています。"]
GOLDEN = {"golden_prompts": [{"prompt": "서울은"}, {"prompt": "一二三"}, {"prompt": "猫が"}, {"prompt": "北京是"}],
          # W8A8 moves this tiny model's choices on about half of these prompts; the point here is the rows
          # whose ids agree although the texts differ, so the gate sits below that
          "max_new_tokens": 6, "min_agreement": 0.25}


@pytest.fixture(scope="module")
def validated(tmp_path_factory, worker_python, serving_python):
    root = tmp_path_factory.mktemp("multibyte")
    (root / "facts.json").write_text(json.dumps(FACTS, ensure_ascii=False), encoding="utf-8")
    done, built = run_job(worker_python, "make_tiny_model", "--out", str(root / "model"), "--facts",
                          str(root / "facts.json"), timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    spec = ModelSpec(name="tiny-cjk", repo_id="llmops-demo/tiny-cjk", max_model_len=512, validation=GOLDEN,
                     targets=[{"recipe": "llmcompressor-w8a8", "gpu_profiles": ["a10"]}])
    (item,) = expand_targets([spec], {spec.name: SHA}, load_registry().gpu_profiles, runtime="local",
                             work_root=str(root / "work")).items
    Path(item.source_dir).parent.mkdir(parents=True)
    Path(item.source_dir).symlink_to(built["path"], target_is_directory=True)
    done, _ = run_job(worker_python, "quantize", "--item", item.to_json(), timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    done, result = run_job(serving_python, "validate", "--item", item.to_json(), timeout=1800)
    record = json.loads(Path(item.validation_file).read_text())
    return item, done, result, record


def test_a_continuation_cut_inside_a_character_passes_when_the_token_ids_agree(validated):
    item, done, result, record = validated
    assert done.returncode == 0, done.stderr[-4000:]
    assert record["status"] == result["status"] == "passed" and record["compared"] == "greedy continuation token ids"
    cut = [row for row in record["prompts"] if row["agrees"] and row["reference"] != row["quantized"]]
    assert cut, f"no continuation ended inside a character this time: {record['prompts']}"
    for row in cut:  # same ids, texts differ only by the partial character's rendering
        assert row["reference"].endswith("\ufffd") and row["reference_token_ids"] == row["quantized_token_ids"]
        assert row["reference"].rstrip("\ufffd").startswith(row["quantized"].rstrip("\ufffd"))


def test_on_the_same_real_outputs_differing_token_ids_fail_even_where_the_texts_are_equal(validated):
    item, _, _, record = validated
    golden = GoldenSet.from_dict(item.golden)
    vllm = [{"token_ids": row["quantized_token_ids"], "text": row["quantized"]} for row in record["prompts"]]
    # the reference's last token swapped for another: a different choice of the model, whatever the text shows
    other = [{"token_ids": row["reference_token_ids"][:-1] + [row["reference_token_ids"][-1] + 1],
              "text": row["quantized"]} for row in record["prompts"]]
    verdict = judge_agreement(GoldenSet(golden.prompts, golden.max_new_tokens, 0.5), other, vllm)
    assert not verdict.passed and verdict.agreement == 0.0
    assert "min_agreement" not in verdict.summary()
