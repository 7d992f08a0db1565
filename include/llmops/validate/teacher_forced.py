"""Teacher-forced comparison of a candidate (quantized) model with its reference: pure, no torch, no server.

The reference model wrote a continuation of each golden prompt (greedy). Both models are then asked for their
next-token distribution at every position of that continuation, given the prompt and the reference's own
tokens before it (teacher forcing), so one near-tie cannot send the candidate down another path and make every
later token "differ". Per position this module gets each model's top-k logprobs and computes

- KL(reference || candidate) in nats, a top-k approximation (below), averaged over every scored position;
- top-1 agreement where the reference is confident: the candidate's most likely token is the reference's,
  counted only at positions where the reference's top-1 logprob exceeds its top-2 by at least
  `thresholds.confidence_margin` nats. Near-ties (a random or undertrained model, an open question) are not
  counted: there the choice is a coin toss that any rounding flips, and KL already measures how close they are.

- relative KL: the mean KL divided by the reference's own information, the mean KL(reference || uniform over the
  vocabulary) (same top-k approximation, the tail spread evenly over the unlisted tokens). A near-flat model
  (random, barely trained) keeps every candidate, broken or not, within a tiny absolute KL; relative to what the
  reference knows, a broken candidate loses about all of it and a good quantization a few per cent.

The verdict passes when the mean KL is at most `max_mean_kl`, the relative KL at most `max_relative_kl` (when the
vocabulary size is given) and the confident top-1 agreement at least `min_confident_top1` (with no confident
position at all, KL alone decides and the summary says so). There must be at least one scored position.

How to feed it (any runtime):
    positions = [TeacherForcedPosition(reference={id: logprob, ...}, candidate={id: logprob, ...}), ...]
    prompt = TeacherForcedPrompt(prompt="text", token_ids=[continuation ids], positions=positions)
    result = judge_teacher_forced([prompt, ...], thresholds, vocab_size=V)  # config.recipes.ValidationThresholds
Position i holds each model's distribution over the token at continuation index i, i.e. conditioned on the
prompt ids plus continuation ids [:i]. With vLLM: a completion of prompt + continuation ids with
`prompt_logprobs=k` and `max_tokens=1`; entry len(prompt) + i of `prompt_logprobs` is position i
(`llmops.validate.vllm_server.teacher_forced_logprobs`). With transformers: one forward pass over
prompt + continuation, `torch.log_softmax(logits.float(), -1)`, and position i is row len(prompt) + i - 1,
reduced to its `torch.topk(..., k)` as {id: logprob}. Logprobs must be log-softmax of the full vocabulary
(not renormalised over the top-k), natural log. Keys may be ints or strings of ints (JSON).

Top-k approximation of KL and the tail mass. Only the top-k (k = 20 in vLLM by default) of each distribution
is known. The sum runs over the reference's top-k tokens S, plus one "tail" bucket holding everything else:
    KL ~= sum_{s in S} p(s) log(p(s) / q(s)) + p_tail log(p_tail / q_tail)
with p_tail = 1 - sum_S p and q_tail = 1 - sum_S q. Merging tokens into a bucket can only lower KL (log-sum
inequality), so with exact q this is a lower bound of the true KL that is exact when S covers the
vocabulary. A token of S missing from the candidate's top-k gets an equal share of the candidate's
unlisted mass (1 - sum of its listed probabilities), shared with the tail bucket, and never more than the
candidate's least likely listed token (it would have been listed otherwise). Every probability is floored
at PROBABILITY_FLOOR so a token one side rules out costs a large but finite KL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmops.config.recipes import ValidationThresholds
from llmops.errors import InvalidValue

#: The least probability a token is given in the KL sum (log 1e-10 = -23 nats): finite, yet decisive.
PROBABILITY_FLOOR = 1e-10


def _logprobs(values: Mapping[Any, float], what: str) -> dict[int, float]:
    if not values:
        raise InvalidValue(f"{what} has no logprobs", fix="pass each model's top-k logprobs {token_id: logprob} "
                           "at every position (k >= 2)")
    out: dict[int, float] = {}
    for key, value in values.items():
        try:
            token, logprob = int(key), float(value)
        except (TypeError, ValueError):
            raise InvalidValue(f"{what} has the entry {key!r}: {value!r}", fix="keys are token ids, values "
                               "natural-log probabilities") from None
        if math.isnan(logprob) or logprob > 1e-3:
            raise InvalidValue(f"{what}: token {token} has logprob {logprob}, not a log-probability (<= 0)",
                               fix="pass log_softmax values, not logits or probabilities")
        out[token] = min(logprob, 0.0)
    return out


@dataclass(frozen=True)
class TeacherForcedPosition:
    """Both models' top-k logprobs {token_id: logprob} for one token of the reference continuation."""

    reference: Mapping[Any, float]
    candidate: Mapping[Any, float]


