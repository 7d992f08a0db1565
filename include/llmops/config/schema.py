"""Pydantic models of the four registry files. Validators raise InvalidValue (a ValueError) carrying its `fix`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from llmops.config.recipes import RECIPES
from llmops.errors import InvalidValue, shorten
from llmops.golden import GoldenPrompt
from llmops.settings import DNS1123_LABEL_RE, DNS1123_SUBDOMAIN_RE, IMAGE_RE, get_settings

NAME_RE = r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$"  # usable in Kubernetes names and Milvus aliases
# The longest suffix the rollout adds to a deployment's name ("-canary" on a Service, "-rollout-lock" on a
# ConfigMap: llmops.serving.manifests.NAME_SUFFIXES) and what each kind allows: Services are DNS-1035 labels
# (a letter first, at most 63), everything else DNS-1123 subdomains or labels.
DNS1035_LABEL_RE = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# A Kubernetes resource quantity (CPU "500m", "4"; memory "512Mi", "32Gi").
QUANTITY_RE = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
# Longest context any served model has today is ~10M tokens; 2**24 leaves room and refuses typos like 10**30.
MAX_MODEL_LEN = 2**24
#: An Airflow Connection id (what Airflow itself accepts), never empty: `null` is how a registry says "none".
CONN_ID_RE = r"^[A-Za-z0-9_.-]{1,250}$"
_HTTP_URL = re.compile(r"^https?://[^\s/?#]+(?:[/?#]\S*)?$")
# A git revision as the hub takes it: a branch or tag name (git's ref rules, simplified) or a commit sha.
_REVISION = re.compile(r"^(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9_][A-Za-z0-9._/+-]{0,254}(?<![./])(?<!\.lock)$")


def check_http_url(value: str | None, what: str, example: str) -> str | None:
    """An endpoint: http(s)://host[:port][/path], nothing else (`ftp//nowhere`, `ftp://x`, a bare host)."""
    if value is not None and not _HTTP_URL.match(value):
        raise InvalidValue(f"{what} {shorten(value)} is not an http:// or https:// URL",
                           fix=f"write it as {example}, or remove it for the default")
    return value


def check_revision(value: str) -> str:
    if not _REVISION.match(value):
        raise InvalidValue(f"revision {shorten(value)} is not a branch, tag or commit sha (empty, spaces, '..', "
                           "or characters git refuses)", fix="write an existing branch or tag such as main or "
                           "v1.0, or a 40-character commit sha")
    return value


# --- vocabulary shared by the registry, the trigger form and the rollout planner ---------------------------

#: how a rollout shifts traffic: HTTPRoute weights (ACK Gateway) or the replica ratio behind one Service
TrafficStrategy = Literal["gateway-httproute", "replica-ratio"]


def check_steps(value: list[int]) -> list[int]:
    """The one rule for a rollout's traffic steps (registry, trigger form, plan)."""
    if not value or any(not 1 <= s <= 100 for s in value) or value != sorted(set(value)) or value[-1] != 100:
        raise InvalidValue(f"{shorten(value)} must be strictly increasing percentages between 1 and 100 ending at 100",
                         fix="e.g. [10, 50, 100]")
    return value


def check_gate(approval: ApprovalSpec, steps: list[int]) -> None:
    """The one rule for a gate: it waits after one of the rollout's traffic steps."""
    missing = [s for s in approval.after_steps if s not in steps]
    if missing:
        raise InvalidValue(f"approval.after_steps {missing} is not among the traffic steps {steps}",
                           fix=f"gate after one of {steps}, or change the steps")


#: canary traffic percentages per step; the trigger form's JSON schema is derived from this type
TrafficSteps = Annotated[list[Annotated[int, Field(ge=1, le=100)]], Field(min_length=1, max_length=10),
                         AfterValidator(check_steps)]


class Strict(BaseModel):
    # NaN and infinities are refused as such ("finite number"), not by a misleading range check.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- gpu_profiles.yaml -------------------------------------------------------------------------


class Toleration(Strict):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class Taint(Strict):
    key: str = Field(pattern=r"^([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
    value: str = Field(default="true", pattern=r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"

    def toleration(self) -> Toleration:
        return Toleration(key=self.key, operator="Equal", value=self.value, effect=self.effect)


class SpotPool(Strict):
    """The spot node pool of a GPU profile: its nodes carry `node_label` and `taint`, so only pods that tolerate
    the taint (work that may be interrupted) land there; everything else stays on the on-demand pool."""

    node_label: dict[str, str] = Field(min_length=1, max_length=1, description="{key: value} every spot node has")
    taint: Taint
    refresh_steps: Literal["never", "prefer", "require"] = Field(
        default="prefer",
        description="model_refresh's GPU steps (quantize, validate): prefer spot nodes and fall back to on-demand, "
                    "require spot nodes, or never use them")


class GpuProfile(Strict):
    name: str = Field(pattern=NAME_RE)
    gpu: str  # marketing name, e.g. "NVIDIA A10"
    instance_families: list[str] = []
    compute_capability: float = Field(ge=3.0, le=12.0)
    gpu_memory_gib: float = Field(gt=0)
    gpus_per_node: int = Field(ge=1, le=16)
    resource_name: Literal["nvidia.com/gpu", "aliyun.com/gpu-mem"] = "nvidia.com/gpu"
    resource_per_replica: int = Field(
        default=1, ge=1, description="GPUs per replica, or GiB when resource_name is aliyun.com/gpu-mem"
    )
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    spot: SpotPool | None = Field(
        default=None, description="a spot node pool of this profile (deploy/ack renders it); none: on-demand only")

    @property
    def shared(self) -> bool:
        return self.resource_name == "aliyun.com/gpu-mem"


# --- models.yaml -------------------------------------------------------------------------------


class ModelTarget(Strict):
    recipe: str
    gpu_profiles: list[str] = Field(min_length=1)

    @field_validator("gpu_profiles")
    @classmethod
    def _each_profile_once(cls, value: list[str]) -> list[str]:
        twice = sorted({name for name in value if value.count(name) > 1})
        if twice:
            raise InvalidValue(f"GPU profile(s) {', '.join(map(shorten, twice))} listed twice",
                               fix="list each GPU profile once")
        return value

    @field_validator("recipe")
    @classmethod
    def _known_recipe(cls, value: str) -> str:
        if value not in RECIPES:
            raise InvalidValue(
                f"{shorten(value)} is not a known recipe", fix=f"use one of {', '.join(sorted(RECIPES))}"
            )
        return value

    @property
    def runtime(self) -> str:
        return RECIPES[self.recipe].runtime


class ValidationThresholdOverrides(Strict):
    """A model's own teacher-forced thresholds; each one left out keeps its recipe's (config.recipes)."""

    max_mean_kl: float | None = Field(default=None, gt=0.0, le=10.0,
                                      description="mean KL(reference || candidate) per token, nats")
    min_confident_top1: float | None = Field(default=None, ge=0.0, le=1.0,
                                             description="share of confident positions with the same top-1 token")
    max_relative_kl: float | None = Field(default=None, gt=0.0, le=10.0,
                                          description="mean KL over the reference's own information "
                                                      "(KL(reference || uniform))")
    confidence_margin: float | None = Field(default=None, ge=0.0, le=50.0,
                                            description="reference top-1 minus top-2 logprob (nats) that makes a "
                                                        "position confident")


class ModelValidation(Strict):
    golden_prompts: list[GoldenPrompt] = Field(
        min_length=1, description="required: without them a quantized checkpoint could be published unchecked")
    max_new_tokens: int = Field(default=16, ge=1, le=512)
    min_agreement: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="information only: the report says whether this share of golden prompts kept the unquantized "
                    "model's free-running greedy token ids; the verdict is teacher-forced (thresholds)",
    )
    thresholds: ValidationThresholdOverrides = Field(
        default_factory=ValidationThresholdOverrides,
        description="overrides of the recipe's teacher-forced thresholds for this model")

    @field_validator("golden_prompts")
    @classmethod
    def _one_length_for_all(cls, value: list[GoldenPrompt]) -> list[GoldenPrompt]:
        for i, prompt in enumerate(value):
            if prompt.max_tokens is not None:
                raise InvalidValue(f"golden_prompts[{i}] sets max_tokens, which only rollouts use",
                                 fix="remove it and set validation.max_new_tokens (the same for every prompt)")
        return value


class ModelSpec(Strict):
    name: str = Field(pattern=NAME_RE)
    repo_id: str
    revision: str = "main"
    endpoint: str | None = Field(default=None, description="HF_ENDPOINT-style mirror for this model")
    hf_connection_id: str | None = Field(default="huggingface_default", pattern=CONN_ID_RE)
    allow_patterns: list[str] = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]
    ignore_patterns: list[str] = []
    allow_pickle: bool = False
    trust_remote_code: bool = False
    tensor_parallel_size: int = Field(default=1, ge=1, le=16)
    max_model_len: int = Field(default=4096, ge=16, le=MAX_MODEL_LEN)
    targets: list[ModelTarget] = Field(min_length=1)
    validation: ModelValidation

    @field_validator("repo_id")
    @classmethod
    def _owner_slash_name(cls, value: str) -> str:
        if not re.match(r"^[\w.-]+/[\w.-]+$", value) or ".." in value:
            raise InvalidValue(f"repo_id {shorten(value)} is not a Hugging Face repo id",
                               fix="write it as owner/name, as on the hub's model page, e.g. Qwen/Qwen2.5-0.5B-Instruct")
        return value

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        return check_revision(value)

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return check_http_url(value, "endpoint", "https://hf-mirror.com")

    @field_validator("targets")
    @classmethod
    def _one_target_per_recipe(cls, value: list[ModelTarget]) -> list[ModelTarget]:
        # two targets of one recipe would build and publish under the same prefix (<model>/<sha>/<runtime>-<recipe>)
        recipes = [target.recipe for target in value]
        twice = sorted({recipe for recipe in recipes if recipes.count(recipe) > 1})
        if twice:
            raise InvalidValue(f"recipe(s) {', '.join(twice)} appear in more than one target: both would build "
                               "and publish under one artefact prefix",
                               fix="merge those targets into one, listing all their gpu_profiles")
        return value


