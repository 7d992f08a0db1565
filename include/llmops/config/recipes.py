"""The recipe catalogue: pure data, importable without torch.

TensorRT-LLM recipes produce ModelOpt's unified Hugging Face checkpoint (hf_quant_config.json), which current
TensorRT-LLM (PyTorch backend) loads directly. There is no engine-build recipe: TensorRT-LLM removed its
legacy TensorRT engine backend (`trtllm-build`) and ModelOpt 0.49 drops the TRT-LLM checkpoint export.

`min_compute_capability` is the lowest CUDA compute capability whose tensor cores run the format:
FP8 needs Ada/Hopper (8.9+), NVFP4 needs Blackwell (10.0+). A profile below it never gets the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ValidationThresholds:
    """What the teacher-forced validation (`llmops.validate.teacher_forced`) accepts for a recipe.

    Per token of the reference continuation, KL(reference || candidate) in nats over the reference's top-k
    (the tail handling is documented in teacher_forced), and whether the candidate's top-1 token is the
    reference's where the reference is confident: its top-1 logprob exceeds its top-2 by `confidence_margin`
    nats or more. A model overrides any of them in models.yaml (validation.thresholds).
    """

    max_mean_kl: float
    """Mean KL over every scored token of every golden prompt must not exceed this (nats)."""
    min_confident_top1: float
    """Share of confident positions where the candidate's top-1 is the reference's (0..1)."""
    confidence_margin: float = 1.0
    """A position counts for top-1 agreement when log p(top-1) - log p(top-2) of the reference is at least
    this (1.0 nat: the reference's top-1 is at least e (2.7) times as likely as its runner-up)."""
    max_relative_kl: float = 0.025
    """Mean KL divided by the reference's own information, mean KL(reference || uniform over the vocabulary), both
    in the top-k approximation, must not exceed this. It catches what the absolute bound cannot on a near-flat
    model (random or barely trained), where every candidate, broken or not, stays within a tiny absolute KL
    (a random Qwen2 scored teacher-forced in transformers, fp32: broken copies 6-9 %, W4A16 0.7 %, W8A8 under
    0.01 %; bench/validation.py measures it with vLLM)."""

    def replace(self, **overrides: float | None) -> ValidationThresholds:
        """These thresholds with the values that are not None in `overrides` (a model's models.yaml entry)."""
        values = {**self.__dict__, **{k: float(v) for k, v in overrides.items() if v is not None}}
        return ValidationThresholds(**values)


#: Thresholds of a recipe that names none: 8-bit formats keep the distribution close.
DEFAULT_THRESHOLDS = ValidationThresholds(max_mean_kl=0.05, min_confident_top1=0.9)
#: 4-bit weights (W4A16, GPTQ, AWQ, NVFP4) move it more: a looser bound, still well below a broken checkpoint's.
FOUR_BIT_THRESHOLDS = ValidationThresholds(max_mean_kl=0.1, min_confident_top1=0.85, max_relative_kl=0.04)


@dataclass(frozen=True)
class Recipe:
    name: str
    runtime: str  # serving runtime that loads the checkpoint: "vllm" or "tensorrt-llm"
    tool: str  # "llmcompressor", "modelopt", "optimum-gptq"
    scheme: str  # quantization format as the tool names it
    min_compute_capability: float
    params: dict = field(default_factory=dict)
    cpu_ok: bool = True
    """The quantization itself runs without a GPU (the local runtime can build it)."""
    cpu_servable: bool = False
    """vLLM on CPU loads the checkpoint, so the local runtime can validate it (int8 / int4 kernels only)."""
    validation: ValidationThresholds = DEFAULT_THRESHOLDS
    """What teacher-forced validation accepts (4-bit formats move the distribution more than 8-bit ones)."""

    def runs_on(self, compute_capability: float) -> bool:
        return compute_capability >= self.min_compute_capability


RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe("llmcompressor-w8a8", "vllm", "llmcompressor", "W8A8", 7.5, cpu_servable=True),
        Recipe("llmcompressor-w4a16", "vllm", "llmcompressor", "W4A16", 7.5, cpu_servable=True,
               validation=FOUR_BIT_THRESHOLDS),
        # The same int4 format with GPTQ's error-correcting rounding, calibrated on the golden prompts (on the GPU
        # in a pod, on the CPU locally): closer to the original than round-to-nearest at the same size.
        Recipe("llmcompressor-gptq-w4a16", "vllm", "llmcompressor", "W4A16", 7.5, cpu_servable=True,
               params={"algorithm": "GPTQ"}, validation=FOUR_BIT_THRESHOLDS),
        Recipe("llmcompressor-fp8-dynamic", "vllm", "llmcompressor", "FP8_DYNAMIC", 8.9),
        # optimum.gptq calibrates through gptqmodel's CUDA kernels: GPU pods only.
        Recipe("optimum-gptq-int4", "vllm", "optimum-gptq", "GPTQ-INT4", 7.5, cpu_ok=False,
               params={"bits": 4, "group_size": 128, "desc_act": False}, validation=FOUR_BIT_THRESHOLDS),
        Recipe("modelopt-fp8", "tensorrt-llm", "modelopt", "FP8", 8.9),
        Recipe("modelopt-int4-awq", "tensorrt-llm", "modelopt", "INT4_AWQ", 8.0, validation=FOUR_BIT_THRESHOLDS),
        Recipe("modelopt-nvfp4", "tensorrt-llm", "modelopt", "NVFP4", 10.0, validation=FOUR_BIT_THRESHOLDS),
    )
}
