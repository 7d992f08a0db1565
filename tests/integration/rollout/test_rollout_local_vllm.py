"""Analysis and decision against real vLLM servers on CPU, through the same runner the DAG uses.

Stable and canary are real vLLM processes; every test starts its own canary (~40-60 s on 2 cores),
so there are few tests and short analysis windows (2 steps x 5-10 s). The latency threshold is 2.0 here
(the deployment default is 1.5): two CPU servers sharing 2 cores with other test suites are noisy,
and the verdict uses the median of paired rounds, so a healthy canary stays well under 2 while the
slow one (300 ms added to a ~50 ms request) is several times over.
"""

from __future__ import annotations

import pytest

from llmops.canary.probes import complete, generation_ok
from llmops.rollout.preflight import PreflightError, RolloutInProgressError
from llmops.rollout.request import RolloutRequest, resolve_request
from llmops.rollout.runner import execute, run_preflight

from .fault_proxy import FaultProxy

pytestmark = pytest.mark.slow


def resolved(registry, uri, **overrides):
    params = dict(model="tiny-llama", deployment="tiny-llama-chat", version=uri, steps=[50, 100],
                  analysis_window_s=5, max_p95_latency_ratio=2.0)
    params.update(overrides)
    return resolve_request(RolloutRequest(**params), registry)


def stable_snapshot(backend):
    stable = backend.local.load().stable
    ok, _ = generation_ok(stable.url, "tiny-llama")
    return stable.pid, stable.version, ok, complete(stable.url, "tiny-llama", "One, two, three,")


class Proxied:
    """The local backend, but the analysis reaches the canary through a fault proxy."""

    def __init__(self, backend, proxy):
        self._backend, self._proxy = backend, proxy

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def endpoints(self):
        stable, canary = self._backend.endpoints()
        self._proxy.upstream = canary
        return stable, self._proxy.url


def run(registry, store, backend, uri, run_id, **overrides):
    rollout = resolved(registry, uri, **overrides)
    pre = run_preflight(rollout, store=store, backend=backend, registry=registry, run_id=run_id)
    return execute(rollout, pre, backend=backend, run_id=run_id, readiness_timeout_s=300)


def test_canary_failing_golden_prompts_is_rolled_back_stable_untouched(registry, rollout_store, local_backend):
    store, uris = rollout_store
    before = stable_snapshot(local_backend)
    report = run(registry, store, local_backend, uris["garbage"], "test_golden")
    assert report.outcome == "rolled_back", report.reason
    failed = {c.name for c in report.steps[0].verdict.checks if c.status == "fail"}
    assert "golden_prompts" in failed
    assert len(report.steps) == 1  # stopped at the first step, never shifted to 100 %
    assert stable_snapshot(local_backend) == before
    assert local_backend.local.load().canary is None and local_backend.lock_holder() is None


def test_slow_and_erroring_canary_is_rolled_back(registry, rollout_store, local_backend):
    """One canary start covers both faults (each start costs ~1 min here); the verdict unit tests show
    that either fault alone fails its check."""
    store, uris = rollout_store
    before = stable_snapshot(local_backend)
    with FaultProxy("http://127.0.0.1:1", delay_s=0.5, error_every=3) as proxy:
        report = run(registry, store, Proxied(local_backend, proxy), uris["healthy"], "test_faulty")
    assert report.outcome == "rolled_back", report.reason
    failed = {c.name for c in report.steps[0].verdict.checks if c.status == "fail"}
    assert {"p95_latency_ratio", "error_rate"} <= failed
    ratio = next(c.observed for c in report.steps[0].verdict.checks if c.name == "p95_latency_ratio")
    assert ratio > 2.0
    assert stable_snapshot(local_backend) == before
    assert local_backend.local.load().canary is None


def test_second_rollout_refused_and_fp8_refused_before_anything_starts(registry, rollout_store, local_backend):
    store, uris = rollout_store
    assert local_backend.acquire("someone_else")
    try:
        with pytest.raises(RolloutInProgressError, match="someone_else"):
            run_preflight(resolved(registry, uris["healthy"]), store=store, backend=local_backend,
                          registry=registry, run_id="test_busy")
    finally:
        local_backend.release("someone_else")
    assert local_backend.local.load().canary is None


def test_healthy_canary_is_promoted_then_a_rerun_changes_nothing(registry, rollout_store, local_backend):
    store, uris = rollout_store
    old_stable_pid = local_backend.local.load().stable.pid
    # a longer window than the failure tests: more paired rounds make the median robust on a busy machine
    report = run(registry, store, local_backend, uris["healthy"], "test_promote", analysis_window_s=10)
    assert report.outcome == "promoted", report.reason
    assert [s.canary_percent for s in report.steps] == [50, 100]
    assert all(s.verdict.passed for s in report.steps)
    state = local_backend.local.load()
    assert state.stable.version == uris["healthy"] and state.previous_version == uris["stable"]
    assert state.canary is None and state.stable.pid != old_stable_pid
    assert "four" in complete(state.stable.url, "tiny-llama", "One, two, three,")
    rerun = run(registry, store, local_backend, uris["healthy"], "test_promote_again")
    assert rerun.outcome == "unchanged"
    with pytest.raises(PreflightError):  # an unknown version is refused, the deployment stays as it is
        run(registry, store, local_backend, "models/tiny-llama/" + "d" * 40 + "/vllm-none", "test_missing")
    assert local_backend.local.load().stable.pid == state.stable.pid
