"""Greedy answers of the unquantized model on the golden prompts (transformers; worker environment)."""

from __future__ import annotations


def greedy_completions(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    import torch

    completions = []
    with torch.no_grad():
        for prompt in prompts:
            batch = tokenizer(prompt, return_tensors="pt").to(model.device)
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            new_tokens = output[0, batch["input_ids"].shape[1]:]
            completions.append(tokenizer.decode(new_tokens, skip_special_tokens=True))
    return completions
