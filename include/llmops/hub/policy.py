"""Weight policy: which repo files may be downloaded, decided from the file list before any download.

- Weights: safetensors only by default. Pickle formats (.bin, .pt, .pth, .ckpt, .pkl) can run code when
  loaded; they are never downloaded unless the model sets `allow_pickle: true`, and a repo that offers
  only pickle weights is refused.
- Custom code: a repo with Python files, or whose config declares `auto_map`, needs trust_remote_code to
  load; it is refused unless the model sets `trust_remote_code: true` (then its .py files are fetched).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import PurePosixPath

from llmops.config.schema import ModelSpec
from llmops.hub.errors import WeightPolicyError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFE_WEIGHT_SUFFIXES = (".safetensors",)
CODE_SUFFIXES = (".py",)
CONFIG_FILES = ("config.json", "tokenizer_config.json")


@dataclass(frozen=True)
class DownloadPlan:
    files: list[str]
    allow_patterns: list[str]
    ignore_patterns: list[str]


def _patterns(files: list[str]) -> str:
    """The suffix patterns of `files`, as a user writes them in allow_patterns: "'*.bin'" or "'*.bin', '*.pt'"."""
    return ", ".join(repr(f"*{suffix}") for suffix in sorted({PurePosixPath(f).suffix for f in files}))


def weight_format(files: list[str]) -> str:
    """The format of a snapshot's weights: `safetensors`, or `pickle` when it has only pickle weights."""
    if any(f.endswith(SAFE_WEIGHT_SUFFIXES) for f in files):
        return "safetensors"
    return "pickle" if any(f.endswith(PICKLE_SUFFIXES) for f in files) else "none"


def _matches(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, pattern) for pattern in patterns)


def plan_download(spec: ModelSpec, sha: str, repo_files: list[str]) -> DownloadPlan:
    """Apply allow/ignore patterns and the weight policy to the repo's file list; raise if refused."""
    where = f"model {spec.name!r} ({spec.repo_id}@{sha})"
    allow = list(spec.allow_patterns)
    ignore = list(spec.ignore_patterns)
    code = sorted(f for f in repo_files if f.endswith(CODE_SUFFIXES))
    if code:
        if not spec.trust_remote_code:
            raise WeightPolicyError(
                f"{where} ships custom code ({', '.join(code[:5])}) that loading would execute; rule: repos that "
                "need trust_remote_code are refused", fix="use a repo without custom code, or set "
                f"trust_remote_code: true for {spec.name} in models.yaml after reviewing the code"
            )
        allow.append("*.py")
    if not spec.allow_pickle:
        ignore.extend(f"*{suffix}" for suffix in PICKLE_SUFFIXES)
    selected = sorted(f for f in repo_files if _matches(f, allow) and not _matches(f, ignore))
    safe = [f for f in selected if f.endswith(SAFE_WEIGHT_SUFFIXES)]
    pickled = [f for f in selected if f.endswith(PICKLE_SUFFIXES)]
    if not safe and not pickled:
        offered = sorted(f for f in repo_files if f.endswith(PICKLE_SUFFIXES))
        if offered and not spec.allow_pickle:
            raise WeightPolicyError(
                f"{where} offers only pickle weights ({', '.join(offered[:5])}); rule: safetensors only, because "
                "loading pickle can run arbitrary code", fix="use a repo (or revision) with .safetensors weights, "
                f"or set allow_pickle: true for {spec.name} in models.yaml and add {_patterns(offered)} to "
                "allow_patterns, if you trust the publisher"
            )
        usable = SAFE_WEIGHT_SUFFIXES + (PICKLE_SUFFIXES if spec.allow_pickle else ())
        weights = [f for f in repo_files if f.endswith(usable)]
        raise WeightPolicyError(
            f"{where}: no weight files match allow_patterns {spec.allow_patterns} (repo files: "
            f"{', '.join(repo_files[:10])})", fix=f"add {_patterns(weights) if weights else repr('*.safetensors')} "
            f"to allow_patterns of {spec.name} in models.yaml"
        )
    return DownloadPlan(files=selected, allow_patterns=allow, ignore_patterns=ignore)


def check_remote_code(spec: ModelSpec, sha: str, configs: dict[str, dict]) -> None:
    """Refuse configs that declare `auto_map` (custom classes) unless trust_remote_code is set."""
    if spec.trust_remote_code:
        return
    for name, config in configs.items():
        if isinstance(config, dict) and config.get("auto_map"):
            raise WeightPolicyError(
                f"model {spec.name!r} ({spec.repo_id}@{sha}): {name} declares auto_map "
                f"{sorted(config['auto_map'])}, i.e. custom code that loading would execute; rule: repos that need "
                "trust_remote_code are refused", fix="use a repo without custom code, or set trust_remote_code: "
                f"true for {spec.name} in models.yaml after reviewing the code"
            )