# --- deployments.yaml --------------------------------------------------------------------------


class TrafficSpec(Strict):
    strategy: TrafficStrategy = "gateway-httproute"
    gateway_name: str | None = Field(default=None, pattern=DNS1123_SUBDOMAIN_RE, max_length=253)
    gateway_namespace: str | None = Field(default=None, pattern=DNS1123_LABEL_RE, max_length=63)
    hostname: str | None = Field(default=None, pattern=r"^(\*\.)?[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
                                 max_length=253)


class RolloutThresholds(Strict):
    max_p95_latency_ratio: float = Field(default=1.5, ge=1.0, le=10.0,
                                         description="canary p95 end-to-end latency / stable p95, median over rounds")
    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    min_golden_pass_rate: float = Field(default=1.0, ge=0.0, le=1.0)


class RolloutProbe(Strict):
    """The synthetic load of an analysis window. It must reach the concurrency production sees: a canary whose
    requests queue (vLLM `--max-num-seqs 1`) looks as fast as stable at concurrency 2 (median ratio 1.02)
    and shows at 8 (1.65 and more). The effective concurrency is max(concurrency, the deployment's
    expected_concurrency)."""

    requests_per_round: int = Field(default=16, ge=1, le=1000)
    concurrency: int = Field(default=8, ge=1, le=256)
    max_tokens: int = Field(default=16, ge=1, le=1024)
    pause_s: float = Field(default=0.5, ge=0.0, le=60.0, description="pause before each probe (lets the CPU settle)")
    min_rounds: int = Field(default=3, ge=1, le=100)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    max_consecutive_errors: int = Field(
        default=4, ge=1, le=100,
        description="probe rounds in a row that got no measurement at all (every request failed to connect or "
                    "timed out) before the analysis ends as an Error; fewer are retried (as Argo Rollouts does)")
    min_errors_to_stop: int = Field(
        default=5, ge=1, le=10000,
        description="canary request errors needed before an error rate over the threshold stops the analysis early")


class KeepPrevious(Strict):
    """After a promotion the replaced stable version stays warm this long (warm roll back, README "Warm roll
    back"): `version: previous` before `minutes` have passed shifts traffic back to it without a cold start.
    `replicas` pods on Kubernetes (gateway-httproute only); the local runtime keeps its one process. 0 (either)
    turns it off: the old version is stopped at promotion, as before."""

    replicas: int = Field(default=1, ge=0, le=100, description="pods of the previous version kept (0: off)")
    minutes: float = Field(default=30, ge=0, le=7 * 24 * 60, description="how long after the promotion (0: off)")

    @property
    def enabled(self) -> bool:
        return self.replicas > 0 and self.minutes > 0


OnTimeout = Literal["reject", "approve"]


class ApprovalSpec(Strict):
    """A human gate: after the analysis of a listed traffic step passed, the rollout waits for a person to
    approve (continue) or reject (roll back). The canary keeps serving at that step's weight while it waits;
    the task waits without a worker slot (Airflow's human-in-the-loop state, awaiting input)."""

    after_steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default=[], max_length=1, description=(
            "the traffic step (canary %) after whose passed analysis the rollout waits for approval; empty: no "
            "gate. At most one: Airflow keeps one human-in-the-loop request per task instance. On a first "
            "deployment (no stable: the steps collapse to [100]) a gate waits after 100"))
    timeout_s: int = Field(default=3600, ge=1, le=7 * 86400,
                           description="how long the gate waits for an answer before on_timeout applies")
    on_timeout: OnTimeout = Field(default="reject", description="what an unanswered gate decides: reject rolls "
                                                                "back, approve continues")


