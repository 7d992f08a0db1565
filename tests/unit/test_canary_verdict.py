"""The pure verdict function on recorded observations, exhaustively."""

from __future__ import annotations

import itertools

import pytest

from llmops.canary.verdict import Observations, ProbeRound, Thresholds, judge, paired_ratios
from llmops.golden import GoldenOutcome

T = Thresholds(max_p95_latency_ratio=1.5, max_error_rate=0.05, min_golden_pass_rate=1.0, min_rounds=3)


def rounds(target, p95s, errors=0, requests=20):
    return [ProbeRound(target, requests, errors, p95_e2e_s=p, p50_e2e_s=p / 2) for p in p95s]


GOLDEN = {"all_pass": [GoldenOutcome("a", True), GoldenOutcome("b", True)],
          "one_fails": [GoldenOutcome("a", True), GoldenOutcome("b", False, "zz", "expected 'four'")]}
ERRORS = {"none": 0, "under": 1 / 3, "over": 5}  # errors per round of 20 requests (0, ~1.7 %, 25 %)
LATENCY = {"same": [0.1, 0.1, 0.1], "noisy_but_fine": [0.1, 2.0, 0.11], "slow": [0.3, 0.3, 0.3],
           "one_lucky_round": [0.3, 0.1, 0.3]}


@pytest.mark.parametrize(("golden", "errors", "latency"), list(itertools.product(GOLDEN, ERRORS, LATENCY)))
def test_verdict_passes_iff_every_check_passes(golden, errors, latency):
    stable = rounds("stable", [0.1, 0.1, 0.1])
    per_round_errors = ERRORS[errors]
    canary = [ProbeRound("canary", 60 if errors == "under" else 20, 1 if errors == "under" else int(per_round_errors),
                         p95_e2e_s=p, p50_e2e_s=p / 2) for p in LATENCY[latency]]
    verdict = judge(Observations(GOLDEN[golden], canary, stable), T)
    expected = golden == "all_pass" and errors != "over" and latency in ("same", "noisy_but_fine")
    assert verdict.passed is expected
    statuses = {c.name: c.status for c in verdict.checks}
    assert (statuses["golden_prompts"] == "pass") == (golden == "all_pass")
    assert (statuses["error_rate"] == "pass") == (errors != "over")
    assert (statuses["p95_latency_ratio"] == "pass") == (latency in ("same", "noisy_but_fine"))
    if not expected:
        assert verdict.summary.startswith("canary rejected")


def test_median_of_paired_ratios_ignores_one_stalled_round():
    canary = rounds("canary", [0.1, 5.0, 0.1, 0.1, 0.1])
    stable = rounds("stable", [0.1, 0.1, 0.1, 0.1, 0.1])
    assert paired_ratios(canary, stable)[1] == pytest.approx(50)
    assert judge(Observations(GOLDEN["all_pass"], canary, stable), T).passed


def test_too_few_rounds_is_inconclusive_and_fails():
    verdict = judge(Observations(GOLDEN["all_pass"], rounds("canary", [0.1, 0.1]), rounds("stable", [0.1, 0.1])), T)
    assert not verdict.passed
    assert "inconclusive" in verdict.summary


def test_no_requests_fails_and_no_stable_skips_latency():
    assert not judge(Observations(GOLDEN["all_pass"], [], []), T).passed
    verdict = judge(Observations(GOLDEN["all_pass"], rounds("canary", [0.1]), []), T)
    assert verdict.passed
    assert {c.name: c.status for c in verdict.checks}["p95_latency_ratio"] == "skipped"


def test_missing_golden_prompts_fail_unless_not_required():
    obs = Observations([], rounds("canary", [0.1] * 3), rounds("stable", [0.1] * 3))
    assert not judge(obs, T).passed
    assert judge(obs, Thresholds(min_golden_pass_rate=0.0)).passed


def test_rounds_without_latency_do_not_count():
    canary = [ProbeRound("canary", 10, 10)] * 3  # every request failed: no latency at all
    verdict = judge(Observations(GOLDEN["all_pass"], canary, rounds("stable", [0.1] * 3)), T)
    assert not verdict.passed
    assert {c.name: c.status for c in verdict.checks} == {"golden_prompts": "pass", "error_rate": "fail",
                                                           "p95_latency_ratio": "inconclusive"}
    assert verdict.outcome == "failed"  # a threshold broken outranks missing data


