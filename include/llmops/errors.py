"""Typed errors. Every message names the input, the rule it broke and the fix; the fix is also data
(`LlmopsError.fix`, `InvalidValue` inside pydantic validators), so nobody splits a message to find it.
Each package keeps its own error classes in its `errors.py`; all of them are `LlmopsError`s.

Permanent or transient: an `LlmopsError` is permanent unless its class (or the instance) says
`transient = True`. Permanent means "the same call with the same input fails the same way": bad
registry or Params, a weight-policy refusal, a checksum mismatch, an unknown repo or revision, a
conflicting publish. Retrying only repeats the error minutes later, so a job exits with
`llmops.jobs._cli.EXIT_PERMANENT` and the step factory fails the task without retries. Transient
errors (a server that cannot be reached, a 5xx, a lock held by another run) and every exception that
is not an `LlmopsError` (a raw network or SDK error) are retried.
"""

from __future__ import annotations

from typing import Any

# An echoed input is cut to this many characters: a 200,000-character name must not make a 200,000-character error.
ECHO_LIMIT = 80
# Any one part of a message (key path, problem, fix) is capped too, whatever it echoes, and so is the
# number of problems listed.
PART_LIMIT = 1000
PROBLEMS_LISTED = 20


def shorten(value: Any, limit: int = ECHO_LIMIT) -> str:
    """`repr(value)` for a message, cut to `limit` characters with an ellipsis and the full length."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def _cap(text: str) -> str:
    return text if len(text) <= PART_LIMIT else f"{text[:PART_LIMIT]}… ({len(text)} characters)"


class LlmopsError(Exception):
    """Base class for errors a user can act on. Permanent unless `transient` is true.

    `fix` says what to do, as data: the message reads "<what>; fix: <fix>", and a caller that shows the two
    apart (a form, a preflight report) reads `what` and `fix` rather than splitting the message again.
    """

    transient: bool = False

    def __init__(self, message: str = "", fix: str = ""):
        self.what, self.fix = message, fix
        super().__init__(f"{message}; fix: {fix}" if fix else message)


class InvalidValue(LlmopsError, ValueError):
    """A value of a registry file, a run parameter or a setting is invalid. A ValueError too, so pydantic
    validators raise it and the loader reads its `fix` from the validation error's context."""


class TransientError(LlmopsError):
    """The same call may succeed later without any change: a server down or busy, a 5xx, a lock held."""

    transient = True


def validation_problem(item: dict) -> tuple[str, str]:
    """(what is wrong, the fix) of one pydantic validation error (`ValidationError.errors()` item): an
    `InvalidValue` raised by a validator keeps its `fix` in the error's context; pydantic's own errors have
    none (the caller supplies one by error type)."""
    error = (item.get("ctx") or {}).get("error")
    if isinstance(error, LlmopsError):
        return error.what, error.fix
    return str(item.get("msg", "")).removeprefix("Value error, "), ""


def is_permanent(exc: BaseException) -> bool:
    """True for errors that a retry with the same input cannot fix (see the module docstring)."""
    return isinstance(exc, LlmopsError) and not exc.transient


class SettingsError(LlmopsError):
    """A deployment setting (an LLMOPS_* environment variable) holds a value this project cannot use."""


class ConfigError(LlmopsError):
    """A registry file (include/config/*.yaml) or a run parameter is invalid."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]):
        self.source = source = _cap(source)
        problems = [(_cap(key), _cap(what), _cap(fix)) for key, what, fix in problems]
        self.problems = problems  # (key path, what is wrong, how to fix it)
        lines = [f"{source}: {len(problems)} problem(s)"]
        for key, what, fix in problems[:PROBLEMS_LISTED]:
            lines.append(f"  - {key or '<top level>'}: {what}" + (f"\n    fix: {fix}" if fix else ""))
        if len(problems) > PROBLEMS_LISTED:
            lines.append(f"  ... and {len(problems) - PROBLEMS_LISTED} more of the same kinds")
        super().__init__("\n".join(lines))
        self.fix = "; ".join(fix for _, _, fix in problems if fix)
