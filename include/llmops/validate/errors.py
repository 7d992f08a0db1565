"""Errors of the validate step; each message names the input, the rule and the fix."""

from __future__ import annotations

from llmops.errors import LlmopsError


class ValidationFailed(LlmopsError):
    """A quantized checkpoint loaded but its answers disagree with the original model too often."""