def test_failed_inconclusive_and_error_are_distinct_outcomes():
    fine = Observations(GOLDEN["all_pass"], rounds("canary", [0.1] * 3), rounds("stable", [0.1] * 3))
    assert judge(fine, T).outcome == "passed"
    assert judge(Observations(GOLDEN["one_fails"], fine.canary_rounds, fine.stable_rounds), T).outcome == "failed"
    few = Observations(GOLDEN["all_pass"], rounds("canary", [0.1]), rounds("stable", [0.1]))
    assert judge(few, T).outcome == "inconclusive" and not judge(few, T).passed
    unanswered = ProbeRound("canary", 20, 20, measurement_error="no response to 20 requests (ConnectError)")
    errors = Observations(GOLDEN["all_pass"], [unanswered] * 4, rounds("stable", [0.1] * 4),
                          measurement_errors=4, error_limit_reached="4 probe rounds in a row got no response")
    verdict = judge(errors, T)
    assert verdict.outcome == "error" and "in a row" in verdict.summary


def test_a_transient_measurement_error_is_retried_not_counted_as_canary_errors():
    unanswered = ProbeRound("canary", 20, 20, measurement_error="no response to 20 requests (ReadTimeout)")
    canary = [unanswered, *rounds("canary", [0.1] * 3)]
    verdict = judge(Observations(GOLDEN["all_pass"], canary, rounds("stable", [0.1] * 4), measurement_errors=1), T)
    assert verdict.passed, verdict.summary


def test_decisive_evidence_stops_early_and_weak_evidence_does_not():
    from llmops.canary.verdict import decisive_failure

    assert "golden" in decisive_failure(Observations(GOLDEN["one_fails"]), T)
    assert decisive_failure(Observations(GOLDEN["all_pass"]), T) is None
    many = Observations(GOLDEN["all_pass"], rounds("canary", [0.1], errors=6))
    assert "6 errors in 20" in decisive_failure(many, T)
    few = Observations(GOLDEN["all_pass"], rounds("canary", [0.1], errors=2))  # over the rate, under the count
    assert decisive_failure(few, T) is None
    verdict = judge(Observations(GOLDEN["all_pass"], [], [], canary_gone="the canary vLLM process 1 exited",
                                 stopped_early="the canary vLLM process 1 exited"), T)
    assert verdict.outcome == "failed" and "crashed" in verdict.summary
    golden_only = judge(Observations(GOLDEN["one_fails"], [], [], stopped_early="golden prompts failing",
                                     has_stable=True), T)
    latency = {c.name: c for c in golden_only.checks}["p95_latency_ratio"]
    assert latency.status == "skipped" and "initial deployment" not in latency.detail


def test_a_significant_rank_test_outvoted_by_the_ratio_is_mentioned():
    canary = [samples_round("canary", 0.05, shift=0.01) for _ in range(3)]
    stable = [samples_round("stable", 0.05) for _ in range(3)]
    check = {c.name: c for c in judge(Observations(GOLDEN["all_pass"], canary, stable), T).checks}["p95_latency_ratio"]
    assert check.status == "pass" and "outvoted" in check.detail and "rolled back above 1.22" in check.detail


def samples_round(target, base, n=20, outliers=0, shift=0.0):
    values = [base + shift + 0.001 * i for i in range(n - outliers)] + [base * 20] * outliers
    from llmops.canary.stats import percentile

    return ProbeRound(target, n, 0, percentile(values, 50), percentile(values, 95), e2e_samples=tuple(values))


def test_a_few_stalled_requests_are_noise_not_a_slow_canary():
    """p95 of a small round is its maximum: two stalls per round triple it, but the rank test sees the bulk."""
    canary = [samples_round("canary", 0.05, outliers=2) for _ in range(3)]
    stable = [samples_round("stable", 0.05) for _ in range(3)]
    check = {c.name: c for c in judge(Observations(GOLDEN["all_pass"], canary, stable), T).checks}["p95_latency_ratio"]
    assert check.observed > T.max_p95_latency_ratio
    assert check.status == "pass" and "not significant" in check.detail


def test_a_systematically_slower_canary_fails_both_ways():
    canary = [samples_round("canary", 0.05, shift=0.5) for _ in range(3)]
    stable = [samples_round("stable", 0.05) for _ in range(3)]
    check = {c.name: c for c in judge(Observations(GOLDEN["all_pass"], canary, stable), T).checks}["p95_latency_ratio"]
    assert check.status == "fail" and "p=" in check.detail


@pytest.mark.parametrize(("x", "y", "low"), [([5, 6, 7, 8, 9], [1, 2, 3, 4, 5], True), ([1, 2, 3], [1, 2, 3], False),
                                             ([1, 2, 3, 4], [5, 6, 7, 8], False)])
def test_mann_whitney_one_sided(x, y, low):
    from llmops.canary.stats import mann_whitney_greater

    p = mann_whitney_greater(x * 4, y * 4)
    assert (p < 0.05) is low
    assert mann_whitney_greater([], y) is None
