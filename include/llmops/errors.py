"""Typed errors. Every message names the input, the rule it broke and the fix."""

from __future__ import annotations


class LlmopsError(Exception):
    """Base class for errors a user can act on."""


class ConfigError(LlmopsError):
    """A registry file (include/config/*.yaml) or a run parameter is invalid."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]):
        self.source = source
        self.problems = problems  # (key path, what is wrong, how to fix it)
        lines = [f"{source}: {len(problems)} problem(s)"]
        for key, what, fix in problems:
            lines.append(f"  - {key or '<top level>'}: {what}" + (f"\n    fix: {fix}" if fix else ""))
        super().__init__("\n".join(lines))
