"""Golden-prompt expectations: substring, regex or JSON schema over a greedy completion. Pure."""

from __future__ import annotations

import json
import re
from typing import Any

from llmops.canary.verdict import GoldenOutcome


def evaluate_golden(prompt: str, output: str | None, *, expect_substring: str | None = None,
                    expect_regex: str | None = None, expect_json_schema: dict[str, Any] | None = None,
                    error: str | None = None) -> GoldenOutcome:
    """Check one completion against every expectation set for it; the first failure is the reason."""
    if error is not None or output is None:
        return GoldenOutcome(prompt, False, "", f"request failed: {error or 'no output'}")
    if expect_substring is not None and expect_substring not in output:
        return GoldenOutcome(prompt, False, output, f"expected substring {expect_substring!r}")
    if expect_regex is not None and not re.search(expect_regex, output):
        return GoldenOutcome(prompt, False, output, f"expected to match /{expect_regex}/")
    if expect_json_schema is not None:
        import jsonschema

        try:
            document = json.loads(output.strip())
        except ValueError as exc:
            return GoldenOutcome(prompt, False, output, f"not JSON ({exc.__class__.__name__})")
        try:
            jsonschema.validate(document, expect_json_schema)
        except jsonschema.ValidationError as exc:
            return GoldenOutcome(prompt, False, output, f"JSON schema: {exc.message}")
    return GoldenOutcome(prompt, True, output, "")
