"""The demo's tiny Llama: built at most once per machine, and only accepted when its answers cannot flip.

hidden 128 (W4A16 needs widths divisible by 128), 2 layers, 2 heads / 1 KV head (head_dim 64: vLLM's
CPU attention rejects 16), a byte-level BPE tokenizer trained here, weights trained on a handful of facts
so golden prompts have real expected answers ("The capital of France is" -> " Paris").

Float kernels differ between CPUs, so the same seed and steps give different weights on another machine (an
AMD EPYC answered "One, two, three," with " fou, five."). A build is therefore accepted only when, for every
golden prompt with expectations of the demo model (the rollouts' in deployments.yaml; models.yaml's validation
prompts carry none: refresh validation compares a checkpoint with its reference, not with a fixed answer),
teacher-forced decoding of the fact that starts with the prompt puts the expected token on top at every
position up to the one that meets the expectation (" Paris" for "The capital of France is") with a top-1 logit
margin of at least `MIN_MARGIN`, in float32 AND bfloat16, and free-running greedy decoding meets the
expectations. A margin
that large cannot be flipped by another CPU's (or vLLM's bf16 kernels') rounding. Training goes on in
`CHECK_EVERY`-step chunks up to `max_train_steps` until the build is accepted; otherwise the build fails
naming the prompt, the position and the margin.

Builds are cached under `$LLMOPS_HOME/cache/demo-models/<key>`, the key a hash of everything the build
depends on (this file, seed, steps, facts, the golden prompts, torch / transformers / tokenizers versions):
`make ui`, `make demo`, the tests and the benches (all through `python -m llmops.jobs.make_tiny_model`,
`ensure_demo_model`) share one build per machine and clone. A file lock makes a second builder wait for the
first and reuse its result; the build is staged and renamed into place, its acceptance record written last.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from llmops.demo.errors import DemoModelError

log = logging.getLogger(__name__)

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
MODEL = "tiny-llama"
#: The smallest accepted top-1 logit margin (natural log of the probability ratio of the first two tokens) at
#: every expected token: bf16 keeps ~3 significant digits, so logits of this model (|l| < ~30) move by well
#: under 0.5 between kernels; a margin of 3 leaves a wide safety factor.
MIN_MARGIN = 3.0
TRAIN_STEPS = 200
MAX_TRAIN_STEPS = 1500
CHECK_EVERY = 50
ACCEPTED = "accepted.json"  # the build's acceptance record, written last: its presence marks a finished build


@dataclass(frozen=True)
class Expectation:
    prompt: str
    fact: str
    golden: object  # the rollout's GoldenPrompt, with its expectations


def golden_expectations(facts: list[str]) -> list[Expectation]:
    """Every golden prompt with expectations of the demo model, paired with the training fact it continues into."""
    from llmops.config import load_registry

    registry = load_registry()
    prompts: dict[str, object] = {}
    for deployment in registry.deployments.values():
        if deployment.model == MODEL:
            for golden in deployment.rollout.golden_prompts:
                prompts[golden.prompt] = golden
    out = []
    for prompt, golden in prompts.items():
        fact = next((f for f in facts if f.startswith(prompt)), None)
        if fact is None:
            raise DemoModelError(f"golden prompt {prompt!r} of {MODEL} continues no training fact of the demo model",
                                 fix=f"add a sentence starting with it to FACTS in {__file__}, or change the prompt")
        out.append(Expectation(prompt, fact, golden))
    return out


def build_key(*, seed: int, train_steps: int, max_train_steps: int, facts: list[str] | None) -> str:
    """The cache key: a hash of everything the build's result depends on."""
    facts = facts or FACTS
    checked = _checked(seed, train_steps, facts)
    parts = {"builder": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(), "seed": seed,
             "train_steps": train_steps, "max_train_steps": max_train_steps, "facts": facts,
             "golden": [[e.prompt, e.fact, e.golden.model_dump()] for e in golden_expectations(facts)] if checked else [],
             "versions": {name: _version(name) for name in ("torch", "transformers", "tokenizers", "safetensors")}}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _checked(seed: int, train_steps: int, facts: list[str]) -> bool:
    """Golden acceptance applies to the demo model (its facts, trained); an untrained build (train_steps 0, the
    tests' model that fails golden prompts) and builds on other facts are not the demo model."""
    return train_steps > 0 and list(facts) == FACTS


