"""Load, validate and cross-check the registry files; turn pydantic errors into fixable messages."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from llmops.config.recipes import RECIPES
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
from llmops.errors import ECHO_LIMIT, ConfigError, shorten, validation_problem
from llmops.settings import PROJECT_ROOT, get_settings

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


#: file -> (its list key, the schema of one entry, what an entry is called)
_ENTRIES: dict[str, tuple[str, type[BaseModel], str]] = {
    "models.yaml": ("models", ModelSpec, "model"),
    "gpu_profiles.yaml": ("gpu_profiles", GpuProfile, "GPU profile"),
    "deployments.yaml": ("deployments", Deployment, "deployment"),
    "knowledge_bases.yaml": ("knowledge_bases", KnowledgeBase, "knowledge base"),
}


def _entry_key(list_key: str, index: int, raw: list | None) -> str:
    """`models[tiny-llama]` for an entry with a usable name, else `models[12]`."""
    entry = raw[index] if isinstance(raw, list) and index < len(raw) else None
    name = entry.get("name") if isinstance(entry, dict) else None
    if isinstance(name, str) and name.strip() and len(name) <= ECHO_LIMIT:
        return f"{list_key}[{name}]"
    return f"{list_key}[{index}]"


def _key_path(loc: tuple[Any, ...], raw: dict | None = None) -> str:
    path = ""
    for position, part in enumerate(loc):
        if position == 1 and isinstance(part, int) and raw is not None:
            path = _entry_key(str(loc[0]), part, raw.get(loc[0]))
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _problems(error: ValidationError, raw: dict | None = None) -> list[tuple[str, str, str]]:
    problems = []
    for item in error.errors():
        what, fix = validation_problem(item)
        problems.append((_key_path(item["loc"], raw), what, fix or _FIXES.get(item["type"], "")))
    return problems


def _check_file(path: Path) -> tuple[dict[str, BaseModel], list[tuple[str, str, str]], set[str] | None]:
    """Every problem of one registry file, its valid entries by name (the duplicates' first), and the names
    it lists, valid or not (None when the file cannot be read: references into it cannot be judged)."""
    schema = REGISTRY_FILES.get(path.name)
    if schema is None:
        return {}, [("", "is not a registry file", f"name it one of {', '.join(REGISTRY_FILES)}")], None
    if not path.is_file():
        return {}, [("", "does not exist", "create it (see include/config/ for examples)")], None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return {}, [(where, f"is not valid YAML ({getattr(exc, 'problem', exc)})",
                     "fix the indentation or quoting there")], None
    if not isinstance(data, dict):
        return {}, [("", "must be a YAML mapping", f"start the file with `{path.stem}:`")], None
    list_key, entry_schema, kind = _ENTRIES[path.name]
    raw_entries = data.get(list_key) if isinstance(data.get(list_key), list) else []
    names = {str(e["name"]) for e in raw_entries if isinstance(e, dict) and e.get("name") is not None}
    problems: list[tuple[str, str, str]] = []
    try:
        entries = list(getattr(schema.model_validate(data), list_key))
    except ValidationError as exc:
        problems.extend(_problems(exc, data))
        entries = []  # the entries that are valid on their own still take part in the checks below
        for raw in raw_entries:
            with contextlib.suppress(ValidationError):  # reported above, with the whole file's errors
                entries.append(entry_schema.model_validate(raw))
    by_name: dict[str, BaseModel] = {}
    for entry in entries:
        if entry.name in by_name:
            problems.append((f"{list_key}[{entry.name}].name", f"{kind} {shorten(entry.name)} is defined twice",
                             "rename or remove one"))
        else:
            by_name[entry.name] = entry
    return by_name, problems, names


def _raw_entries(path: Path, list_key: str) -> list[dict]:
    """The entries of a registry file as written ({} for one that is not a mapping, so indices stay); [] when the
    file cannot be read."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    entries = data.get(list_key) if isinstance(data, dict) else None
    return [e if isinstance(e, dict) else {} for e in entries] if isinstance(entries, list) else []


def entries_by_validity(path: Path) -> tuple[dict[str, BaseModel], dict[str, list[tuple[str, str, str]]]]:
    """One registry file entry by entry: its valid entries by name, and the problems of every other entry, keyed
    by the entry's name (or `#<index>` when it has no usable name). A problem of the whole file (unreadable,
    not YAML) raises ConfigError: no entry can be judged. A DAG file that builds one DAG per entry uses it so
    one broken entry costs only its own DAG."""
    path = Path(path)
    by_name, problems, _ = _check_file(path)
    list_key = _ENTRIES[path.name][0] if path.name in _ENTRIES else ""
    raw = _raw_entries(path, list_key)
    broken: dict[str, list[tuple[str, str, str]]] = {}
    for key, what, fix in problems:
        match = re.match(rf"^{re.escape(list_key)}\[([^\]]+)\]", key)
        if not match:
            raise ConfigError(str(path), problems)
        entry = match.group(1)
        name = f"#{entry}" if entry.isdigit() and not any(e.get("name") == entry for e in raw) else entry
        broken.setdefault(name, []).append((key, what, fix))
    valid = {name: entry for name, entry in by_name.items() if name not in broken}
    return valid, broken


def load_file(path: Path) -> BaseModel:
    """Parse and validate one registry file; raise ConfigError naming the file, every bad key and its fix."""
    path = Path(path)
    _, problems, _ = _check_file(path)
    if problems:
        raise ConfigError(str(path), problems)
    return REGISTRY_FILES[path.name].model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


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


def read_public_keys(entries: list[str], config_dir: Path, key: str) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Each entry as PEM text: inline PEM as written, a file path read (relative to `config_dir`; `~` and
    `$LLMOPS_HOME` expanded, the latter for the key the demo generates there). Returns the PEMs and a problem for each entry that cannot be read or is no public key."""
    pems, problems = [], []
    for index, entry in enumerate(entries):
        if entry.lstrip().startswith("-----BEGIN"):
            text, where = entry, "the inline key"
        else:
            home = str(get_settings().home)
            path = Path(entry.replace("${LLMOPS_HOME}", home).replace("$LLMOPS_HOME", home)).expanduser()
            path = path if path.is_absolute() else config_dir / path
            where = str(path)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append((f"{key}[{index}]", f"public key file {shorten(str(path))} cannot be read "
                                 f"({getattr(exc, 'strerror', None) or exc})", "give the path of the signing key's "
                                 ".pub file (relative to the config directory) or paste the PEM"))
                continue
        if "-----BEGIN PUBLIC KEY-----" not in text:
            problems.append((f"{key}[{index}]", f"{shorten(where)} is not a PEM public key (no -----BEGIN PUBLIC "
                             "KEY----- line)", "give the public half of the signing key, never the private key"))
            continue
        pems.append(text)
    return pems, problems


def check_registry(config_dir: Path | None = None, only: list[str] | None = None
                   ) -> tuple[Registry | None, list[ConfigError]]:
    """Every problem of every registry file at once (schema, duplicates, references between files).

    `only`: check these files (names such as `knowledge_bases.yaml`); the others are read only as the targets
    of references, and references into a file that is itself invalid or missing are not judged. Returns the
    registry when nothing is wrong, and one ConfigError per file with problems.
    """
    config_dir = Path(config_dir or get_settings().config_dir)
    unknown = sorted(set(only or []) - set(REGISTRY_FILES))
    if unknown:
        return None, [ConfigError(", ".join(unknown), [("", "is not a registry file",
                                                        f"name one of {', '.join(REGISTRY_FILES)}")])]
    checked = {name: _check_file(config_dir / name) for name in REGISTRY_FILES}
    tables = {name: entries for name, (entries, _, _) in checked.items()}
    problems = {name: list(found) for name, (_, found, _) in checked.items()}
    listed = {name: names for name, (_, _, names) in checked.items()}
    models, profiles = tables["models.yaml"], tables["gpu_profiles.yaml"]

    def unknown(name: str, file: str) -> bool:  # not listed at all (an invalid entry is reported in its file)
        return listed[file] is not None and name not in listed[file]

    if listed["gpu_profiles.yaml"] is not None:
        # Unknown profiles are looked up in every entry as written, also in one with other errors: a user fixing
        # those must not find this one only on the next run.
        raw_models = _raw_entries(config_dir / "models.yaml", "models")
        for index, raw_model in enumerate(raw_models):
            raw_targets = raw_model.get("targets") if isinstance(raw_model.get("targets"), list) else []
            for j, raw_target in enumerate(raw_targets):
                names = raw_target.get("gpu_profiles") if isinstance(raw_target, dict) else None
                for k, profile_name in enumerate(names if isinstance(names, list) else []):
                    if isinstance(profile_name, str) and unknown(profile_name, "gpu_profiles.yaml"):
                        entry = _entry_key("models", index, raw_models)
                        problems["models.yaml"].append((
                            f"{entry}.targets[{j}].gpu_profiles[{k}]",
                            f"GPU profile {shorten(profile_name)} is not in gpu_profiles.yaml",
                            f"use one of {', '.join(sorted(listed['gpu_profiles.yaml'] or []))}"))
        for model in models.values():
            for j, target in enumerate(model.targets):
                recipe = RECIPES[target.recipe]
                for k, profile_name in enumerate(target.gpu_profiles):
                    key = f"models[{model.name}].targets[{j}].gpu_profiles[{k}]"
                    profile = profiles.get(profile_name)
                    if profile is not None and not recipe.runs_on(profile.compute_capability):
                        problems["models.yaml"].append((
                            key, f"recipe {recipe.name} needs compute capability {recipe.min_compute_capability}+, "
                                 f"but {profile_name} ({profile.gpu}) has {profile.compute_capability}",
                            "remove the profile from this target or pick a recipe it can run"))
    # references of every deployment as written, also of one with other errors (see the models above)
    raw_deployments = _raw_entries(config_dir / "deployments.yaml", "deployments")
    for index, raw in enumerate(raw_deployments):
        entry = _entry_key("deployments", index, raw_deployments)
        model_name, profile_name = raw.get("model"), raw.get("gpu_profile")
        if isinstance(model_name, str) and unknown(model_name, "models.yaml"):
            problems["deployments.yaml"].append((
                f"{entry}.model", f"model {shorten(model_name)} is not in models.yaml",
                f"use one of {', '.join(sorted(listed['models.yaml'] or []))}"))
        if isinstance(profile_name, str) and unknown(profile_name, "gpu_profiles.yaml"):
            problems["deployments.yaml"].append((
                f"{entry}.gpu_profile", f"GPU profile {shorten(profile_name)} is not in gpu_profiles.yaml",
                f"use one of {', '.join(sorted(listed['gpu_profiles.yaml'] or []))}"))
    for name, deployment in list(tables["deployments.yaml"].items()):
        keys, key_problems = read_public_keys(deployment.signing.public_keys, config_dir,
                                              f"deployments[{deployment.name}].signing.public_keys")
        problems["deployments.yaml"] += key_problems
        if keys != deployment.signing.public_keys:  # files read once: the rest of the code (and pods) get PEMs
            deployment = deployment.model_copy(
                update={"signing": deployment.signing.model_copy(update={"public_keys": keys})})
            tables["deployments.yaml"][name] = deployment
        profile = profiles.get(deployment.gpu_profile)
        if deployment.spot and profile is not None and profile.spot is None:
            problems["deployments.yaml"].append((
                f"deployments[{deployment.name}].spot",
                f"spot is true but GPU profile {deployment.gpu_profile} has no spot pool",
                f"add `spot` to {deployment.gpu_profile} in gpu_profiles.yaml or set spot: false"))

    for kb in tables["knowledge_bases.yaml"].values():
        if kb.source.kind == "local":
            folder = Path(kb.source.uri) if Path(kb.source.uri).is_absolute() else PROJECT_ROOT / kb.source.uri
            if not folder.is_dir():
                problems["knowledge_bases.yaml"].append((
                    f"knowledge_bases[{kb.name}].source.uri",
                    f"source directory {shorten(kb.source.uri)} does not exist ({folder})",
                    "create it, or point uri at an existing directory (relative to the project root, or absolute)"))

    errors = [ConfigError(str(config_dir / name), found) for name, found in problems.items()
              if found and (not only or name in only)]
    if errors or any(problems.values()):
        return None, errors
    return Registry(config_dir, models, profiles, tables["deployments.yaml"], tables["knowledge_bases.yaml"]), []


def load_registry(config_dir: Path | None = None) -> Registry:
    """Load all registry files from `config_dir` (default: settings) and check references between them.

    Raises one ConfigError with every problem of every file."""
    registry, errors = check_registry(config_dir)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        config_dir = Path(config_dir or get_settings().config_dir)
        raise ConfigError(str(config_dir), [(f"{Path(e.source).name}: {key}" if key else Path(e.source).name,
                                             what, fix) for e in errors for key, what, fix in e.problems])
    assert registry is not None
    return registry
