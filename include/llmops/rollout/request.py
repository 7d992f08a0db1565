"""A model_rollout request: the trigger form's values, validated against the registry before anything runs."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmops.canary.verdict import Thresholds
from llmops.config.loader import Registry
from llmops.config.schema import (
    NAME_RE,
    TRTLLM_CONFIG_FLAGS,
    ApprovalSpec,
    Deployment,
    RolloutThresholds,
    TrafficSteps,
    TrafficStrategy,
)
from llmops.config.schema import check_gate as _check_gate
from llmops.errors import ConfigError, InvalidValue, shorten, validation_problem
from llmops.rollout.canary_args import check_canary_args

#: the trigger form's traffic choice: the deployment's own strategy, or one of the strategies for this run
TrafficChoice = Literal["deployment-default", TrafficStrategy]
TRAFFIC_CHOICES: tuple[str, ...] = get_args(TrafficChoice)

_FORM_FIX = "see the trigger form's description"
_FIXES = {
    "finite_number": "enter a finite number (NaN and infinity are not allowed)",
    "string_pattern_mismatch": "use a name from deployments.yaml / models.yaml (lowercase letters, digits, '-'), "
                               "or a version without spaces",
    "string_too_long": "use a name from deployments.yaml / models.yaml",
}


class RolloutRequest(BaseModel):
    # NaN and infinities are refused as such ("finite number"), not by a misleading range check.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str | None = Field(default=None, min_length=1, max_length=52, pattern=NAME_RE,
                              description="optional: the deployment fixes the model; if given it must match")
    version: str = Field(default="latest", min_length=1, max_length=1024, pattern=r"^\S+$",
                         description="a manifest URI, 'latest', or 'previous' (roll back to the recorded previous version)")
    deployment: str = Field(min_length=1, max_length=52, pattern=NAME_RE)
    traffic_strategy: TrafficChoice = TRAFFIC_CHOICES[0]
    steps: TrafficSteps | None = None
    thresholds: RolloutThresholds | None = Field(
        default=None, description="only the thresholds given override the deployment's (model_fields_set)")
    analysis_window_s: int | None = Field(default=None, ge=5, le=86400)
    canary_extra_args: list[str] | None = Field(
        default=None, description="extra server arguments (vLLM or trtllm-serve flags) for the canary only (after the "
                     "deployment's extra_args)")
    approval: ApprovalSpec | None = Field(
        default=None, description="a human gate for this run; only the keys given override the deployment's")
    dry_run: bool = False

    @field_validator("canary_extra_args")
    @classmethod
    def _printable_args(cls, value: list[str] | None) -> list[str] | None:
        for arg in value or []:
            if not arg or not arg.isprintable():
                raise InvalidValue(f"{shorten(arg)} is empty or holds a control character",
                                 fix="write each vLLM argument as its own list entry, e.g. --max-num-seqs, 64")
        return value

    @classmethod
    def from_params(cls, params: dict) -> RolloutRequest:
        """Parse the DAG's Params (None / empty values fall back to the deployment's rollout defaults)."""
        data = {k: v for k, v in params.items() if v not in (None, "", [])}
        thresholds = {k: v for k, v in (data.pop("thresholds", None) or {}).items() if v is not None}
        if thresholds:
            data["thresholds"] = thresholds
        approval = {k: v for k, v in (data.pop("approval", None) or {}).items() if v is not None}
        if approval:
            data["approval"] = approval
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = [(".".join(map(str, e["loc"])), *validation_problem(e)) for e in exc.errors()]
            raise ConfigError("model_rollout params", [
                (key, what, fix or _FIXES.get(e["type"], _FORM_FIX))
                for (key, what, fix), e in zip(problems, exc.errors(), strict=True)]) from None


class ResolvedRollout(BaseModel):
    """The request merged with the deployment's defaults: what the run actually does."""

    model_config = ConfigDict(frozen=True)

    request: RolloutRequest
    deployment: Deployment
    steps: list[int]
    window_s: int
    thresholds: Thresholds
    approval: ApprovalSpec = ApprovalSpec()

    def summary(self) -> str:
        """One line for the log: what this run does, and which values came from the trigger."""
        given = {k for k, v in self.request.model_dump().items() if v not in (None, [], {})}
        t = self.thresholds

        def source(key: str) -> str:
            return "form" if key in given else "deployments.yaml"

        return (f"{self.deployment.name} <- {self.request.version}; steps {self.steps} ({source('steps')}); "
                f"window {self.window_s} s ({source('analysis_window_s')}); thresholds p95 ratio "
                f"{t.max_p95_latency_ratio:g}, error rate {t.max_error_rate:g}, golden pass rate "
                f"{t.min_golden_pass_rate:g} ({source('thresholds')}); approval {self.approval_summary} "
                f"({source('approval')}); canary extra args {self.request.canary_extra_args or []}")

    @property
    def approval_summary(self) -> str:
        a = self.approval
        if not a.after_steps:
            return "none"
        return f"after {a.after_steps[0]} %, {a.on_timeout} after {a.timeout_s} s without an answer"

    @property
    def probe_concurrency(self) -> int:
        """The probe reaches at least the concurrency the deployment expects, or queueing stays invisible."""
        return max(self.deployment.rollout.probe.concurrency, self.deployment.expected_concurrency)


def resolve_request(request: RolloutRequest, registry: Registry) -> ResolvedRollout:
    deployment = registry.deployment(request.deployment)  # ConfigError names the known ones
    if request.model is not None and deployment.model != request.model:
        raise ConfigError("model_rollout params", [(
            "model", f"deployment {deployment.name!r} serves model {deployment.model!r}, not {shorten(request.model)}",
            f"set model to {deployment.model!r} or pick a deployment of {request.model!r}")])
    config_flags = [a for a in request.canary_extra_args or [] if a.split("=", 1)[0] in TRTLLM_CONFIG_FLAGS]
    if deployment.serving_runtime == "tensorrt-llm" and config_flags:
        raise ConfigError("model_rollout params", [(
            "canary_extra_args", f"{shorten(config_flags)} would replace the LLM API options file of "
            f"{deployment.name}'s trtllm-serve (its Prometheus metrics)",
            "set the options in the deployment's llm_api_options in deployments.yaml")])
    problems = check_canary_args(list(request.canary_extra_args or []), deployment.serving_runtime)
    if problems:
        raise ConfigError("model_rollout params", [(p.check, p.what, p.fix) for p in problems])
    if request.traffic_strategy != TRAFFIC_CHOICES[0]:
        deployment = deployment.model_copy(update={
            "traffic": deployment.traffic.model_copy(update={"strategy": request.traffic_strategy})})
    spec = deployment.rollout
    given = request.thresholds
    thresholds = spec.thresholds if given is None else spec.thresholds.model_copy(
        update={name: getattr(given, name) for name in given.model_fields_set})
    steps = request.steps or list(spec.steps)
    approval = spec.approval if request.approval is None else spec.approval.model_copy(
        update={name: getattr(request.approval, name) for name in request.approval.model_fields_set})
    try:
        _check_gate(approval, steps)
    except InvalidValue as exc:
        raise ConfigError("model_rollout params", [("approval", exc.what, exc.fix)]) from None
    return ResolvedRollout(request=request, deployment=deployment, steps=steps,
                           window_s=request.analysis_window_s or spec.analysis_window_s,
                           thresholds=Thresholds.of(thresholds, spec.probe), approval=approval)
