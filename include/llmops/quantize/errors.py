"""Errors of the quantize step; each message names the input, the rule and the fix."""

from __future__ import annotations

from llmops.errors import LlmopsError


class QuantizeError(LlmopsError):
    """A quantization recipe could not produce a checkpoint."""


class RecipeUnavailable(QuantizeError):
    """The recipe cannot run here (no GPU, missing tool); nothing was written."""