@dataclass(frozen=True)
class TeacherForcedPrompt:
    """One golden prompt: the reference continuation's token ids and, per token, both models' top-k."""

    prompt: str
    token_ids: Sequence[int]
    positions: Sequence[TeacherForcedPosition]


def _probability(logprob: float) -> float:
    return max(math.exp(logprob), PROBABILITY_FLOOR)


def position_kl(reference: Mapping[int, float], candidate: Mapping[int, float]) -> float:
    """KL(reference || candidate) in nats over the reference's top-k plus a tail bucket (module docstring)."""
    p = {token: math.exp(lp) for token, lp in reference.items()}
    listed = {token: math.exp(lp) for token, lp in candidate.items()}
    missing = [token for token in p if token not in listed]
    q = {token: listed[token] for token in p if token in listed}
    if missing:
        unlisted = max(0.0, 1.0 - sum(listed.values()))
        share = min(unlisted / (len(missing) + 1), min(listed.values()))
        q.update(dict.fromkeys(missing, share))
    kl = sum(pt * math.log(pt / max(q[token], PROBABILITY_FLOOR)) for token, pt in p.items() if pt > 0)
    p_tail = 1.0 - sum(p.values())
    if p_tail > PROBABILITY_FLOOR:
        kl += p_tail * math.log(p_tail / max(1.0 - sum(q.values()), PROBABILITY_FLOOR))
    return max(kl, 0.0)  # rounding of the listed masses can make a near-identical pair a hair negative


def position_information(reference: Mapping[int, float], vocab_size: int) -> float:
    """KL(reference || uniform over `vocab_size` tokens) in nats: the reference's top-k, the rest of its mass spread
    evenly over the unlisted tokens (a lower bound, like `position_kl`)."""
    kl = sum(math.exp(lp) * (lp + math.log(vocab_size)) for lp in reference.values())
    tail, unlisted = 1.0 - sum(math.exp(lp) for lp in reference.values()), vocab_size - len(reference)
    if tail > PROBABILITY_FLOOR and unlisted > 0:
        kl += tail * math.log(tail * vocab_size / unlisted)
    return max(kl, 0.0)


def _top2(logprobs: Mapping[int, float]) -> tuple[int, float]:
    """(top-1 token, log p(top-1) - log p(top-2)); the margin is infinite with a single listed token."""
    ranked = sorted(logprobs.items(), key=lambda item: (-item[1], item[0]))
    margin = ranked[0][1] - ranked[1][1] if len(ranked) > 1 else math.inf
    return ranked[0][0], margin


@dataclass
class TeacherForcedResult:
    """The verdict and its numbers; `prompts` has one row per golden prompt."""

    passed: bool
    mean_kl: float
    max_kl: float
    positions: int
    confident_positions: int
    confident_agreeing: int
    thresholds: ValidationThresholds
    relative_kl: float | None = None
    """mean KL / mean KL(reference || uniform); None without the vocabulary size."""
    prompts: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def confident_top1(self) -> float | None:
        """Share of confident positions where the candidate's top-1 is the reference's; None without any."""
        return self.confident_agreeing / self.confident_positions if self.confident_positions else None

    def to_dict(self) -> dict:
        return {"passed": self.passed, "compared": "teacher-forced: the reference continuation scored by both models",
                "mean_kl": round(self.mean_kl, 6), "max_kl": round(self.max_kl, 6), "positions": self.positions,
                "relative_kl": None if self.relative_kl is None else round(self.relative_kl, 4),
                "confident_positions": self.confident_positions, "confident_agreeing": self.confident_agreeing,
                "confident_top1": None if self.confident_top1 is None else round(self.confident_top1, 4),
                "thresholds": dict(self.thresholds.__dict__), "prompts": self.prompts, "problems": self.problems}

    def summary(self) -> str:
        t = self.thresholds
        top1 = ("no position where the reference is confident (top-1 margin >= "
                f"{t.confidence_margin:g} nats): KL alone decides" if self.confident_top1 is None else
                f"confident top-1 agreement {self.confident_top1:.0%} ({self.confident_agreeing} of "
                f"{self.confident_positions} positions with a reference margin >= {t.confidence_margin:g} nats; "
                f"needs {t.min_confident_top1:.0%})")
        relative = ("" if self.relative_kl is None else f", {self.relative_kl:.1%} of the reference's information "
                    f"(at most {t.max_relative_kl:.1%})")
        lines = [f"teacher-forced over {self.positions} tokens: mean KL {self.mean_kl:.5f} nats (at most "
                 f"{t.max_mean_kl:g}){relative}, max {self.max_kl:.4f}; {top1}: {'PASS' if self.passed else 'FAIL'}"]
        for row in self.prompts:
            agreement = (f"top-1 {row['confident_agreeing']}/{row['confident_positions']} confident"
                         if row["confident_positions"] else "no confident position")
            lines.append(f"  {row['prompt']!r}: {row['positions']} tokens, mean KL {row['mean_kl']:.4f}, "
                         f"max {row['max_kl']:.4f} at token {row['max_kl_at']}, {agreement}")
        lines.extend(f"  problem: {p}" for p in self.problems)
        return "\n".join(lines)