class RolloutSpec(Strict):
    """Defaults of a model_rollout run for this deployment; the trigger form may override them."""

    steps: TrafficSteps = [10, 50, 100]
    analysis_window_s: int = Field(default=300, ge=5, le=86400, description="analysis time per traffic step")
    readiness_timeout_s: int = Field(default=1800, ge=10, le=86400)
    lease_s: int = Field(default=300, ge=10, le=86400, description=(
        "how long a rollout task execution may go silent before another execution of the same run (a retry on "
        "another worker) takes the rollout over; renewed at every step and during analysis"))
    canary_replicas: int = Field(default=1, ge=1, le=100)
    keep_previous: KeepPrevious = KeepPrevious()
    thresholds: RolloutThresholds = RolloutThresholds()
    probe: RolloutProbe = RolloutProbe()
    golden_prompts: list[GoldenPrompt] = Field(
        min_length=1, description="required, each with an expectation: without them the canary's answers are "
                                  "never checked")
    prometheus_connection_id: str | None = Field(
        default=None, pattern=CONN_ID_RE,
        description="Airflow Connection of a Prometheus server; without it /metrics is scraped")
    approval: ApprovalSpec = ApprovalSpec()

    @model_validator(mode="after")
    def _gate_is_a_step(self) -> RolloutSpec:
        check_gate(self.approval, list(self.steps))
        return self

    @field_validator("golden_prompts")
    @classmethod
    def _each_has_an_expectation(cls, value: list[GoldenPrompt]) -> list[GoldenPrompt]:
        for i, prompt in enumerate(value):
            if not prompt.has_expectation:  # the canary has no reference answer: an expectation is the check
                raise InvalidValue(f"golden_prompts[{i}] ({shorten(prompt.prompt)}) needs an expectation",
                                 fix="set expect_substring, expect_regex or expect_json_schema")
        return value


def _letter_first(name: str) -> str:
    """A suggestion for a name that starts with a digit: its digit-led parts moved to the end (7b-chat -> chat-7b)."""
    parts = name.split("-")
    words = [p for p in parts if p[:1].isalpha()]
    return "-".join(words + [p for p in parts if not p[:1].isalpha()]) if words else f"m-{name}"


