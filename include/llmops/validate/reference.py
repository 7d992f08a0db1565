"""Greedy answers of the unquantized model on the golden prompts (transformers; worker environment).

Each answer keeps the prompt's token ids (the serving runtime is given exactly these), the continuation's
token ids (what validation compares) and the decoded text (what people read).
"""

from __future__ import annotations


def eos_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a generation: the generation config's eos ids, the tokenizer's eos and pad ids."""
    ids: set[int] = set()
    for value in (getattr(getattr(model, "generation_config", None), "eos_token_id", None),
                  tokenizer.eos_token_id, tokenizer.pad_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return sorted(ids)


def greedy_generations(model, tokenizer, prompts: list[str], max_new_tokens: int) -> list[dict]:
    """[{"prompt_token_ids", "token_ids", "text"}] per prompt: greedy, no sampling, stops at EOS."""
    import torch

    generations = []
    with torch.no_grad():
        for prompt in prompts:
            batch = tokenizer(prompt, return_tensors="pt").to(model.device)
            output = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            prompt_ids = batch["input_ids"][0].tolist()
            new_tokens = output[0, len(prompt_ids):].tolist()
            generations.append({"prompt_token_ids": prompt_ids, "token_ids": new_tokens,
                                "text": tokenizer.decode(new_tokens, skip_special_tokens=True)})
    return generations


def teacher_forced_logprobs(model, prompt_token_ids: list[int], continuation_ids: list[int], k: int = 20
                            ) -> list[dict[int, float]]:
    """The model's top-k logprobs {token_id: logprob} at each token of `continuation_ids`, teacher-forced.

    One forward pass over prompt + continuation; position i is the distribution over continuation token i given
    the prompt and continuation[:i] (the input `llmops.validate.teacher_forced` takes). Log-softmax over the
    whole vocabulary in float32, natural log.
    """
    import torch

    if not continuation_ids:
        return []
    if not prompt_token_ids:
        raise ValueError("teacher forcing needs at least one prompt token (position 0 is predicted from it)")
    ids = torch.tensor([list(prompt_token_ids) + list(continuation_ids)], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    start = len(prompt_token_ids) - 1
    logprobs = torch.log_softmax(logits[start:start + len(continuation_ids)].float(), dim=-1)
    values, indices = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
    return [dict(zip(i.tolist(), v.tolist(), strict=True)) for i, v in zip(indices.cpu(), values.cpu(), strict=True)]
