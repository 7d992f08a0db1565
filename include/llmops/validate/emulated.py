"""Quantized checkpoints read back into transformers computing what their serving runtime computes, for validation
where that runtime is not installed (the GPU acceptance kit: transformers on CUDA, or the CPU).

- ModelOpt's unified FP8 checkpoint (the TensorRT-LLM target; transformers has no loader for `quant_method:
  modelopt`): each quantized Linear's float8_e4m3fn weight times its per-tensor `weight_scale`, and its input
  rounded to float8_e4m3fn with the static per-tensor `input_scale` before the matrix product, as TensorRT-LLM's
  FP8 GEMMs do. Embeddings, norms and the excluded lm_head load as exported.
- llm-compressor's compressed-tensors checkpoints: transformers' own loader dequantizes the weights but leaves
  the activations alone, so the activation quantization the scheme names (W8A8: int8 per token, dynamic, as
  vLLM does at run time) is added as a hook on each quantized Linear.
The accumulation runs in the model's dtype rather than the tensor cores' int32 / float32, a difference far below
what the validation thresholds measure.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmops.validate.errors import ValidationFailed

FP8_MAX = 448.0  # largest finite float8_e4m3fn


def _fake_quantize_fp8_static(scale):
    import torch

    def hook(module, args):
        x = args[0]
        q = (x / scale.to(x.dtype)).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        return (q.to(x.dtype) * scale.to(x.dtype), *args[1:])
    return hook


def load_fp8_checkpoint(checkpoint: Path, *, device: str):
    """The exported FP8 checkpoint as a transformers model on `device` (weights dequantized, inputs emulated)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    checkpoint = Path(checkpoint)
    quant = json.loads((checkpoint / "hf_quant_config.json").read_text()).get("quantization", {})
    if quant.get("quant_algo") != "FP8" or quant.get("kv_cache_quant_algo"):
        raise ValidationFailed(f"{checkpoint}: quant_algo {quant.get('quant_algo')!r} with KV cache "
                               f"{quant.get('kv_cache_quant_algo')!r}; this reader knows FP8 weights and activations "
                               "only", fix="validate other ModelOpt formats with TensorRT-LLM on a GPU pod")
    config = AutoConfig.from_pretrained(checkpoint)
    config.quantization_config = None
    dtype = getattr(config, "dtype", None) or torch.float32
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    tensors: dict = {}
    for path in sorted(checkpoint.glob("*.safetensors")):
        tensors.update(load_file(path))
    state, input_scales = {}, {}
    for key, tensor in tensors.items():
        if key.endswith((".weight_scale", ".input_scale")):
            if key.endswith(".input_scale"):
                input_scales[key.removesuffix(".input_scale")] = tensor.float()
            continue
        if tensor.dtype == torch.float8_e4m3fn:
            scale = tensors.get(key + "_scale")
            if scale is None:
                raise ValidationFailed(f"{checkpoint}: {key} is float8 but has no {key}_scale",
                                       fix="re-export the checkpoint with ModelOpt's export_hf_checkpoint")
            tensor = tensor.float() * scale.float()
        state[key] = tensor.to(dtype)
    if not input_scales or not any(t.dtype == torch.float8_e4m3fn for t in tensors.values()):
        raise ValidationFailed(f"{checkpoint}: hf_quant_config.json says FP8 but no float8 weight with an input "
                               "scale was exported", fix="re-export the checkpoint with ModelOpt's export_hf_checkpoint "
                               "after mtq.quantize (the model was exported unquantized)")
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)  # random init, overwritten below
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise ValidationFailed(f"{checkpoint}: weights do not match {config.architectures}: missing "
                               f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}",
                               fix="re-export the checkpoint with ModelOpt's export_hf_checkpoint")
    model = model.to(device)
    for name, module in model.named_modules():
        if name in input_scales:
            module.register_forward_pre_hook(_fake_quantize_fp8_static(input_scales[name].to(device)))
    model.eval()
    return model


def _fake_quantize_int8_per_token(module, args):
    x = args[0]
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127.0
    return ((x / scale).round().clamp(-128, 127) * scale, *args[1:])


def _fake_quantize_fp8_per_token(module, args):
    import torch

    x = args[0]
    scale = x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    return ((x / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).to(x.dtype) * scale, *args[1:])


def load_compressed_tensors_checkpoint(checkpoint: Path, *, device: str):
    """An llm-compressor checkpoint as a transformers model on `device`, with its activation quantization emulated."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype="auto", device_map=device).eval()
    for name, module in model.named_modules():
        scheme = getattr(module, "quantization_scheme", None)
        activations = getattr(scheme, "input_activations", None)
        if activations is None:
            continue
        kind = (str(getattr(activations.type, "value", activations.type)), activations.num_bits,
                str(getattr(activations.strategy, "value", activations.strategy)), bool(activations.dynamic))
        hook = {("int", 8, "token", True): _fake_quantize_int8_per_token,
                ("float", 8, "token", True): _fake_quantize_fp8_per_token}.get(kind)
        if hook is None:
            raise ValidationFailed(f"{checkpoint}: {name} quantizes its inputs as {kind} (type, bits, strategy, "
                                   "dynamic); this reader emulates dynamic per-token int8 and fp8 only",
                                   fix="validate this checkpoint with vLLM (the refresh validate step)")
        module.register_forward_pre_hook(hook)
    return model