def quantity(value: str) -> float:
    """A Kubernetes quantity (validated by QUANTITY_RE) as a number of base units."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}
    number = value.rstrip("".join(set("".join(units))))
    return float(number) * units.get(value[len(number):], 1)


class ContainerResources(Strict):
    """CPU and memory of the vLLM container (GPUs come from the GPU profile). Requests and limits are always set."""

    cpu: str = Field(default="4", pattern=QUANTITY_RE, description="CPU request")
    memory: str = Field(default="32Gi", pattern=QUANTITY_RE, description="memory request")
    cpu_limit: str = Field(default="8", pattern=QUANTITY_RE)
    memory_limit: str = Field(default="32Gi", pattern=QUANTITY_RE)
    shm: str = Field(default="20Gi", pattern=QUANTITY_RE, description=(
        "size of the in-memory /dev/shm (NCCL, tensor parallel workers); it counts against memory_limit. "
        "vLLM production-stack's default"))
    ephemeral_storage: str = Field(default="20Gi", pattern=QUANTITY_RE, description=(
        "node disk the pod may use besides the model: HOME and /tmp caches (torch, Triton, CUDA graphs) and "
        "logs; requested, and the size limit of those emptyDirs"))
    model_volume: str = Field(default="200Gi", pattern=QUANTITY_RE, description=(
        "size limit of the /models emptyDir when no model-cache claim is configured (LLMOPS_MODEL_CACHE_PVC), "
        "also requested as ephemeral storage: at least the largest version this deployment serves"))

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> ContainerResources:
        for request, limit in (("cpu", "cpu_limit"), ("memory", "memory_limit")):
            if quantity(getattr(self, limit)) < quantity(getattr(self, request)):
                raise InvalidValue(f"{limit} ({getattr(self, limit)}) is below {request} ({getattr(self, request)})",
                                 fix=f"raise {limit} or lower {request}")
        return self


class TopologySpread(Strict):
    max_skew: int = Field(default=1, ge=1, le=100)
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"]


class Availability(Strict):
    """How the stable track survives the loss of a zone or a node. One Deployment spread over zones (not one
    Deployment per zone): the rollout, the HPA and the PodDisruptionBudget each see one stable track."""

    zone_spread: TopologySpread = Field(
        default=TopologySpread(when_unsatisfiable="DoNotSchedule"),
        description="topology.kubernetes.io/zone: by default a replica waits (and the node pool scales out in "
                    "another zone) rather than stack in one zone")
    node_spread: TopologySpread = Field(
        default=TopologySpread(when_unsatisfiable="ScheduleAnyway"),
        description="kubernetes.io/hostname: by default replicas share an 8-GPU node only when no other fits")
    max_unavailable: int = Field(
        default=1, ge=1, le=100,
        description="PodDisruptionBudget of the stable track: pods a drain or node-pool upgrade may take at once")


class Autoscaling(Strict):
    """The stable track's HPA. `queue`: vLLM's `vllm:num_requests_waiting` per pod (requests waiting for a
    slot: the signal users feel); `kv-cache`: `vllm:kv_cache_usage_perc` (0..1); `gpu-utilization`: DCGM's
    `DCGM_FI_DEV_GPU_UTIL` (0..100, busy is not the same as saturated: the documented alternative). All three
    reach the HPA as Pods metrics through the metrics adapter (deploy/ack/templates/55-metrics-adapter.yaml)."""

    metric: Literal["queue", "kv-cache", "gpu-utilization"] = "queue"
    target: float | None = Field(
        default=None, gt=0, le=10000,
        description="average per pod to hold; default: 5 waiting requests, 0.8 of the KV cache, 80 % GPU")
    scale_down_stabilization_s: int = Field(
        default=600, ge=0, le=3600, description="a GPU replica takes minutes to come back: scale down slowly")

    @model_validator(mode="after")
    def _target_in_range(self) -> Autoscaling:
        if self.metric == "kv-cache" and self.target is not None and self.target > 1:
            raise InvalidValue(f"target {self.target} is above 1 for metric kv-cache (a fraction of the KV cache)",
                             fix="write e.g. 0.8")
        if self.metric == "gpu-utilization" and self.target is not None and self.target > 100:
            raise InvalidValue(f"target {self.target} is above 100 for metric gpu-utilization (percent)",
                             fix="write e.g. 80")
        return self


class SigningSpec(Strict):
    """Which published versions this deployment trusts (llmops.artefacts.signing: OpenSSF model-signing format).

    `require_signature` defaults to false so that versions published before signing was set up (and setups
    without a signing key) still roll out; a signature that is present is verified regardless, and one that does
    not verify (a changed byte, a key not listed here) is refused either way. Turn it on once model_refresh
    signs (Connection `llmops_signing`)."""

    require_signature: bool = Field(
        default=False, description="refuse unsigned versions (and versions signed by no listed key)")
    public_keys: list[str] = Field(
        default=[], max_length=16,
        description="trusted public keys (PEM), each inline or a file path (relative to the config directory; ~ and "
                    "$LLMOPS_HOME expanded). List the old key beside the new one while versions it signed are served.")

    @field_validator("public_keys")
    @classmethod
    def _key_entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not entry.strip() or (not entry.lstrip().startswith("-----BEGIN") and not entry.isprintable()):
                raise InvalidValue(f"public key entry {shorten(entry)} is neither a PEM key nor a file path",
                                   fix="write the path of a .pub file or paste the PEM (-----BEGIN PUBLIC KEY-----)")
        return value

    @model_validator(mode="after")
    def _keys_when_required(self) -> SigningSpec:
        if self.require_signature and not self.public_keys:
            raise InvalidValue("require_signature is true but no public_keys are listed: every version would be "
                               "refused", fix="list the public key(s) model_refresh signs with under public_keys")
        return self


VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"
# trtllm-serve reads LLM API options from one YAML file; a second one in extra_args would replace ours.
TRTLLM_CONFIG_FLAGS = ("--config", "--extra_llm_api_options")


class Deployment(Strict):
    name: str = Field(pattern=NAME_RE)
    model: str = Field(pattern=NAME_RE)
    namespace: str = Field(default="llmops", pattern=DNS1123_LABEL_RE, max_length=63)
    gpu_profile: str = Field(pattern=NAME_RE)
    replicas: int = Field(default=2, ge=1, le=100)
    max_replicas: int = Field(default=4, ge=1, le=200)
    image: str = Field(
        default=VLLM_IMAGE, pattern=IMAGE_RE, max_length=512,
        description="the server image; default vLLM's, or for serving_runtime tensorrt-llm LLMOPS_TRTLLM_IMAGE "
                    "(images/trtllm: the TensorRT-LLM version that validated the checkpoint in model_refresh)")
    port: int = Field(default=8000, ge=1, le=65535)
    service_account: str = Field(default="llmops-serving", pattern=DNS1123_SUBDOMAIN_RE, max_length=253)
    kubernetes_connection_id: str = Field(default="kubernetes_default", pattern=r"^[A-Za-z0-9_.-]{1,250}$")
    traffic: TrafficSpec = TrafficSpec()
    resources: ContainerResources = ContainerResources()
    extra_args: list[str] = Field(default=[], description="extra server arguments: vLLM flags (pods and local "
                                  "processes), or trtllm-serve flags for serving_runtime tensorrt-llm")
    expected_concurrency: int = Field(
        default=8, ge=1, le=1024,
        description="requests one replica serves at once in production; the canary probe reaches at least this")
    serving_runtime: Literal["vllm", "tensorrt-llm"] = Field(
        default="vllm", description="vllm (vllm.entrypoints.openai.api_server) or tensorrt-llm (trtllm-serve, "
                                    "runtime kubernetes only: TensorRT-LLM has no CPU build)")
    llm_api_options: dict[str, Any] = Field(
        default={}, description="tensorrt-llm only: TensorRT-LLM LLM API options (LlmArgs fields, e.g. "
                                "{kv_cache_config: {free_gpu_memory_fraction: 0.85}}) for the YAML trtllm-serve reads; "
                                "they override the defaults (Prometheus metrics and iteration stats on)")
    availability: Availability = Availability()
    autoscaling: Autoscaling = Autoscaling()
    spot: bool = Field(
        default=False, description="vLLM pods may run on the GPU profile's spot pool (preferred, on-demand when "
                                   "none is free); a reclaimed node takes its replicas: off for serving by default")
    runtime_class_name: str | None = Field(
        default=None, pattern=DNS1123_SUBDOMAIN_RE, max_length=253,
        description="the serving pods' RuntimeClass (e.g. nvidia where the cluster defines one, as vLLM "
                    "production-stack assumes); unset: the node's default runtime (ACK's GPU nodes default to "
                    "NVIDIA's container runtime)")
    signing: SigningSpec = Field(default=SigningSpec(), description="signed lineage: which versions are trusted")
    rollout: RolloutSpec

    @field_validator("name")
    @classmethod
    def _name_fits_every_kind(cls, value: str) -> str:
        # The name becomes Services (NAME, NAME-stable, NAME-canary: DNS-1035 labels, which the API server
        # refuses when they start with a digit) and the Deployments, HPA, PDB, monitor, route, lock ConfigMap.
        if not re.fullmatch(DNS1035_LABEL_RE.removesuffix("$").removeprefix("^"), value):
            raise InvalidValue(
                f"{value!r} names Kubernetes Services ({value}, {value}-stable, {value}-canary), which must be "
                "DNS-1035 labels: lowercase letters, digits and '-', starting with a letter",
                fix=f"start the name with a letter, e.g. {_letter_first(value)!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _runtime_image(cls, data: Any) -> Any:
        # A TensorRT-LLM deployment without an image serves with the image that validated its checkpoints.
        if isinstance(data, dict) and data.get("serving_runtime") == "tensorrt-llm" and not data.get("image"):
            data = {**data, "image": get_settings().trtllm_image}
        return data

    @field_validator("extra_args")
    @classmethod
    def _printable_args(cls, value: list[str]) -> list[str]:
        for arg in value:
            if not arg.isprintable():
                raise InvalidValue(f"{shorten(arg)} holds a control character (newline, tab...)",
                                 fix="write each vLLM argument as its own list entry")
        return value

    @model_validator(mode="after")
    def _runtime_settings(self) -> Deployment:
        image_name = self.image.split("@")[0]  # the repository path, without tag or digest
        if ":" in image_name.rsplit("/", 1)[-1]:
            image_name = image_name.rsplit(":", 1)[0]
        if self.serving_runtime == "tensorrt-llm":
            if "vllm" in image_name:
                raise InvalidValue(f"image {shorten(self.image)} is a vLLM image but serving_runtime is tensorrt-llm",
                                 fix="remove image (it defaults to LLMOPS_TRTLLM_IMAGE) or name a TensorRT-LLM image")
            flags = [a for a in self.extra_args if a.split("=", 1)[0] in TRTLLM_CONFIG_FLAGS]
            if flags:
                raise InvalidValue(f"extra_args {shorten(flags)} would replace the LLM API options file the rollout "
                                 "writes (Prometheus metrics)", fix="move those options into llm_api_options")
        else:
            if "trtllm" in image_name or "tensorrt" in image_name:
                raise InvalidValue(f"image {shorten(self.image)} is a TensorRT-LLM image but serving_runtime is "
                                 f"{self.serving_runtime}", fix="set serving_runtime: tensorrt-llm or use a vLLM image")
            if self.llm_api_options:
                raise InvalidValue("llm_api_options apply to serving_runtime tensorrt-llm only", fix="remove them or "
                                 "set serving_runtime: tensorrt-llm")
        return self

    @model_validator(mode="after")
    def _replica_bounds(self) -> Deployment:
        if self.max_replicas < self.replicas:
            raise InvalidValue(
                f"max_replicas ({self.max_replicas}) is below replicas ({self.replicas})",
                fix="raise max_replicas or lower replicas"
            )
        return self


# --- knowledge_bases.yaml ----------------------------------------------------------------------


class KbSource(Strict):
    kind: Literal["local", "s3", "oss"] = "local"
    uri: str = Field(description="a directory (relative to the project root or absolute) or s3://, oss:// prefix")
    include: list[str] = ["**/*.md", "**/*.txt", "**/*.html", "**/*.pdf"]
    connection_id: str | None = Field(
        default="llmops_kb_sources", pattern=r"^[A-Za-z0-9_.-]{1,250}$",
        description="Airflow Connection with this s3/oss source's keys (login/password; extra endpoint_url, "
                    "region_name for s3, endpoint, region for oss), given to the job as AWS_* or OSS_*; "
                    "null: the SDK's own chain (RRSA, IRSA). Unused by a local source")
    endpoint: str | None = Field(default=None, description="S3/OSS endpoint URL (default: the SDK's own)")
    max_document_mib: float = Field(
        default=50.0, gt=0, le=4096, description="documents larger than this are skipped and reported")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return check_http_url(value, "endpoint", "https://oss-cn-hangzhou.aliyuncs.com or http://127.0.0.1:8333")

    @model_validator(mode="after")
    def _scheme_matches_kind(self) -> KbSource:
        if self.kind == "local" and "://" in self.uri:
            raise InvalidValue(f"kind 'local' needs a directory, got the URL {shorten(self.uri)}",
                               fix="write uri as a directory path, or set kind to s3 or oss for a bucket")
        if self.kind != "local" and not self.uri.startswith(f"{self.kind}://"):
            raise InvalidValue(f"kind {self.kind!r} needs a {self.kind}://bucket/prefix uri, got {self.uri!r}",
                             fix=f"write uri as {self.kind}://bucket/prefix or set kind to local")
        return self


class Chunking(Strict):
    size: int = Field(default=800, ge=50, le=20000, description="characters per chunk")
    overlap: int = Field(default=100, ge=0)
    markdown_aware: bool = True

    @model_validator(mode="after")
    def _overlap_smaller(self) -> Chunking:
        if self.overlap >= self.size:
            raise InvalidValue(f"overlap ({self.overlap}) must be below size ({self.size})", fix="lower overlap")
        return self


class Embedder(Strict):
    kind: Literal["sentence-transformers", "openai"] = "sentence-transformers"
    model: str = "all-MiniLM-L6-v2"
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL for kind=openai")
    connection_id: str | None = Field(
        default="embeddings_default", pattern=r"^[A-Za-z0-9_.-]{1,250}$",
        description="kind openai: Airflow Connection whose password is the endpoint's API key, given to the job "
                    "as the variable api_key_env names; null: no key. Unused by a local embedder")
    api_key_env: str | None = Field(
        default="EMBEDDINGS_API_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$",
        description="environment variable holding the endpoint's API key (the DAG fills it from the Connection "
                    "connection_id names); unset or empty: no Authorization header")
    batch_size: int = Field(default=64, ge=1, le=4096)
    dimension: int | None = Field(
        default=None, ge=1, description="expected vector dimension; a model that returns another fails the run")
    backend: Literal["torch", "onnx", "auto"] = Field(
        default="torch", description="kind sentence-transformers: run the model on torch (default), on ONNX Runtime "
                                     "(exported once from the local model and cached under $LLMOPS_HOME), or auto: "
                                     "whichever of torch and ONNX int8 is faster on this machine's CPU, measured at "
                                     "first use and cached (vectors of both agree to cosine 0.99)")
    quantize: Literal["int8"] | None = Field(
        default=None, description="backend onnx: int8 dynamic quantization of the exported model (faster on CPU)")

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return check_http_url(value, "endpoint", "http://127.0.0.1:8000/v1")

    @model_validator(mode="after")
    def _endpoint_for_openai(self) -> Embedder:
        if self.kind == "openai" and not self.endpoint:
            raise InvalidValue("kind 'openai' needs an endpoint", fix="set endpoint to the server's /v1 base URL")
        if self.kind == "openai" and self.backend != "torch":
            raise InvalidValue("backend applies to kind 'sentence-transformers' only (an endpoint runs its own model)",
                             fix="remove backend")
        if self.quantize and self.backend != "onnx":
            raise InvalidValue("quantize: int8 needs backend: onnx", fix="set backend: onnx or remove quantize")
        return self

    def identity(self) -> dict:
        """What the vectors depend on (part of the collection fingerprint: a change forces a full rebuild).

        The default torch backend adds nothing, so collections built before backends existed stay current.
        """
        identity = {"kind": self.kind, "model": self.model}
        if self.backend != "torch":
            identity["backend"] = self.backend + (f"-{self.quantize}" if self.quantize else "")
        return identity


class MilvusTarget(Strict):
    uri: str = Field(
        default="milvus.db",
        description="a Milvus Lite file (relative to $LLMOPS_HOME/milvus) or http(s)://host:port of a server",
    )
    connection_id: str | None = Field(
        default="milvus_default", pattern=r"^[A-Za-z0-9_.-]{1,250}$",
        description="Airflow Connection of this knowledge base's Milvus: password = token (as MILVUS_TOKEN), "
                    "host = server URI used when milvus.uri is not set (as MILVUS_URI); null: none")
    index_type: Literal["FLAT", "IVF_FLAT", "HNSW", "AUTOINDEX"] = "AUTOINDEX"

    @field_validator("uri")
    @classmethod
    def _lite_file_or_server(cls, value: str) -> str:
        if "://" in value and not re.match(r"^(https?|tcp)://[^\s/?#]+\S*$", value) or not value.strip() or (
                "://" not in value and not value.endswith(".db")):
            raise InvalidValue(f"milvus.uri {shorten(value)} is neither a Milvus Lite file (*.db) nor a server URL",
                               fix="write a file name such as kb.db, or http://host:19530 / https://host:443 for a "
                               "Milvus server")
        return value
    metric_type: Literal["COSINE", "IP", "L2"] = "COSINE"
    index_params: dict[str, int] = {}


class Retrieval(Strict):
    """How search ranks chunks: dense vectors only, or dense plus BM25 full text fused by a ranker.

    Hybrid needs a Milvus with BM25 functions (Milvus 2.5+, Milvus Lite 3.x); the `milvus` package's
    2.3 standalone server has none and is refused when the index is opened, before any model load."""

    mode: Literal["dense", "hybrid"] = Field(
        default="dense", description="hybrid: also index the text for BM25 and fuse both rankings")
    ranker: Literal["rrf", "weighted"] = Field(
        default="rrf", description="rrf: reciprocal rank fusion; weighted: normalised scores, dense_weight apart")
    rrf_k: int = Field(default=60, ge=1, le=16383, description="ranker rrf: the k of 1 / (k + rank)")
    dense_weight: float = Field(
        default=0.5, ge=0.0, le=1.0, description="ranker weighted: the dense score's weight; BM25 gets the rest")

    @model_validator(mode="after")
    def _options_of_the_chosen_ranker(self) -> Retrieval:
        # An option that would change nothing is refused when it differs from its default (a default written
        # out, as model_dump() does, is harmless).
        changed = {name for name in ("ranker", "rrf_k", "dense_weight")
                   if getattr(self, name) != type(self).model_fields[name].default}
        if self.mode == "dense" and changed:
            raise InvalidValue(f"mode is 'dense', but {', '.join(sorted(changed))} (options of mode 'hybrid') "
                             "set", fix="set mode: hybrid, or remove them")
        if self.ranker == "rrf" and "dense_weight" in changed:
            raise InvalidValue("dense_weight applies to ranker 'weighted' only", fix="set ranker: weighted, or use "
                             "rrf_k with rrf")
        if self.ranker == "weighted" and "rrf_k" in changed:
            raise InvalidValue("rrf_k applies to ranker 'rrf' only", fix="set ranker: rrf, or use dense_weight "
                             "with weighted")
        return self


class GoldenQuery(Strict):
    query: str = Field(min_length=1)
    expected_document: str


SCHEDULE_PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly", "@annually")
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#-]+$")


def _cron_parses(expression: str) -> bool:
    """Whether croniter, the parser Airflow's cron timetables use, takes `expression` (`61 * * * *`
    and `0 3 * * mon-xyz` pass a field-by-field look but not it). croniter is pinned in the Airflow environment,
    where `make validate` and the DAG files run; an environment without it (the worker's, which never
    schedules) keeps the field-by-field check only."""
    try:
        from croniter import croniter
    except ImportError:
        return True
    try:
        croniter(expression)
        return croniter.is_valid(expression)
    except (ValueError, KeyError, TypeError):  # CroniterError is a ValueError
        return False


class AssetSchedule(Strict):
    asset: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9+.-]*://\S+$",
                       description="URI of the Asset whose events start a re-index, e.g. s3://bucket/docs/")


class KnowledgeBase(Strict):
    name: str = Field(pattern=NAME_RE)
    alias: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,200}$")
    source: KbSource
    loaders: dict[str, Literal["markdown", "text", "html", "pdf"]] = Field(
        default={}, description="file suffix -> loader, on top of .md/.txt/.rst/.html/.htm/.pdf")
    chunking: Chunking = Chunking()
    embedder: Embedder = Embedder()
    milvus: MilvusTarget = MilvusTarget()
    retrieval: Retrieval = Retrieval()
    retention: int = Field(default=2, ge=1, le=20, description="collection versions kept for rollback")
    schedule: str | AssetSchedule | None = Field(
        default="@daily", description="cron, a preset such as @daily, {asset: URI}, or null for manual runs only")
    golden_queries: list[GoldenQuery] = []
    top_k: int = Field(default=5, ge=1, le=100)
    min_recall: float = Field(default=0.8, ge=0.0, le=1.0)
    incremental_max_changed_ratio: float = Field(
        default=0.5, gt=0.0, le=1.0,
        description="above this share of changed documents an incremental run rebuilds instead",
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value):
        if isinstance(value, str):
            fields = value.split()
            if value.startswith("@") and value not in SCHEDULE_PRESETS or not value.startswith("@") and (
                    len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields) or not _cron_parses(value)):
                raise InvalidValue(f"schedule {value[:80]!r} is neither a five-field cron expression nor one of "
                                 f"{', '.join(SCHEDULE_PRESETS)}", fix="write e.g. '0 3 * * *', '@daily', "
                                 "{asset: s3://bucket/prefix/} or null (manual runs only)")
        return value

    @field_validator("loaders")
    @classmethod
    def _suffixes(cls, value: dict[str, str]) -> dict[str, str]:
        for suffix in value:
            if not suffix.startswith(".") or suffix != suffix.lower():
                raise InvalidValue(f"loader key {suffix!r} is not a lowercase file suffix", fix="write it like '.md'")
        return value


# --- files -------------------------------------------------------------------------------------


class ModelsFile(Strict):
    models: list[ModelSpec]


class GpuProfilesFile(Strict):
    gpu_profiles: list[GpuProfile]


class DeploymentsFile(Strict):
    deployments: list[Deployment]


class KnowledgeBasesFile(Strict):
    knowledge_bases: list[KnowledgeBase]
