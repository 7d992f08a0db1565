"""Typed errors. Every message names the input, the rule it broke and the fix.

Permanent or transient: an `LlmopsError` is permanent unless its class (or the instance) says
`transient = True`. Permanent means "the same call with the same input fails the same way": bad
registry or Params, a weight-policy refusal, a checksum mismatch, an unknown repo or revision, a
conflicting publish. Retrying only repeats the error minutes later, so a job exits with
`llmops.jobs._cli.EXIT_PERMANENT` and the step factory fails the task without retries. Transient
errors (a server that cannot be reached, a 5xx, a lock held by another run) and every exception that
is not an `LlmopsError` (a raw network or SDK error) are retried.
"""

from __future__ import annotations


class LlmopsError(Exception):
    """Base class for errors a user can act on. Permanent unless `transient` is true."""

    transient: bool = False


class TransientError(LlmopsError):
    """The same call may succeed later without any change: a server down or busy, a 5xx, a lock held."""

    transient = True


def is_permanent(exc: BaseException) -> bool:
    """True for errors that a retry with the same input cannot fix (see the module docstring)."""
    return isinstance(exc, LlmopsError) and not exc.transient


class ConfigError(LlmopsError):
    """A registry file (include/config/*.yaml) or a run parameter is invalid."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]):
        self.source = source
        self.problems = problems  # (key path, what is wrong, how to fix it)
        lines = [f"{source}: {len(problems)} problem(s)"]
        for key, what, fix in problems:
            lines.append(f"  - {key or '<top level>'}: {what}" + (f"\n    fix: {fix}" if fix else ""))
        super().__init__("\n".join(lines))