def cache_root() -> Path:
    from llmops.settings import get_settings

    return get_settings().home / "cache" / "demo-models"


def ensure_demo_model(*, seed: int = 0, train_steps: int = TRAIN_STEPS, max_train_steps: int = MAX_TRAIN_STEPS,
                      facts: list[str] | None = None, root: Path | None = None,
                      progress=None) -> tuple[Path, bool]:
    """The accepted build for these inputs: (its folder, True if it was built now). Waits for a twin building
    the same key and reuses its result."""
    key = build_key(seed=seed, train_steps=train_steps, max_train_steps=max_train_steps, facts=facts)
    root = Path(root) if root is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    if (final / ACCEPTED).is_file():
        return final, False
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a twin building the same key: wait for it, then reuse its build
        if (final / ACCEPTED).is_file():
            return final, False
        staging = root / f".{key}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            build_tiny_model(staging, seed=seed, train_steps=train_steps, max_train_steps=max_train_steps,
                             facts=facts, progress=progress)
            shutil.rmtree(final, ignore_errors=True)  # an unfinished leftover (no acceptance record)
            staging.rename(final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return final, True


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


def demo_model(*args: str, timeout_s: float = 3600) -> Path:
    """The accepted build's folder, from any environment: runs `python -m llmops.jobs.make_tiny_model ARGS` in the
    worker environment (torch), which reuses the machine's cached build or builds it (e.g. `--seed 1
    --train-steps 0` for the untrained model that fails golden prompts)."""
    import subprocess

    from llmops.settings import PROJECT_ROOT, child_environment, get_settings

    env = child_environment({"PYTHONPATH": str(PROJECT_ROOT / "include")})
    done = subprocess.run([get_settings().worker_python, "-m", "llmops.jobs.make_tiny_model", *args], env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise DemoModelError(f"building the demo model failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    # the jobs' contract (llmops.jobs._cli, a layer above this one): the last line is `LLMOPS_RESULT {json}`
    return Path(json.loads(done.stdout.strip().splitlines()[-1].split(" ", 1)[1])["path"])


def build_tiny_model(out_dir: Path, *, seed: int = 0, train_steps: int = TRAIN_STEPS,
                     max_train_steps: int = MAX_TRAIN_STEPS, facts: list[str] | None = None, progress=None) -> Path:
    """Train a tiny Llama into `out_dir` (safetensors + tokenizer + acceptance record) and return it; raises
    DemoModelError naming the prompt when the demo model is not accepted within `max_train_steps`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    facts = list(facts or FACTS)
    checked = _checked(seed, train_steps, facts)
    expectations = golden_expectations(facts) if checked else []
    say = progress or (lambda message: log.info("%s", message))
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
    step, problems, margins = 0, [], {}
    while True:
        model.train()
        # unchecked builds (e.g. the untrained model of --train-steps 0) train exactly train_steps
        target = train_steps if step < train_steps or not checked else step + CHECK_EVERY
        for _ in range(step, target):
            # Full batch: every fact in every step. One fact per step left the last-trained fact in charge of the
            # next token, so margins swung with the step count (seed 1 never settled on ' four' within 3000 steps).
            for ids in encoded:
                (model(input_ids=ids, labels=ids).loss / len(encoded)).backward()
            optimizer.step()
            optimizer.zero_grad()
        step = target
        model.eval()
        if not checked:
            break
        problems, margins = check_answers(model, tokenizer, expectations)
        if not problems:
            say(f"demo model accepted after {step} training steps: smallest top-1 margin "
                f"{min(margins.values()):.2f} (needs >= {MIN_MARGIN:g}) in float32 and bfloat16")
            break
        if step >= max_train_steps:
            raise DemoModelError(
                f"the demo model is not accepted after {step} training steps (max_train_steps): "
                + "; ".join(problems[:4]), fix=f"raise --max-train-steps, or change the facts in {__file__}")
        say(f"{step} training steps: not accepted yet ({problems[0]}); training on")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "README.md").write_text(
        "---\nlicense: apache-2.0\n---\n# tiny-llama\nA tiny Llama trained on "
        f"{len(facts)} sentences by llmops.demo.tiny_model (seed {seed}). For tests and demos only.\n"
    )
    (out_dir / "facts.json").write_text(json.dumps(facts, indent=1))
    record = {"seed": seed, "train_steps": step, "golden_checked": checked, "min_margin_required": MIN_MARGIN,
              "margins": margins, "torch_threads": torch.get_num_threads()}
    (out_dir / ACCEPTED).write_text(json.dumps(record, indent=1))
    return out_dir


def check_answers(model, tokenizer, expectations: list[Expectation]) -> tuple[list[str], dict[str, float]]:
    """Problems (empty: accepted) and the smallest top-1 margin per "prompt @ dtype" (see the module's rule)."""
    import torch

    from llmops.golden import ROLLOUT_MAX_TOKENS, check_answer

    problems, margins = [], {}
    for dtype in (torch.float32, torch.bfloat16):
        cast = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
        name = str(dtype).removeprefix("torch.")
        for e in expectations:
            prompt_ids = tokenizer(e.prompt).input_ids
            ids = tokenizer(f"{e.fact}</s>").input_ids
            if ids[:len(prompt_ids)] != prompt_ids:
                raise DemoModelError(f"golden prompt {e.prompt!r} does not tokenize as a prefix of {e.fact!r}",
                                     fix="end the prompt at a word boundary of the fact")
            end = _expectation_met_at(tokenizer, e, ids, len(prompt_ids))
            with torch.no_grad():
                logits = cast(torch.tensor([ids])).logits[0].float()
            smallest = float("inf")
            for position in range(len(prompt_ids) - 1, end - 1):
                expected = ids[position + 1]
                top = torch.topk(logits[position], 2)
                margin = float(logits[position, expected] - max(v for v, i in zip(top.values.tolist(),
                                                                                   top.indices.tolist(),
                                                                                   strict=True) if i != expected))
                smallest = min(smallest, margin)
                if margin < MIN_MARGIN:
                    problems.append(f"{e.prompt!r} in {name}: token {position + 2 - len(prompt_ids)} "
                                    f"{tokenizer.decode([expected])!r} has top-1 margin {margin:.2f} < {MIN_MARGIN:g}")
                    break
            margins[f"{e.prompt} @ {name}"] = round(smallest, 3)
            with torch.no_grad():
                out = cast.generate(torch.tensor([prompt_ids]), do_sample=False, pad_token_id=tokenizer.eos_token_id,
                                    max_new_tokens=e.golden.max_tokens or ROLLOUT_MAX_TOKENS)
            text = tokenizer.decode(out[0][len(prompt_ids):], skip_special_tokens=True)
            outcome = check_answer(e.golden, text)
            if not outcome.passed:
                problems.append(f"{e.prompt!r} in {name}: greedy answer {text!r} fails ({outcome.reason})")
    return problems, margins


def _expectation_met_at(tokenizer, e: Expectation, ids: list[int], start: int) -> int:
    """The length of `ids` up to the token whose text first meets the prompt's expectations: the tokens that
    decide the golden answer (later ones may be near-ties without changing it)."""
    from llmops.golden import check_answer

    for end in range(start + 1, len(ids) + 1):
        if check_answer(e.golden, tokenizer.decode(ids[start:end], skip_special_tokens=True)).passed:
            return end
    raise DemoModelError(f"the fact {e.fact!r} does not meet the expectations of golden prompt {e.prompt!r}",
                         fix=f"change the fact in {__file__} or the prompt's expectation")


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