def judge_teacher_forced(prompts: Sequence[TeacherForcedPrompt], thresholds: ValidationThresholds, *,
                         vocab_size: int | None = None) -> TeacherForcedResult:
    """The verdict on a candidate from both models' top-k logprobs along the reference's continuations.
    `vocab_size` (the model's, e.g. config.json's vocab_size) enables the relative KL check."""
    kls: list[float] = []
    information = 0.0
    confident = agreeing = 0
    rows, problems = [], []
    for item in prompts:
        if len(item.positions) != len(item.token_ids):
            raise InvalidValue(f"golden prompt {item.prompt!r}: {len(item.token_ids)} continuation tokens but "
                               f"{len(item.positions)} positions of logprobs", fix="pass one position per token "
                               "of the reference continuation (module docstring: how to feed it)")
        prompt_kls, prompt_confident, prompt_agreeing = [], 0, 0
        for index, position in enumerate(item.positions):
            where = f"golden prompt {item.prompt!r} token {index}"
            reference = _logprobs(position.reference, f"{where}: the reference")
            candidate = _logprobs(position.candidate, f"{where}: the candidate")
            prompt_kls.append(position_kl(reference, candidate))
            if vocab_size:
                information += position_information(reference, vocab_size)
            top, margin = _top2(reference)
            if margin >= thresholds.confidence_margin:
                prompt_confident += 1
                prompt_agreeing += _top2(candidate)[0] == top
        kls.extend(prompt_kls)
        confident += prompt_confident
        agreeing += prompt_agreeing
        worst = max(range(len(prompt_kls)), key=prompt_kls.__getitem__) if prompt_kls else None
        rows.append({"prompt": item.prompt, "positions": len(prompt_kls),
                     "mean_kl": round(sum(prompt_kls) / len(prompt_kls), 6) if prompt_kls else 0.0,
                     "max_kl": round(max(prompt_kls), 6) if prompt_kls else 0.0, "max_kl_at": worst,
                     "confident_positions": prompt_confident, "confident_agreeing": prompt_agreeing})
    mean_kl = sum(kls) / len(kls) if kls else 0.0
    relative = sum(kls) / information if vocab_size and information > 0 else None
    result = TeacherForcedResult(False, mean_kl, max(kls, default=0.0), len(kls), confident, agreeing, thresholds,
                                 relative, rows, problems)
    if not kls:
        problems.append("no token was scored (no golden prompt, or only empty continuations); fix: add "
                        "validation.golden_prompts to the model in models.yaml, or raise validation.max_new_tokens")
    if mean_kl > thresholds.max_mean_kl:
        problems.append(f"mean KL {mean_kl:.4f} nats exceeds {thresholds.max_mean_kl:g}")
    if relative is not None and relative > thresholds.max_relative_kl:
        problems.append(f"the candidate loses {relative:.0%} of the reference's information (mean KL over mean "
                        f"KL(reference || uniform)), more than {thresholds.max_relative_kl:.1%}")
    if result.confident_top1 is not None and result.confident_top1 < thresholds.min_confident_top1:
        problems.append(f"confident top-1 agreement {result.confident_top1:.0%} is below "
                        f"{thresholds.min_confident_top1:.0%}")
    result.passed = not problems
    return result
