"""Validation of quantized checkpoints: load with the serving runtime, generate on golden prompts,
compare with the unquantized model's greedy answers.

    golden.py     pure: the golden set, agreement and the verdict
    reference.py  greedy answers of the unquantized model (transformers, worker environment)
    vllm_server.py     a real vLLM OpenAI server on the checkpoint (serving environment / vLLM image)
    trtllm_runtime.py  TensorRT-LLM's LLM API on the checkpoint (TensorRT-LLM image, GPU pods only)
    emulated.py   checkpoints read back into transformers computing what their runtime computes (the GPU kit)
    errors.py     ValidationFailed

Both runtimes continue the reference's own prompt token ids; the verdict compares continuation token ids.
"""
