"""Golden prompts (llmops.golden): one type and one expectation check for refresh validation and the canary."""

from __future__ import annotations

import pytest

from llmops.config.schema import ModelValidation, RolloutSpec
from llmops.golden import GoldenPrompt, check_answer
from llmops.validate.golden import GoldenSet, expectation_problems


@pytest.mark.parametrize(("output", "kwargs", "passed"), [
    (" four, five.", {"expect_substring": "four"}, True),
    (" 4 5", {"expect_substring": "four"}, False),
    (" pods on nodes.", {"expect_regex": r"pods? on nodes"}, True),
    ("nodes", {"expect_regex": r"^pods"}, False),
    ('{"answer": 4}', {"expect_json_schema": {"type": "object", "required": ["answer"]}}, True),
    ('{"other": 4}', {"expect_json_schema": {"type": "object", "required": ["answer"]}}, False),
    ("not json", {"expect_json_schema": {"type": "object"}}, False),
    (" four", {"expect_substring": "four", "expect_regex": r"^\d"}, False),  # every expectation must hold
    (None, {"expect_substring": "x"}, False),
])
def test_golden_expectations(output, kwargs, passed):
    outcome = check_answer(GoldenPrompt(prompt="p", **kwargs), output)
    assert outcome.passed is passed
    assert bool(outcome.reason) is not passed


def test_a_failed_request_is_a_failed_answer_with_its_reason():
    outcome = check_answer(GoldenPrompt(prompt="p", expect_substring="x"), None, error="ConnectTimeout: boom")
    assert not outcome.passed and outcome.reason == "request failed: ConnectTimeout: boom"


def test_refresh_validation_reports_what_the_canary_reports():
    """The same check words both pipelines' findings: refresh problems carry the canary's reason."""
    prompt = GoldenPrompt(prompt="The capital of France is", expect_substring="Paris")
    problems = expectation_problems(GoldenSet([prompt]), [" Lyon."], whose="quantized")
    assert problems == [f"'The capital of France is': quantized output ' Lyon.' {check_answer(prompt, ' Lyon.').reason}"]
    assert "lacks 'Paris'" in problems[0]


def test_a_rollout_golden_prompt_needs_an_expectation():
    with pytest.raises(ValueError, match=r"golden_prompts\[1\] .*needs an expectation; fix: set expect_substring"):
        RolloutSpec(golden_prompts=[{"prompt": "a", "expect_substring": "b"}, {"prompt": "no expectation"}])


def test_model_validation_refuses_a_per_prompt_length_it_would_ignore():
    assert ModelValidation(golden_prompts=[{"prompt": "a"}]).golden_prompts[0].max_tokens is None
    with pytest.raises(ValueError, match=r"golden_prompts\[0\] sets max_tokens, which only rollouts use"):
        ModelValidation(golden_prompts=[{"prompt": "a", "max_tokens": 4}])


def test_an_invalid_regex_is_refused_with_a_fix():
    with pytest.raises(ValueError, match="is not a valid regular expression"):
        GoldenPrompt(prompt="a", expect_regex="(")
