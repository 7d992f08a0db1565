"""Models for judging validation (tests and bench/validation.py): a random Qwen2 whose byte-level BPE emits
multi-byte text, and broken copies of a checkpoint that validation must refuse. Worker environment (torch):

    python tests/support/validation_models.py qwen2 --out DIR [--seed N]
    python tests/support/validation_models.py break --kind zero-layer|scales-x4|permute-embeddings --src DIR --out DIR

`break` writes a copy of a checkpoint (unquantized or compressed-tensors) with one defect:
- zero-layer: every weight of the FIRST decoder layer set to zero (its attention and MLP add nothing, the residual
  stream passes through unchanged). Not the last one: the trained demo Llama is confident enough that its residual
  stream carries the answer past a zeroed last layer (transformers, fp32, its 5 golden prompts x 12 tokens: mean KL
  0.0045, top-1 20/20; vLLM bf16 in bench/validation.py: 0.0043, 100 %), and a layer whose removal changes no output
  is not a defect the metrics can or should see. Without the first layer no later layer sees what it builds from
  the embeddings (same measurement: tiny Llama mean KL 0.58, 9.8 % of the reference's information, top-1 17/20;
  the random Qwen2 104 % over the full vocabulary; the bench's vLLM top-20: tiny Llama mean KL 0.58, 9.8 %,
  top-1 85 %, random Qwen2 19.0 %), each far past every recipe's thresholds;
- scales-x4: every quantization scale (`*weight_scale`) multiplied by 4 (a quantized checkpoint only);
- permute-embeddings: the rows of the input embedding shuffled (a fixed seed), so each id embeds as another token.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

#: Text in several scripts: the byte-level vocabulary splits most CJK characters and every emoji into several
#: tokens, so a random model's continuations often end inside a character.
MULTILINGUAL = ["東京は日本の首都です。", "北京是中国的首都。", "서울은 한국의 수도입니다。", "The capital of France is Paris.",
                "Ünïcödé façade café naïve.", "猫が窓の外を見ています。", "🙂🚀 emoji ✨ text 🎉", "Пример текста.",
                "一二三四五六七八九十。", "Kubernetes schedules pods on nodes."]


def random_qwen2(out: Path, *, seed: int = 0) -> Path:
    """An untrained Qwen2 (hidden 128, head_dim 64 for vLLM's CPU attention, widths divisible by 128 for W4A16)
    with a byte-level BPE trained on MULTILINGUAL. Deterministic for a seed on one machine; tests only."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.train_from_iterator(MULTILINGUAL * 4, trainer=trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.model_max_length = 512
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False, torch_dtype="float32")
    model = Qwen2ForCausalLM(config).eval()
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "facts.json").write_text(json.dumps(MULTILINGUAL, ensure_ascii=False, indent=1))
    return out


def break_checkpoint(src: Path, out: Path, kind: str, *, seed: int = 0) -> Path:
    """A copy of `src` with one defect (module docstring); refuses a kind that changes nothing."""
    import torch
    from safetensors.torch import load_file, save_file

    src, out = Path(src), Path(out)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(src, out)
    changed = 0
    for path in sorted(out.glob("*.safetensors")):
        tensors = load_file(path)
        for name, tensor in tensors.items():
            if kind == "zero-layer" and ".layers.0." in name and tensor.is_floating_point():
                tensors[name] = torch.zeros_like(tensor)
            elif kind == "scales-x4" and name.endswith("weight_scale"):
                tensors[name] = tensor * 4
            elif kind == "permute-embeddings" and name.endswith("embed_tokens.weight"):
                generator = torch.Generator().manual_seed(seed)
                tensors[name] = tensor[torch.randperm(tensor.shape[0], generator=generator)].contiguous()
            else:
                continue
            changed += 1
        save_file(tensors, path, metadata={"format": "pt"})
    if not changed:
        raise SystemExit(f"break {kind}: nothing in {src} to change (scales-x4 needs a quantized checkpoint)")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    qwen = sub.add_parser("qwen2")
    qwen.add_argument("--out", type=Path, required=True)
    qwen.add_argument("--seed", type=int, default=0)
    broken = sub.add_parser("break")
    broken.add_argument("--kind", choices=["zero-layer", "scales-x4", "permute-embeddings"], required=True)
    broken.add_argument("--src", type=Path, required=True)
    broken.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "qwen2":
        print(random_qwen2(args.out, seed=args.seed))
    else:
        print(break_checkpoint(args.src, args.out, args.kind))


if __name__ == "__main__":
    main()
