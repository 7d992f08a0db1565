"""Teacher-forced validation (llmops.validate.teacher_forced): the KL approximation, confident top-1 agreement
and the verdict, from hand-made top-k logprobs (pure: no model, no server)."""

from __future__ import annotations

import math

import pytest

from llmops.config.recipes import ValidationThresholds
from llmops.errors import InvalidValue
from llmops.validate.teacher_forced import (
    TeacherForcedPosition,
    TeacherForcedPrompt,
    judge_teacher_forced,
    position_kl,
)

THRESHOLDS = ValidationThresholds(max_mean_kl=0.05, min_confident_top1=0.9, confidence_margin=1.0)


def log(probabilities: dict[int, float]) -> dict[int, float]:
    return {token: math.log(p) for token, p in probabilities.items()}


def exact_kl(p: dict[int, float], q: dict[int, float]) -> float:
    return sum(pt * math.log(pt / q[t]) for t, pt in p.items() if pt > 0)


def test_kl_is_exact_when_the_top_k_covers_the_vocabulary():
    p, q = {0: 0.7, 1: 0.2, 2: 0.1}, {0: 0.5, 1: 0.3, 2: 0.2}
    assert position_kl(log(p), log(q)) == pytest.approx(exact_kl(p, q), rel=1e-9)
    assert position_kl(log(p), log(p)) == pytest.approx(0.0, abs=1e-12)


def test_the_tail_bucket_makes_a_truncated_kl_a_lower_bound_of_the_true_one():
    p = {0: 0.5, 1: 0.2, 2: 0.1, 3: 0.1, 4: 0.1}
    q = {0: 0.3, 1: 0.3, 2: 0.05, 3: 0.05, 4: 0.3}
    top2 = position_kl(log({0: 0.5, 1: 0.2}), log({0: 0.3, 1: 0.3, 4: 0.3}))
    tail_only = exact_kl({0: 0.5, 1: 0.2, "tail": 0.3}, {0: 0.3, 1: 0.3, "tail": 0.4})
    assert top2 == pytest.approx(tail_only, rel=1e-9)
    assert 0 < top2 <= exact_kl(p, q)


def test_a_reference_token_the_candidate_does_not_list_gets_a_share_of_its_unlisted_mass():
    # candidate lists 0 and 1 (0.9 together): token 2 of the reference shares the other 0.1 with the tail
    kl = position_kl(log({0: 0.6, 2: 0.3}), log({0: 0.6, 1: 0.3}))
    expected = 0.6 * math.log(0.6 / 0.6) + 0.3 * math.log(0.3 / 0.05) + 0.1 * math.log(0.1 / 0.35)
    assert kl == pytest.approx(expected, rel=1e-9)
    # ... never more than the candidate's least likely listed token (it would be listed otherwise)
    capped = position_kl(log({0: 0.5, 2: 0.4}), log({0: 0.5, 1: 0.01}))
    assert capped == pytest.approx(0.5 * 0 + 0.4 * math.log(0.4 / 0.01) + 0.1 * math.log(0.1 / 0.49), rel=1e-9)


def test_a_token_the_candidate_rules_out_costs_a_large_finite_kl():
    kl = position_kl({5: 0.0}, {6: 0.0})
    assert 20 < kl < 30 and math.isfinite(kl)


def prompt_of(pairs: list[tuple[dict, dict]], text: str = "p") -> TeacherForcedPrompt:
    return TeacherForcedPrompt(text, list(range(len(pairs))),
                               [TeacherForcedPosition(log(r), log(c)) for r, c in pairs])


CONFIDENT = {1: 0.9, 2: 0.05}         # margin log(18) = 2.9 nats
NEAR_TIE = {1: 0.46, 2: 0.44}         # margin 0.04 nats


def test_identical_distributions_pass_with_zero_kl_and_full_agreement():
    result = judge_teacher_forced([prompt_of([(CONFIDENT, CONFIDENT), (NEAR_TIE, NEAR_TIE)])], THRESHOLDS)
    assert result.passed and result.mean_kl == pytest.approx(0, abs=1e-12)
    assert (result.positions, result.confident_positions, result.confident_agreeing) == (2, 1, 1)
    assert result.confident_top1 == 1.0
    assert "PASS" in result.summary() and result.to_dict()["passed"] is True


def test_a_flipped_near_tie_does_not_count_against_the_candidate():
    """The case free-running greedy comparison got wrong: the reference barely prefers 1, the candidate barely 2."""
    flipped = {1: 0.44, 2: 0.46}
    result = judge_teacher_forced([prompt_of([(NEAR_TIE, flipped)] * 3 + [(CONFIDENT, CONFIDENT)])], THRESHOLDS)
    assert result.passed, result.summary()
    assert result.confident_positions == 1 and result.mean_kl < 0.01


def test_a_confident_token_changed_fails_on_agreement_and_kl():
    wrong = {1: 0.05, 2: 0.9}
    result = judge_teacher_forced([prompt_of([(CONFIDENT, wrong), (CONFIDENT, CONFIDENT)])], THRESHOLDS)
    assert not result.passed
    assert result.confident_top1 == 0.5
    assert any("confident top-1 agreement 50% is below 90%" in p for p in result.problems)
    assert any("mean KL" in p for p in result.problems)
    assert result.prompts[0]["max_kl_at"] == 0
    assert "FAIL" in result.summary()


def test_kl_alone_decides_without_a_confident_position_and_the_summary_says_so():
    far = {1: 0.1, 2: 0.1, 3: 0.8}
    result = judge_teacher_forced([prompt_of([(NEAR_TIE, far)])], THRESHOLDS)
    assert result.confident_top1 is None and not result.passed
    assert "KL alone decides" in result.summary()
    close = judge_teacher_forced([prompt_of([(NEAR_TIE, {1: 0.45, 2: 0.45})])], THRESHOLDS)
    assert close.passed


def test_thresholds_decide_and_a_model_overrides_them():
    pairs = [(CONFIDENT, {1: 0.85, 2: 0.1})]
    kl = judge_teacher_forced([prompt_of(pairs)], THRESHOLDS).mean_kl
    assert 0.01 < kl < 0.05
    assert judge_teacher_forced([prompt_of(pairs)], THRESHOLDS).passed
    strict = THRESHOLDS.replace(max_mean_kl=0.01, min_confident_top1=None)
    assert strict.min_confident_top1 == THRESHOLDS.min_confident_top1
    assert not judge_teacher_forced([prompt_of(pairs)], strict).passed


def test_nothing_scored_fails_rather_than_passing_vacuously():
    result = judge_teacher_forced([TeacherForcedPrompt("p", [], [])], THRESHOLDS)
    assert not result.passed and "no token was scored" in result.problems[0]
    assert not judge_teacher_forced([], THRESHOLDS).passed


def test_json_keys_are_token_ids_too():
    position = TeacherForcedPosition({"1": -0.1, "2": -2.5}, {"1": -0.1, "2": -2.5})
    result = judge_teacher_forced([TeacherForcedPrompt("p", [1], [position])], THRESHOLDS)
    assert result.passed and result.confident_positions == 1


@pytest.mark.parametrize(("prompt", "message"), [
    (TeacherForcedPrompt("p", [1, 2], [TeacherForcedPosition({1: -0.1}, {1: -0.1})]),
     "2 continuation tokens but 1 positions"),
    (TeacherForcedPrompt("p", [1], [TeacherForcedPosition({}, {1: -0.1})]), "the reference has no logprobs"),
    (TeacherForcedPrompt("p", [1], [TeacherForcedPosition({1: -0.1}, {1: 3.0})]), "not a log-probability"),
    (TeacherForcedPrompt("p", [1], [TeacherForcedPosition({"x": -0.1}, {1: -0.1})]), "has the entry 'x'"),
])
def test_malformed_input_is_refused_naming_the_prompt_and_the_fix(prompt, message):
    with pytest.raises(InvalidValue, match=message) as caught:
        judge_teacher_forced([prompt], THRESHOLDS)
    assert caught.value.fix


def test_relative_kl_catches_a_broken_candidate_of_a_near_flat_model_that_absolute_kl_lets_through():
    """A random model's distribution is almost uniform: a broken candidate stays within a tiny absolute KL, but
    loses most of the little the reference knows."""
    vocab = 512
    reference = {t: math.log(1 / vocab) + 0.05 * math.sin(t) for t in range(20)}
    broken = {t: math.log(1 / vocab) + 0.05 * math.cos(3 * t) for t in range(20)}
    close = {t: lp + 0.002 * math.cos(t) for t, lp in reference.items()}
    pairs = lambda cand: [TeacherForcedPrompt("p", [1, 2, 3], [TeacherForcedPosition(reference, cand)] * 3)]  # noqa: E731
    bad = judge_teacher_forced(pairs(broken), THRESHOLDS, vocab_size=vocab)
    assert bad.mean_kl < THRESHOLDS.max_mean_kl  # the absolute bound alone would pass it
    assert not bad.passed and any("of the reference's information" in p for p in bad.problems)
    good = judge_teacher_forced(pairs(close), THRESHOLDS, vocab_size=vocab)
    assert good.passed and good.relative_kl < bad.relative_kl / 10
    assert "of the reference's information" in good.summary()
    assert judge_teacher_forced(pairs(broken), THRESHOLDS).relative_kl is None  # without the vocabulary size


def test_a_peaked_references_information_is_large_so_a_small_kl_is_a_small_share():
    from llmops.validate.teacher_forced import position_information

    assert position_information({1: math.log(0.99)}, 1000) == pytest.approx(
        0.99 * math.log(0.99 * 1000) + 0.01 * math.log(0.01 * 1000 / 999), rel=1e-9)
    assert position_information({t: math.log(1 / 1000) for t in range(20)}, 1000) == pytest.approx(0, abs=1e-9)
