"""Which server flags a trigger may give the canary (`canary_extra_args`): an allow-list of tuning flags.

`canary_extra_args` come from whoever can trigger model_rollout, not from the registry's reviewers. A flag
that changes policy or exposure must not reach the canary that way: `--trust-remote-code` would bypass
models.yaml's weight policy, `--host` / `--port` / `--api-key` / `--ssl-*` change who can reach the server
and how, `--allowed-local-media-path` lets requests read the pod's files, `--served-model-name` changes
what clients and the probes address, `--middleware` or `--tool-parser-plugin` import code, `--chat-template`
or `--download-dir` read and write paths. An allow-list, not a deny-list, because vLLM adds flags every
release and accepts abbreviations of long flags (`--trust-remote` is `--trust-remote-code` to argparse): a
deny-list would let the next exposure flag through, an allow-list only ever refuses a tuning flag nobody has
listed yet (add it here). Flags the deployment needs for good belong in deployments.yaml's `extra_args`,
which its reviewers see.

Each entry is one argument: a flag, `--flag=value`, or the value after a flag that takes one.
"""

from __future__ import annotations

from llmops.errors import shorten
from llmops.serving.port import Problem

# flag -> takes a value. vLLM accepts '_' for '-' in long flags: they are compared with dashes.
VLLM_TUNING_FLAGS: dict[str, bool] = {
    "--max-num-seqs": True,
    "--max-num-batched-tokens": True,
    "--gpu-memory-utilization": True,
    "--kv-cache-memory-bytes": True,
    "--kv-cache-dtype": True,
    "--block-size": True,
    "--cpu-offload-gb": True,
    "--long-prefill-token-threshold": True,
    "--scheduling-policy": True,
    "--stream-interval": True,
    "--enable-prefix-caching": False,
    "--no-enable-prefix-caching": False,
    "--enable-chunked-prefill": False,
    "--no-enable-chunked-prefill": False,
    "--enforce-eager": False,
    "--no-enforce-eager": False,
    "--async-scheduling": False,
    "--no-async-scheduling": False,
}
# trtllm-serve (click) spells its options with underscores; --config / --extra_llm_api_options are not here:
# they would replace the deployment's LLM API options file (its metrics).
TRTLLM_TUNING_FLAGS: dict[str, bool] = {
    "--max_batch_size": True,
    "--max_num_tokens": True,
    "--kv_cache_free_gpu_memory_fraction": True,
}
ALLOWED = {"vllm": VLLM_TUNING_FLAGS, "tensorrt-llm": TRTLLM_TUNING_FLAGS}


def _flag_name(arg: str, runtime: str) -> str:
    name = arg.split("=", 1)[0]
    return "--" + name[2:].replace("_", "-") if runtime == "vllm" and name.startswith("--") else name


def check_canary_args(args: list[str], runtime: str) -> list[Problem]:
    """Every problem of `args` for a `runtime` ("vllm" / "tensorrt-llm") canary; empty: allowed."""
    allowed = ALLOWED.get(runtime, {})
    listed = ", ".join(allowed)
    fix_flag = (f"use only tuning flags ({listed}); put anything else in the deployment's extra_args in "
                "deployments.yaml, where its reviewers see it")
    problems: list[Problem] = []
    expects_value_for: str | None = None
    after_refused = False  # the value of a refused flag is not a second problem
    for arg in args:
        if after_refused and not arg.startswith("-"):
            after_refused = False
            continue
        after_refused = False
        if expects_value_for is not None:
            if arg.startswith("-") and not _is_number(arg):
                problems.append(Problem("canary_extra_args", f"{expects_value_for} needs a value, got the flag "
                                        f"{shorten(arg)}", f"write the value after {expects_value_for}"))
            expects_value_for = None
            continue
        if not arg.startswith("-"):
            problems.append(Problem("canary_extra_args", f"{shorten(arg)} is a value without a flag before it",
                                    "write each flag before its value, e.g. --max-num-seqs, 64"))
            continue
        if any(c.isspace() for c in arg.split("=", 1)[0]):
            problems.append(Problem("canary_extra_args", f"{shorten(arg)} holds a flag and a value in one entry",
                                    "write the flag and its value as two entries, e.g. --max-num-seqs, 64"))
            continue
        name = _flag_name(arg, runtime)
        if name not in allowed:
            problems.append(Problem("canary_extra_args", f"{shorten(arg)} is not a tuning flag the trigger may "
                                    f"give a {runtime} canary (it may change policy or exposure)", fix_flag))
            after_refused = "=" not in arg
            continue
        takes_value, inline = allowed[name], "=" in arg
        if takes_value and not inline:
            expects_value_for = arg
        elif not takes_value and inline:
            problems.append(Problem("canary_extra_args", f"{shorten(arg)}: {name} takes no value",
                                    f"write {name} alone"))
    if expects_value_for is not None:
        problems.append(Problem("canary_extra_args", f"{expects_value_for} needs a value",
                                f"write the value after {expects_value_for}"))
    return problems


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
