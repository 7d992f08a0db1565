"""Greedy completions with TensorRT-LLM's LLM API (PyTorch backend). GPU pods only (images/trtllm).

Current TensorRT-LLM loads the ModelOpt unified checkpoint (hf_quant_config.json) directly; a legacy
engine directory (trtllm-build output) loads the same way in the legacy image.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def unavailable_reason() -> str | None:
    """Why TensorRT-LLM cannot validate here, or None when it can."""
    if importlib.util.find_spec("tensorrt_llm") is None:
        return "TensorRT-LLM is not installed here (it has no CPU build); it validates in the images/trtllm pod"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU here; TensorRT-LLM validates on a GPU pod (runtime kubernetes)"
    return None


def greedy_completions(checkpoint: Path, prompts: list[str], max_new_tokens: int, *, max_model_len: int,
                       tensor_parallel_size: int = 1) -> list[str]:
    from tensorrt_llm import LLM, SamplingParams

    llm = LLM(model=str(checkpoint), tensor_parallel_size=tensor_parallel_size, max_seq_len=max_model_len)
    try:
        outputs = llm.generate(prompts, SamplingParams(max_tokens=max_new_tokens, temperature=0.0))
        return [output.outputs[0].text for output in outputs]
    finally:
        llm.shutdown()
