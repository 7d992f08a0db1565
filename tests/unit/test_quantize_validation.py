"""The validation verdict (llmops.validate.golden) and the recipe catalogue's promises. Pure."""

from __future__ import annotations

import pytest

from llmops.quantize.recipes import RECIPES
from llmops.validate.golden import GoldenPrompt, GoldenSet, judge

GOLDEN = GoldenSet([GoldenPrompt("The capital of France is"), GoldenPrompt("One, two, three,"),
                    GoldenPrompt("Kubernetes schedules")], max_new_tokens=8, min_agreement=0.5)
REFERENCE = [" Paris.", " four, five.", " pods on nodes."]


def test_identical_greedy_answers_agree_fully():
    verdict = judge(GOLDEN, REFERENCE, list(REFERENCE))
    assert (verdict.passed, verdict.agreement) == (True, 1.0)
    assert "agreement 100% (needs 50%): PASS" in verdict.summary()


def test_agreement_is_the_share_of_prompts_that_match_and_must_reach_the_threshold():
    two_of_three = judge(GOLDEN, REFERENCE, [" Paris.", " four, five.", " pods."])
    assert (two_of_three.passed, two_of_three.agreement) == (True, 0.6667)
    one_of_three = judge(GOLDEN, REFERENCE, [" Paris.", " six", " pods."])
    assert (one_of_three.passed, one_of_three.agreement) == (False, 0.3333)
    assert "FAIL" in one_of_three.summary() and "! 'One, two, three,'" in one_of_three.summary()
    strict = GoldenSet(GOLDEN.prompts, 8, min_agreement=1.0)
    assert not judge(strict, REFERENCE, [" Paris.", " four, five.", " pods."]).passed


def test_whitespace_differences_do_not_count_as_disagreement():
    assert judge(GOLDEN, REFERENCE, ["Paris.", " four,  five.", " pods on nodes.\n"]).agreement == 1.0


def test_registry_expectations_must_hold_on_the_quantized_answer_even_when_it_agrees():
    golden = GoldenSet([GoldenPrompt("The capital of France is", expect_substring="Paris"),
                        GoldenPrompt("One, two, three,", expect_regex=r"\bfour\b")], 8, 0.5)
    assert judge(golden, [" Paris.", " four"], [" Paris.", " four"]).passed
    verdict = judge(golden, [" Lyon.", " five"], [" Lyon.", " five"])
    assert not verdict.passed and verdict.agreement == 1.0
    assert len(verdict.problems) == 2 and "lacks 'Paris'" in verdict.problems[0]


def test_an_empty_golden_set_fails_instead_of_passing_vacuously():
    verdict = judge(GoldenSet([], 8, 0.0), [], [])
    assert not verdict.passed and "add validation.golden_prompts" in verdict.problems[0]


def test_answers_must_line_up_with_the_prompts():
    with pytest.raises(ValueError, match="3 golden prompts but 3 reference and 2 quantized"):
        judge(GOLDEN, REFERENCE, REFERENCE[:2])


def test_golden_set_round_trips_through_the_plan_item_form():
    data = {"prompts": [{"prompt": "x", "expect_substring": "y", "expect_regex": None}], "max_new_tokens": 3,
            "min_agreement": 0.9}
    assert GoldenSet.from_dict(data).to_dict() == data


def test_catalogue_offers_every_format_the_issue_asks_for_with_the_right_gpu_floor():
    offered = {(r.runtime, r.tool, r.scheme): r.min_compute_capability for r in RECIPES.values()}
    assert offered[("vllm", "llmcompressor", "FP8_DYNAMIC")] == 8.9
    assert offered[("tensorrt-llm", "modelopt", "FP8")] == 8.9
    assert offered[("tensorrt-llm", "modelopt", "NVFP4")] == 10.0
    assert {("vllm", "llmcompressor", "W8A8"), ("vllm", "llmcompressor", "W4A16"), ("vllm", "optimum-gptq", "GPTQ-INT4"),
            ("tensorrt-llm", "modelopt", "INT4_AWQ"), ("tensorrt-llm", "trtllm-build", "FP8")} <= set(offered)
    assert [r.name for r in RECIPES.values() if not r.cpu_ok] == ["optimum-gptq-int4", "trtllm-engine-fp8"]
