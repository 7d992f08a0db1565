"""The validation verdict (llmops.validate.golden) and the recipe catalogue's promises. Pure."""

from __future__ import annotations

import pytest

from llmops.config.recipes import RECIPES
from llmops.golden import GoldenPrompt
from llmops.validate.golden import GoldenSet, judge_agreement

GOLDEN = GoldenSet([GoldenPrompt(prompt="The capital of France is"), GoldenPrompt(prompt="One, two, three,"),
                    GoldenPrompt(prompt="Kubernetes schedules")], max_new_tokens=8, min_agreement=0.5)
EOS = 1


def gen(text: str, *ids: int) -> dict:
    return {"text": text, "token_ids": list(ids)}


REFERENCE = [gen(" Paris.", 10, 11, EOS), gen(" four, five.", 20, 21, 22), gen(" pods on nodes.", 30, 31, 32)]


def test_identical_greedy_token_ids_agree_fully():
    verdict = judge_agreement(GOLDEN, REFERENCE, [dict(g) for g in REFERENCE], eos_token_ids=[EOS])
    assert (verdict.passed, verdict.agreement) == (True, 1.0)
    assert "agreement 100% (needs 50%; 3 of 3 prompts with identical greedy token ids): PASS" in verdict.summary()


def test_agreement_is_the_share_of_prompts_whose_token_ids_match_and_must_reach_the_threshold():
    two_of_three = judge_agreement(GOLDEN, REFERENCE, [REFERENCE[0], REFERENCE[1], gen(" pods.", 30, 33)])
    assert (two_of_three.passed, two_of_three.agreement) == (True, 0.6667)
    one_of_three = judge_agreement(GOLDEN, REFERENCE, [REFERENCE[0], gen(" six", 25), gen(" pods.", 30, 33)])
    assert (one_of_three.passed, one_of_three.agreement) == (False, 0.3333)
    summary = one_of_three.summary()
    assert "FAIL" in summary and "! 'One, two, three,'" in summary and "token ids differ from token 0" in summary
    assert "min_agreement" not in summary  # never suggests weakening the gate
    strict = GoldenSet(GOLDEN.prompts, 8, min_agreement=1.0)
    assert not judge_agreement(strict, REFERENCE, [REFERENCE[0], REFERENCE[1], gen(" pods.", 30, 33)]).passed


def test_a_continuation_ending_inside_a_multi_byte_character_agrees_when_the_ids_agree():
    """transformers renders a cut character as U+FFFD, vLLM holds the bytes back: the texts differ, the ids do not."""
    golden = GoldenSet([GoldenPrompt(prompt="東京は")], 4, 1.0)
    reference = [gen("日本の\ufffd", 200, 201, 202, 203)]
    assert judge_agreement(golden, reference, [gen("日本の", 200, 201, 202, 203)]).passed
    differs = judge_agreement(golden, reference, [gen("日本の\ufffd", 200, 201, 202, 204)])
    assert not differs.passed and differs.rows[0]["first_difference"] == 3


def test_a_trailing_end_of_sequence_id_returned_by_one_runtime_only_is_not_a_difference():
    assert judge_agreement(GoldenSet(GOLDEN.prompts[:1], 8, 1.0), REFERENCE[:1], [gen(" Paris.", 10, 11)],
                 eos_token_ids=[EOS]).passed
    assert not judge_agreement(GoldenSet(GOLDEN.prompts[:1], 8, 1.0), REFERENCE[:1], [gen(" Paris.", 10, 11)]).passed


def test_registry_expectations_must_hold_on_the_quantized_answer_even_when_it_agrees():
    golden = GoldenSet([GoldenPrompt(prompt="The capital of France is", expect_substring="Paris"),
                        GoldenPrompt(prompt="One, two, three,", expect_regex=r"\bfour\b")], 8, 0.5)
    assert judge_agreement(golden, [gen(" Paris.", 1), gen(" four", 2)], [gen(" Paris.", 1), gen(" four", 2)]).passed
    verdict = judge_agreement(golden, [gen(" Lyon.", 1), gen(" five", 2)], [gen(" Lyon.", 1), gen(" five", 2)])
    assert not verdict.passed and verdict.agreement == 1.0
    assert len(verdict.problems) == 2 and "lacks 'Paris'" in verdict.problems[0]


def test_an_empty_golden_set_fails_instead_of_passing_vacuously():
    verdict = judge_agreement(GoldenSet([], 8, 0.0), [], [])
    assert not verdict.passed and "add validation.golden_prompts" in verdict.problems[0]


def test_answers_must_line_up_with_the_prompts():
    with pytest.raises(ValueError, match="3 golden prompts but 3 reference and 2 quantized"):
        judge_agreement(GOLDEN, REFERENCE, REFERENCE[:2])


def test_golden_set_round_trips_through_the_plan_item_form():
    data = {"prompts": [{"prompt": "x", "expect_substring": "y", "expect_json_schema": {"type": "object"}}],
            "max_new_tokens": 3,
            "min_agreement": 0.9}
    assert GoldenSet.from_dict(data).to_dict() == data


def test_catalogue_offers_every_format_the_issue_asks_for_with_the_right_gpu_floor():
    offered = {(r.runtime, r.tool, r.scheme): r.min_compute_capability for r in RECIPES.values()}
    assert offered[("vllm", "llmcompressor", "FP8_DYNAMIC")] == 8.9
    assert offered[("tensorrt-llm", "modelopt", "FP8")] == 8.9
    assert offered[("tensorrt-llm", "modelopt", "NVFP4")] == 10.0
    assert {("vllm", "llmcompressor", "W8A8"), ("vllm", "llmcompressor", "W4A16"), ("vllm", "optimum-gptq", "GPTQ-INT4"),
            ("tensorrt-llm", "modelopt", "INT4_AWQ")} <= set(offered)
    assert [r.name for r in RECIPES.values() if not r.cpu_ok] == ["optimum-gptq-int4"]
