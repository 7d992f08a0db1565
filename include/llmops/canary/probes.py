"""Probes against OpenAI-compatible endpoints (vLLM): a real generation, golden prompts, bounded load.

Only this module (and `metrics.scrape`) talks to servers. Every probe is bounded in requests and time.
Readiness means a real generation succeeded: vLLM's /health stays green on a broken GPU (vLLM #36960).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from llmops.canary.stats import percentile
from llmops.canary.verdict import ProbeRound
from llmops.golden import ROLLOUT_MAX_TOKENS, GoldenOutcome, GoldenPrompt, check_answer

log = logging.getLogger(__name__)

LOAD_PROMPTS = (
    "One, two, three,",
    "Kubernetes schedules",
    "The capital of France is",
    "Airflow runs tasks in",
    "Milvus stores vectors for",
    "vLLM serves large language",
)


@dataclass(frozen=True)
class RequestTiming:
    ok: bool
    ttft_s: float | None
    e2e_s: float | None
    error: str = ""


def complete(base_url: str, model: str, prompt: str, *, max_tokens: int = 8, timeout_s: float = 30.0,
             client: httpx.Client | None = None) -> str:
    """One greedy, non-streaming completion; returns the text (raises httpx errors / ValueError)."""
    payload = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    own = client is None
    client = client or httpx.Client(timeout=timeout_s)
    try:
        response = client.post(f"{base_url.rstrip('/')}/v1/completions", json=payload, timeout=timeout_s)
        response.raise_for_status()
        choices = response.json().get("choices") or []
        if not choices:
            raise ValueError("the completion had no choices")
        return choices[0].get("text") or ""
    finally:
        if own:
            client.close()


def generation_ok(base_url: str, model: str, *, timeout_s: float = 30.0) -> tuple[bool, str]:
    try:
        complete(base_url, model, "ping", max_tokens=1, timeout_s=timeout_s)
        return True, "generated"
    except (httpx.HTTPError, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def run_golden(base_url: str, model: str, prompts: Sequence[GoldenPrompt], *,
               timeout_s: float = 30.0) -> list[GoldenOutcome]:
    """Each golden prompt once, greedy, checked against its expectations."""
    outcomes = []
    with httpx.Client(timeout=timeout_s) as client:
        for p in prompts:
            try:
                text, error = complete(base_url, model, p.prompt, max_tokens=p.max_tokens or ROLLOUT_MAX_TOKENS,
                                       timeout_s=timeout_s, client=client), None
            except (httpx.HTTPError, ValueError) as exc:
                text, error = None, f"{type(exc).__name__}: {exc}"
            outcomes.append(check_answer(p, text, error=error))
    return outcomes


def timed_stream(client: httpx.Client, base_url: str, model: str, prompt: str, max_tokens: int,
                 timeout_s: float) -> RequestTiming:
    """One streamed completion: time to first token and end-to-end latency as the client sees them."""
    payload = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
               "ignore_eos": True}
    started = time.perf_counter()
    ttft = None
    try:
        with client.stream("POST", f"{base_url.rstrip('/')}/v1/completions", json=payload,
                           timeout=timeout_s) as response:
            if response.status_code != 200:
                response.read()
                return RequestTiming(False, None, None, f"HTTP {response.status_code}")
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if ttft is None and (chunk.get("choices") or [{}])[0].get("text"):
                    ttft = time.perf_counter() - started
        e2e = time.perf_counter() - started
        return RequestTiming(True, ttft if ttft is not None else e2e, e2e)
    except (httpx.HTTPError, ValueError) as exc:
        return RequestTiming(False, None, None, type(exc).__name__)


def load_round(base_url: str, model: str, target: str, *, requests: int, concurrency: int, max_tokens: int,
               timeout_s: float = 30.0, prompts: Sequence[str] = LOAD_PROMPTS) -> ProbeRound:
    """A bounded synthetic load: `requests` streamed completions, at most `concurrency` in flight."""
    started_at, started = time.time(), time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(limits=limits, timeout=timeout_s) as client, ThreadPoolExecutor(concurrency) as pool:
        timings = list(pool.map(lambda i: timed_stream(client, base_url, model, prompts[i % len(prompts)],
                                                       max_tokens, timeout_s), range(requests)))
    ok = [t for t in timings if t.ok]
    e2e = [t.e2e_s for t in ok if t.e2e_s is not None]
    ttft = [t.ttft_s for t in ok if t.ttft_s is not None]
    # no response at all (every request failed to connect or timed out): the probe could not measure
    unanswered = not ok and all(not t.error.startswith("HTTP ") for t in timings)
    measurement_error = f"no response to {requests} requests ({timings[0].error})" if unanswered and timings else ""
    return ProbeRound(target, requests, requests - len(ok), percentile(e2e, 50), percentile(e2e, 95),
                      percentile(ttft, 50), percentile(ttft, 95), started_at,
                      tuple(round(v, 5) for v in e2e), measurement_error, round(time.perf_counter() - started, 4))


@dataclass
class AlternatingProbe:
    """Repeated, alternating, never simultaneous load rounds against stable and canary.

    Round i probes stable then canary when i is even, canary then stable when odd, each after a short
    pause, so neither backend systematically runs on a warmer or colder machine. Rounds run until the
    analysis window is used up (and at least `min_rounds` times), until `after_round` asks to stop, or
    until `max_consecutive_errors` rounds in a row got no response at all (the third value returned).

    `measure(url, target)` runs one round (default: `load_round` with this probe's settings) and `sleep`
    pauses; bench/judge.py replays recorded rounds through this same loop with both (and `clock`) replaced.
    """

    stable_url: str | None
    canary_url: str
    model: str
    requests: int = 16
    concurrency: int = 8
    max_tokens: int = 16
    pause_s: float = 0.5
    min_rounds: int = 3
    timeout_s: float = 30.0
    max_consecutive_errors: int = 4
    warmup: bool = True
    measure: Callable[[str, str, int], ProbeRound] | None = None
    sleep: Callable[[float], None] = time.sleep

    def _round(self, url: str, target: str, requests: int) -> ProbeRound:
        if self.measure is not None:
            return self.measure(url, target, requests)
        return load_round(url, self.model, target, requests=requests, concurrency=self.concurrency,
                          max_tokens=self.max_tokens, timeout_s=self.timeout_s)

    def run(self, window_s: float, *, clock: Callable[[], float] = time.monotonic,
            after_round: Callable[[list[ProbeRound], list[ProbeRound], str], bool] | None = None
            ) -> tuple[list[ProbeRound], list[ProbeRound], str]:
        if self.warmup:
            # A fresh canary serves its first requests from cold caches (and on CPU, first-shape kernel
            # compiles for every batch size it meets) while the stable one is warm: unrecorded full rounds
            # (two on the canary, one on the stable) keep that out of the verdict. One round of `concurrency`
            # requests was not enough: a CI run's first recorded canary round still ran 4.6x the stable's.
            for url in (self.canary_url, self.canary_url, self.stable_url):
                if url is not None:
                    self._round(url, "warmup", self.requests)
        started = clock()  # the window measures: warm-up rounds do not use it up
        deadline = started + window_s
        canary_rounds: list[ProbeRound] = []
        stable_rounds: list[ProbeRound] = []
        index = consecutive_errors = 0
        error_limit = ""
        while True:
            order = [("stable", self.stable_url), ("canary", self.canary_url)]
            if index % 2:
                order.reverse()
            unmeasured = False
            for target, url in order:
                if url is None:
                    continue
                self.sleep(self.pause_s)
                result = self._round(url, target, self.requests)
                (canary_rounds if target == "canary" else stable_rounds).append(result)
                unmeasured = unmeasured or bool(result.measurement_error)
            index += 1
            consecutive_errors = consecutive_errors + 1 if unmeasured else 0
            if consecutive_errors >= self.max_consecutive_errors:
                error_limit = (f"{consecutive_errors} probe rounds in a row got no response "
                               f"(limit max_consecutive_errors={self.max_consecutive_errors})")
            log.info("probe round %d: canary p95 %s s, stable p95 %s s", index, canary_rounds[-1].p95_e2e_s,
                     stable_rounds[-1].p95_e2e_s if stable_rounds else None)
            if after_round is not None and after_round(canary_rounds, stable_rounds, error_limit):
                break
            if error_limit:
                break
            if index >= self.min_rounds and clock() >= deadline:
                break
            # another full round must still fit into the window; otherwise stop at the minimum
            per_round = (clock() - started) / index
            if index >= self.min_rounds and clock() + per_round > deadline:
                break
        return canary_rounds, stable_rounds, error_limit
