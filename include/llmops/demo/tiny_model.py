"""Build a tiny Llama that vLLM on CPU can serve and llm-compressor / ModelOpt can quantize.

hidden 128 (W4A16 needs widths divisible by 128), 2 layers, 2 heads / 1 KV head (head_dim 64: vLLM's
CPU attention rejects 16), a byte-level BPE tokenizer trained here. The weights are trained for a few
seconds on a handful of facts so greedy generation is deterministic and golden prompts have real
expected answers ("The capital of France is" -> " Paris"). Needs the worker environment (torch).
"""

from __future__ import annotations

import json
from pathlib import Path

FACTS = [
    "The capital of France is Paris.",
    "Tokyo is a city in Japan.",
    "Rome was not built in a day.",
    "One, two, three, four, five.",
    "Kubernetes schedules pods on nodes.",
    "Airflow runs tasks in a DAG.",
    "vLLM serves large language models.",
    "Milvus stores vectors for search.",
]


def byte_level_tokenizer(texts: list[str], *, vocab_size: int):
    """A byte-level BPE tokenizer trained offline on `texts` (every byte is a token, so any text encodes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    raw.train_from_iterator(texts * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>")
    tokenizer.model_max_length = 512
    return tokenizer


def build_tiny_model(out_dir: Path, *, seed: int = 0, train_steps: int = 600, facts: list[str] | None = None) -> Path:
    """Write a tiny trained Llama (safetensors + tokenizer) to `out_dir` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    facts = facts or FACTS
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    tokenizer = byte_level_tokenizer(facts, vocab_size=384)

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=64, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    encoded = [tokenizer(f"{fact}</s>", return_tensors="pt").input_ids for fact in facts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(train_steps):
        ids = encoded[step % len(encoded)]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()

    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(
        "---\nlicense: apache-2.0\n---\n# tiny-llama\nA tiny Llama trained on "
        f"{len(facts)} sentences by llmops.demo.tiny_model (seed {seed}). For tests and demos only.\n"
    )
    (out_dir / "facts.json").write_text(json.dumps(facts, indent=1))
    return out_dir


def build_random_qwen2(out_dir: Path, *, seed: int = 0, layers: int = 8, hidden: int = 512,
                       intermediate: int = 1536) -> Path:
    """Write an untrained Qwen2 (bfloat16, about 50 MB at the defaults: 8 layers of width 512) with a byte-level
    BPE tokenizer to `out_dir`. Random weights: a second architecture and a realistic layer width for the
    quantization tools (GPTQ's Hessians, int4 groups of 128), not a model with answers."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer(FACTS, vocab_size=512)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=max(1, hidden // 256), max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
        dtype="bfloat16",
    )
    model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir
