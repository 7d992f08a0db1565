"""The golden set and the verdict: pure functions, no model, no server."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GoldenPrompt:
    prompt: str
    expect_substring: str | None = None
    expect_regex: str | None = None


@dataclass(frozen=True)
class GoldenSet:
    prompts: list[GoldenPrompt]
    max_new_tokens: int = 16
    min_agreement: float = 0.5

    @classmethod
    def from_dict(cls, data: dict) -> GoldenSet:
        prompts = [GoldenPrompt(**p) if isinstance(p, dict) else GoldenPrompt(str(p)) for p in data.get("prompts", [])]
        return cls(prompts, int(data.get("max_new_tokens", 16)), float(data.get("min_agreement", 0.5)))

    def to_dict(self) -> dict:
        return {"prompts": [p.__dict__ for p in self.prompts], "max_new_tokens": self.max_new_tokens,
                "min_agreement": self.min_agreement}

    @property
    def texts(self) -> list[str]:
        return [p.prompt for p in self.prompts]


@dataclass
class Verdict:
    passed: bool
    agreement: float
    min_agreement: float
    rows: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "agreement": self.agreement, "min_agreement": self.min_agreement,
                "prompts": self.rows, "problems": self.problems}

    def summary(self) -> str:
        lines = [f"agreement {self.agreement:.0%} (needs {self.min_agreement:.0%}): "
                 f"{'PASS' if self.passed else 'FAIL'}"]
        for row in self.rows:
            mark = "=" if row["agrees"] else "!"
            lines.append(f"  {mark} {row['prompt']!r}: reference {row['reference']!r} | quantized {row['quantized']!r}")
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)


def _normal(text: str) -> str:
    return " ".join(text.split())


def judge(golden: GoldenSet, reference: list[str], quantized: list[str]) -> Verdict:
    """Agreement = share of prompts whose greedy completion equals the original model's (whitespace-normalised).

    Expectations in the registry (expect_substring / expect_regex) must hold on the quantized output too.
    An empty golden set cannot show anything: it fails rather than passing vacuously.
    """
    if len(reference) != len(golden.prompts) or len(quantized) != len(golden.prompts):
        raise ValueError(f"{len(golden.prompts)} golden prompts but {len(reference)} reference and "
                         f"{len(quantized)} quantized completions; fix: generate once per prompt")
    rows, problems = [], []
    for item, ref, got in zip(golden.prompts, reference, quantized, strict=True):
        agrees = _normal(ref) == _normal(got)
        rows.append({"prompt": item.prompt, "reference": ref, "quantized": got, "agrees": agrees})
        if item.expect_substring is not None and item.expect_substring not in got:
            problems.append(f"{item.prompt!r}: quantized output {got!r} lacks {item.expect_substring!r}")
        if item.expect_regex is not None and not re.search(item.expect_regex, got):
            problems.append(f"{item.prompt!r}: quantized output {got!r} does not match /{item.expect_regex}/")
    if not rows:
        problems.append("no golden prompts; fix: add validation.golden_prompts to the model in models.yaml")
    agreement = sum(r["agrees"] for r in rows) / len(rows) if rows else 0.0
    passed = bool(rows) and agreement >= golden.min_agreement and not problems
    return Verdict(passed, round(agreement, 4), golden.min_agreement, rows, problems)
