"""Errors of the serving runtimes."""

from __future__ import annotations

from llmops.errors import LlmopsError


class LocalRuntimeError(LlmopsError):
    """A local vLLM server could not be started, became unhealthy, or is not ready in time."""


class ReadyTimeout(LlmopsError):
    """A server did not become ready within its limit. Transient the first time (`ReadyLimit.expired`)."""
