"""Errors of the rollout: a refused pre-flight, a plan misuse."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmops.errors import LlmopsError

if TYPE_CHECKING:
    from llmops.serving.port import Problem


class PreflightError(LlmopsError):
    """The rollout was refused before anything changed; lists every problem at once."""

    def __init__(self, subject: str, problems: list[Problem]):
        self.subject = subject
        self.problems = problems
        lines = [f"pre-flight refused {subject}: {len(problems)} problem(s)"]
        for p in problems:
            lines.append(f"  - {p.check}: {p.what}\n    fix: {p.fix}")
        super().__init__("\n".join(lines))
        self.fix = "; ".join(p.fix for p in problems)


class RolloutInProgressError(PreflightError):
    """Another rollout of the same deployment holds the lock."""


class InvalidTransition(LlmopsError):
    """An observation arrived that the plan cannot accept in its current phase (a bug in the driver)."""


class LostOwnership(LlmopsError):
    """Another execution of the same run wrote the record since this one read it: stop acting."""
