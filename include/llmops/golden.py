"""Golden prompts: the registry entry, the check of its expectations, and the outcome. Pure.

One type and one check serve both pipelines that ask a model golden questions:
- refresh validation (`llmops.validate.golden`): the quantized model's greedy answers must meet the
  expectations (and agree with the unquantized model's, which `validate.golden.judge` decides);
- the rollout canary (`llmops.canary.probes` -> `canary.verdict`): the canary's answers must meet them.

Expectations: a substring, a regular expression, a JSON schema the answer must parse into; all that are
set must hold. `jsonschema` is imported only when a prompt has a schema (the worker environment lacks it).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmops.errors import InvalidValue

#: completion length of a rollout golden prompt that sets no `max_tokens`
ROLLOUT_MAX_TOKENS = 8


class GoldenPrompt(BaseModel):
    """A prompt answered greedily, with optional expectations on the answer."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    prompt: str = Field(min_length=1)
    expect_substring: str | None = None
    expect_regex: str | None = None
    expect_json_schema: dict | None = Field(default=None, description="the completion must parse as JSON matching it")
    max_tokens: int | None = Field(
        default=None, ge=1, le=512,
        description=f"rollouts only: tokens to generate for this prompt (default {ROLLOUT_MAX_TOKENS}); refresh "
                    "validation generates validation.max_new_tokens for every prompt")

    @field_validator("expect_regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise InvalidValue(f"is not a valid regular expression ({exc})", fix="escape it") from exc
        return value

    @property
    def has_expectation(self) -> bool:
        return bool(self.expect_substring or self.expect_regex or self.expect_json_schema)


@dataclass(frozen=True)
class GoldenOutcome:
    """One golden prompt's answer and whether it met the expectations (`reason`: the first one it missed)."""

    prompt: str
    passed: bool
    output: str = ""
    reason: str = ""


def check_answer(golden: GoldenPrompt, output: str | None, *, error: str | None = None) -> GoldenOutcome:
    """Check one answer against every expectation set on `golden`; the first one missed is the reason."""
    if error is not None or output is None:
        return GoldenOutcome(golden.prompt, False, "", f"request failed: {error or 'no output'}")
    if golden.expect_substring is not None and golden.expect_substring not in output:
        return GoldenOutcome(golden.prompt, False, output, f"lacks {golden.expect_substring!r}")
    if golden.expect_regex is not None and not re.search(golden.expect_regex, output):
        return GoldenOutcome(golden.prompt, False, output, f"does not match /{golden.expect_regex}/")
    if golden.expect_json_schema is not None:
        import jsonschema

        try:
            document = json.loads(output.strip())
        except ValueError as exc:
            return GoldenOutcome(golden.prompt, False, output, f"is not JSON ({exc.__class__.__name__})")
        try:
            jsonschema.validate(document, golden.expect_json_schema)
        except jsonschema.ValidationError as exc:
            return GoldenOutcome(golden.prompt, False, output, f"does not match the JSON schema: {exc.message}")
    return GoldenOutcome(golden.prompt, True, output, "")
