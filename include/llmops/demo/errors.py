"""Errors of the demo model's builder; each names the prompt or input and carries its fix."""

from __future__ import annotations

from llmops.errors import LlmopsError


class DemoModelError(LlmopsError, RuntimeError):
    """The build could not be accepted (or its inputs are wrong); the message names the prompt and the fix."""
