"""The human gate of a rollout: what the approver is asked, and what an answer (or no answer) decides.

The plan (`llmops.rollout.plan`) decides where a rollout waits (`await_approval` after a gated step's passed
analysis); the driver records the wait in the rollout record and returns `AwaitingApproval` with the
`ApprovalRequest` built here; whoever runs the driver asks a person (the Airflow operator through Airflow's
human-in-the-loop request: subject, body, options, the default taken on timeout) and resumes the driver with
an answer event:

    {"approval": {"choice": "Approve" | "Reject" | None, "by": "<user name>" | None, "timed_out": bool}}

`observe` turns that answer into the plan's observation, naming who or what decided.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmops.config.schema import ApprovalSpec
from llmops.rollout.plan import Observation
from llmops.rollout.report import StepReport

APPROVE, REJECT = "Approve", "Reject"
OPTIONS: tuple[str, ...] = (APPROVE, REJECT)


@dataclass(frozen=True)
class ApprovalRequest:
    """What a person is asked at a gate; `default` is the option an unanswered request takes at `timeout_s`."""

    subject: str
    body: str
    options: tuple[str, ...]
    default: str
    timeout_s: float


def default_option(spec: ApprovalSpec) -> str:
    return APPROVE if spec.on_timeout == "approve" else REJECT


def approval_request(*, deployment: str, model: str, run_id: str, canary_version: str, step: StepReport,
                     next_step: str, report_link: str, spec: ApprovalSpec, timeout_s: float) -> ApprovalRequest:
    """The subject and Markdown body shown to the approver: the step's verdict and a link to its report."""
    default = default_option(spec)
    subject = f"Approve the rollout of {model} to {deployment} after {step.canary_percent} %?"
    lines = [
        f"The canary analysis at **{step.canary_percent} %** of traffic **passed**: {step.verdict.summary}",
        "",
        f"- canary version: `{canary_version}`",
        f"- run: `{run_id}`",
        f"- report so far: {report_link or 'not stored'}",
        f"- **{APPROVE}**: {next_step}",
        f"- **{REJECT}**: roll back (canary removed, weights restored, stable untouched)",
        f"- no answer within {timeout_s:.0f} s: **{default}** (on_timeout: {spec.on_timeout})",
        "",
        "The canary keeps serving its share of traffic while this waits.",
    ]
    return ApprovalRequest(subject, "\n".join(lines), OPTIONS, default, timeout_s)


def next_step_text(steps: tuple[int, ...], step_index: int) -> str:
    """What approving does: the next traffic step, or the promotion."""
    if step_index + 1 < len(steps):
        return f"go on to {steps[step_index + 1]} % canary traffic"
    return "promote the canary to stable"


def observe(event: dict, spec: ApprovalSpec, *, at: float) -> Observation:
    """The plan's observation for an answer event (shape in the module doc). A timed-out request decides what
    `spec.on_timeout` says; a choice that is neither option rejects (the safe side)."""
    answer = event.get("approval") or {}
    choice, by, timed_out = answer.get("choice"), answer.get("by"), bool(answer.get("timed_out"))
    if timed_out:
        approved = spec.on_timeout == "approve"
        what = "approved" if approved else "rejected"
        return Observation("approved" if approved else "rejected", at,
                           f"{what}: no answer within {spec.timeout_s} s (on_timeout: {spec.on_timeout})")
    who = f"by {by}" if by else "by an unnamed user"
    if choice == APPROVE:
        return Observation("approved", at, f"approved {who}")
    if choice == REJECT:
        return Observation("rejected", at, f"rejected {who}")
    return Observation("rejected", at, f"rejected: the answer {choice!r} is neither {APPROVE} nor {REJECT} ({who})")
