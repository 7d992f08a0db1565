"""Load, validate and cross-check the registry files; turn pydantic errors into fixable messages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmops.config.schema import (
    Deployment,
    DeploymentsFile,
    GpuProfile,
    GpuProfilesFile,
    KnowledgeBase,
    KnowledgeBasesFile,
    ModelsFile,
    ModelSpec,
)
from llmops.errors import ECHO_LIMIT, ConfigError, shorten
from llmops.quantize.recipes import RECIPES
from llmops.settings import get_settings

REGISTRY_FILES: dict[str, type[BaseModel]] = {
    "models.yaml": ModelsFile,
    "gpu_profiles.yaml": GpuProfilesFile,
    "deployments.yaml": DeploymentsFile,
    "knowledge_bases.yaml": KnowledgeBasesFile,
}

_FIXES = {
    "missing": "add the key",
    "extra_forbidden": "remove the key or check its spelling",
    "literal_error": "use one of the listed values",
    "string_pattern_mismatch": "use lowercase letters, digits and '-' (names end up in Kubernetes and Milvus)",
    "greater_than_equal": "raise the value",
    "less_than_equal": "lower the value",
    "greater_than": "raise the value",
    "too_short": "add at least one entry",
    "int_parsing": "write a whole number",
    "float_parsing": "write a number",
    "bool_parsing": "write true or false",
    "finite_number": "write a finite number (NaN and infinity are not allowed)",
    "string_too_long": "shorten it",
    "too_long": "remove entries",
    "list_type": "write a YAML list",
    "dict_type": "write a YAML mapping",
    "model_type": "write a YAML mapping",
}


def _key_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _problems(error: ValidationError) -> list[tuple[str, str, str]]:
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        what, _, fix = message.partition("; fix: ")
        problems.append((_key_path(item["loc"]), what, fix or _FIXES.get(item["type"], "")))
    return problems


def load_file(path: Path) -> BaseModel:
    """Parse and validate one registry file; raise ConfigError naming the file, key and fix."""
    schema = REGISTRY_FILES.get(path.name)
    if schema is None:
        raise ConfigError(str(path), [("", "is not a registry file", f"name it one of {', '.join(REGISTRY_FILES)}")])
    if not path.is_file():
        raise ConfigError(str(path), [("", "does not exist", "create it (see include/config/ for examples)")])
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(path), [(where, f"is not valid YAML ({getattr(exc, 'problem', exc)})",
                                       "fix the indentation or quoting there")]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), [("", "must be a YAML mapping", f"start the file with `{path.stem}:`")])
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(path), _problems(exc)) from None


def _by_name(items: list, kind: str, file: str, key: str) -> dict:
    seen: dict = {}
    problems = []
    for index, item in enumerate(items):
        if item.name in seen:
            problems.append((f"{key}[{index}].name", f"{kind} {item.name!r} is defined twice", "rename or remove one"))
        seen[item.name] = item
    if problems:
        raise ConfigError(file, problems)
    return seen


@dataclass(frozen=True)
class Registry:
    config_dir: Path
    models: dict[str, ModelSpec]
    gpu_profiles: dict[str, GpuProfile]
    deployments: dict[str, Deployment]
    knowledge_bases: dict[str, KnowledgeBase]

    def model(self, name: str) -> ModelSpec:
        return _lookup(self.models, name, "model", self.config_dir / "models.yaml")

    def gpu_profile(self, name: str) -> GpuProfile:
        return _lookup(self.gpu_profiles, name, "GPU profile", self.config_dir / "gpu_profiles.yaml")

    def deployment(self, name: str) -> Deployment:
        return _lookup(self.deployments, name, "deployment", self.config_dir / "deployments.yaml")

    def knowledge_base(self, name: str) -> KnowledgeBase:
        return _lookup(self.knowledge_bases, name, "knowledge base", self.config_dir / "knowledge_bases.yaml")


def _lookup(table: dict, name: str, kind: str, file: Path):
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise ConfigError(str(file), [("", f"has no {kind} named {shorten(name)} (known: {known})",
                                       f"pick a known {kind}" + (f" or add {name!r} to {file.name}"
                                                                 if len(repr(name)) <= ECHO_LIMIT else ""))])
    return table[name]


def load_registry(config_dir: Path | None = None) -> Registry:
    """Load all registry files from `config_dir` (default: settings) and check references between them."""
    config_dir = Path(config_dir or get_settings().config_dir)
    files = {name: load_file(config_dir / name) for name in REGISTRY_FILES}
    models = _by_name(files["models.yaml"].models, "model", str(config_dir / "models.yaml"), "models")
    profiles = _by_name(files["gpu_profiles.yaml"].gpu_profiles, "GPU profile",
                        str(config_dir / "gpu_profiles.yaml"), "gpu_profiles")
    deployments = _by_name(files["deployments.yaml"].deployments, "deployment",
                           str(config_dir / "deployments.yaml"), "deployments")
    kbs = _by_name(files["knowledge_bases.yaml"].knowledge_bases, "knowledge base",
                   str(config_dir / "knowledge_bases.yaml"), "knowledge_bases")

    problems: list[tuple[str, str, str]] = []
    for i, model in enumerate(files["models.yaml"].models):
        for j, target in enumerate(model.targets):
            recipe = RECIPES[target.recipe]
            for k, profile_name in enumerate(target.gpu_profiles):
                key = f"models[{i}].targets[{j}].gpu_profiles[{k}]"
                profile = profiles.get(profile_name)
                if profile is None:
                    problems.append((key, f"GPU profile {shorten(profile_name)} is not in gpu_profiles.yaml",
                                     f"use one of {', '.join(sorted(profiles))}"))
                elif not recipe.runs_on(profile.compute_capability):
                    problems.append((key, f"recipe {recipe.name} needs compute capability "
                                          f"{recipe.min_compute_capability}+, but {profile_name} "
                                          f"({profile.gpu}) has {profile.compute_capability}",
                                     "remove the profile from this target or pick a recipe it can run"))
    if problems:
        raise ConfigError(str(config_dir / "models.yaml"), problems)

    for i, deployment in enumerate(files["deployments.yaml"].deployments):
        if deployment.model not in models:
            problems.append((f"deployments[{i}].model", f"model {shorten(deployment.model)} is not in models.yaml",
                             f"use one of {', '.join(sorted(models))}"))
        if deployment.gpu_profile not in profiles:
            problems.append((f"deployments[{i}].gpu_profile",
                             f"GPU profile {shorten(deployment.gpu_profile)} is not in gpu_profiles.yaml",
                             f"use one of {', '.join(sorted(profiles))}"))
    if problems:
        raise ConfigError(str(config_dir / "deployments.yaml"), problems)

    return Registry(config_dir, models, profiles, deployments, kbs)
