"""Ready limits (llmops.serving.ready): settings with defaults, an expired wait transient once with a doubled limit,
then permanent, each message naming the setting; the exit status the step factory reads follows from it."""

from __future__ import annotations

import logging

import pytest

from llmops.errors import SettingsError, is_permanent
from llmops.jobs._cli import EXIT_PERMANENT, EXIT_TRANSIENT, fail
from llmops.serving.ready import ReadyLimit, ReadyTimeout, wait_until_ready
from llmops.settings import get_settings


def test_the_limits_are_settings_with_documented_defaults(monkeypatch):
    monkeypatch.delenv("LLMOPS_VLLM_READY_TIMEOUT_S", raising=False)
    monkeypatch.delenv("LLMOPS_TRTLLM_READY_TIMEOUT_S", raising=False)
    assert (get_settings().vllm_ready_timeout_s, get_settings().trtllm_ready_timeout_s) == (900.0, 1800.0)
    get_settings.cache_clear()
    monkeypatch.setenv("LLMOPS_VLLM_READY_TIMEOUT_S", "1200")
    assert ReadyLimit.vllm().seconds == 1200.0 and ReadyLimit.vllm().setting == "LLMOPS_VLLM_READY_TIMEOUT_S"


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan", "inf"])
def test_a_limit_that_is_not_a_number_of_seconds_is_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("LLMOPS_TRTLLM_READY_TIMEOUT_S", value)
    with pytest.raises(SettingsError, match="LLMOPS_TRTLLM_READY_TIMEOUT_S=.* is not a number of seconds"):
        get_settings()


def test_a_first_expiry_is_transient_and_the_next_try_waits_twice_as_long(tmp_path, caplog):
    marker = tmp_path / "work" / "ready-timeout-expired.json"
    limit = ReadyLimit("LLMOPS_VLLM_READY_TIMEOUT_S", 0.2, marker)
    with pytest.raises(ReadyTimeout) as first:
        wait_until_ready(lambda: (False, "loading"), limit, "vLLM on /ckpt", poll_s=0.05)
    assert not is_permanent(first.value) and marker.is_file()
    assert "vLLM on /ckpt was not ready within" in str(first.value)
    assert "(LLMOPS_VLLM_READY_TIMEOUT_S=0)" in first.value.what
    assert "the next try waits" in first.value.fix and "raise LLMOPS_VLLM_READY_TIMEOUT_S" in first.value.fix
    assert fail(first.value, logging.getLogger("t")) == EXIT_TRANSIENT  # the step factory retries it

    retry = ReadyLimit("LLMOPS_VLLM_READY_TIMEOUT_S", 0.2, marker)  # the next try: a new process, same work dir
    assert retry.retried and retry.limit == pytest.approx(0.4)
    with pytest.raises(ReadyTimeout) as second:
        wait_until_ready(lambda: (False, "loading"), retry, "vLLM on /ckpt", poll_s=0.05)
    assert is_permanent(second.value) and "twice the limit" in str(second.value)
    assert "raise LLMOPS_VLLM_READY_TIMEOUT_S" in second.value.fix
    assert fail(second.value, logging.getLogger("t")) == EXIT_PERMANENT


def test_a_wait_that_ends_in_time_forgets_an_earlier_expiry(tmp_path):
    marker = tmp_path / "ready-timeout-expired.json"
    marker.write_text("{}")
    calls = iter([(False, ""), (True, "")])
    waited = wait_until_ready(lambda: next(calls), ReadyLimit("S", 5, marker), "x", poll_s=0.01)
    assert waited < 5 and not marker.exists()


def test_without_a_marker_the_second_longer_wait_happens_in_process(caplog):
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        return calls["n"] > 6, "starting"

    caplog.set_level(logging.WARNING)
    wait_until_ready(check, ReadyLimit("LLMOPS_VLLM_READY_TIMEOUT_S", 0.15), "stable", poll_s=0.05)
    assert "waiting once more" in caplog.text and "LLMOPS_VLLM_READY_TIMEOUT_S" in caplog.text
    with pytest.raises(ReadyTimeout, match="twice the limit") as caught:
        wait_until_ready(lambda: (False, ""), ReadyLimit("LLMOPS_VLLM_READY_TIMEOUT_S", 0.1), "stable", poll_s=0.02)
    assert is_permanent(caught.value)


def test_a_check_that_knows_waiting_is_pointless_ends_the_wait_at_once():
    def dead():
        raise RuntimeError("vLLM exited with 1")

    with pytest.raises(RuntimeError, match="exited"):
        wait_until_ready(dead, ReadyLimit("S", 60), "x")
