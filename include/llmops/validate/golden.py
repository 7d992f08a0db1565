"""Refresh validation's golden set and agreement verdict: pure functions, no model, no server.

The prompts and their expectation check are `llmops.golden`'s, shared with the rollout canary. This
verdict is a different judgement from the canary's (`canary.verdict`): it compares a quantized checkpoint's
greedy token ids with the unquantized model's (agreement), where the canary judges a live deployment's
latency, errors and golden answers against thresholds; hence `ValidationVerdict` and `judge_agreement`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmops.errors import InvalidValue
from llmops.golden import GoldenPrompt, check_answer


@dataclass(frozen=True)
class GoldenSet:
    prompts: list[GoldenPrompt]
    max_new_tokens: int = 16
    min_agreement: float = 0.5

    @classmethod
    def from_dict(cls, data: dict) -> GoldenSet:
        prompts = [GoldenPrompt.model_validate(p) if isinstance(p, dict) else GoldenPrompt(prompt=str(p))
                   for p in data.get("prompts", [])]
        return cls(prompts, int(data.get("max_new_tokens", 16)), float(data.get("min_agreement", 0.5)))

    def to_dict(self) -> dict:
        return {"prompts": [p.model_dump(exclude_none=True) for p in self.prompts],
                "max_new_tokens": self.max_new_tokens, "min_agreement": self.min_agreement}

    @property
    def texts(self) -> list[str]:
        return [p.prompt for p in self.prompts]


@dataclass
class ValidationVerdict:
    passed: bool
    agreement: float
    min_agreement: float
    rows: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "agreement": self.agreement, "min_agreement": self.min_agreement,
                "compared": "greedy continuation token ids", "prompts": self.rows, "problems": self.problems}

    def summary(self) -> str:
        agreeing = sum(row["agrees"] for row in self.rows)
        lines = [f"agreement {self.agreement:.0%} (needs {self.min_agreement:.0%}; {agreeing} of {len(self.rows)} "
                 f"prompts with identical greedy token ids): {'PASS' if self.passed else 'FAIL'}"]
        for row in self.rows:
            mark = "=" if row["agrees"] else "!"
            where = "" if row["agrees"] else f" (token ids differ from token {row['first_difference']})"
            lines.append(f"  {mark} {row['prompt']!r}: reference {row['reference']!r} | quantized "
                         f"{row['quantized']!r}{where}")
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)


def expectation_problems(golden: GoldenSet, texts: list[str], whose: str = "quantized") -> list[str]:
    """The golden expectations (`llmops.golden.check_answer`) that `texts` (one per prompt) miss."""
    outcomes = [check_answer(item, text) for item, text in zip(golden.prompts, texts, strict=True)]
    return [f"{o.prompt!r}: {whose} output {o.output!r} {o.reason}" for o in outcomes if not o.passed]


def _strip_eos(ids: list[int], eos: set[int]) -> list[int]:
    ids = list(ids)
    while ids and ids[-1] in eos:
        ids.pop()
    return ids


def _first_difference(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def judge_agreement(golden: GoldenSet, reference: list[dict], quantized: list[dict], *,
                    eos_token_ids=()) -> ValidationVerdict:
    """Agreement = share of prompts whose greedy continuation has the same token ids as the original model's.

    Each generation is {"token_ids": [...], "text": "..."}. Token ids, not decoded text: two runtimes render
    a continuation that ends inside a multi-byte character differently (U+FFFD or nothing), while the ids
    are the model's actual choice. Trailing end-of-sequence ids are ignored (one runtime returns them, the
    other may not). Expectations in the registry (`llmops.golden`) must hold on the quantized
    text too. An empty golden set cannot show anything: it fails rather than passing vacuously.
    """
    if len(reference) != len(golden.prompts) or len(quantized) != len(golden.prompts):
        raise InvalidValue(f"{len(golden.prompts)} golden prompts but {len(reference)} reference and "
                         f"{len(quantized)} quantized completions", fix="generate once per prompt")
    eos = set(eos_token_ids)
    rows, problems = [], expectation_problems(golden, [g["text"] for g in quantized])
    for item, ref, got in zip(golden.prompts, reference, quantized, strict=True):
        ref_ids, got_ids = _strip_eos(ref["token_ids"], eos), _strip_eos(got["token_ids"], eos)
        agrees = ref_ids == got_ids
        rows.append({"prompt": item.prompt, "reference": ref["text"], "quantized": got["text"], "agrees": agrees,
                     "reference_token_ids": ref_ids, "quantized_token_ids": got_ids,
                     "first_difference": None if agrees else _first_difference(ref_ids, got_ids)})
    if not rows:
        problems.append("no golden prompts; fix: add validation.golden_prompts to the model in models.yaml")
    agreement = sum(r["agrees"] for r in rows) / len(rows) if rows else 0.0
    passed = bool(rows) and agreement >= golden.min_agreement and not problems
    return ValidationVerdict(passed, round(agreement, 4), golden.min_agreement, rows, problems)
