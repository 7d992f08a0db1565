"""The manifest of a published artefact version and the prefix it lives under.

A version is `models/<model>/<sha>/<runtime>-<recipe>/`; its `manifest.json` is written last, so a
prefix without a manifest is not a version. Readers (rollout pre-flight) trust only the manifest.
"""

from __future__ import annotations

import os
import posixpath
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmops.hashing import sha256_file

MANIFEST_NAME = "manifest.json"
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: fields that say when and by whom a version was built, not what it is (ignored by `same_content`)
BOOKKEEPING_FIELDS = frozenset({"created_at", "built_by", "uri"})


def _check_part(kind: str, value: str) -> None:
    if not isinstance(value, str) or not _PART_RE.match(value) or value in {".", ".."}:
        raise ValueError(
            f"{kind} {value!r} cannot be part of an artefact prefix; "
            "fix: use letters, digits, '.', '_' and '-' only (no '/')"
        )


def check_relative_path(value: object, what: str = "path") -> str:
    """`value` as a store-relative POSIX path that cannot leave its base: relative, normalised, no `..`,
    no empty or `.` parts, no backslashes, no drive letters or control characters. ValueError otherwise."""
    problem = None
    if not isinstance(value, str) or not value:
        problem = "is empty or not a string"
    elif value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        problem = "is absolute"
    elif "\\" in value:
        problem = "contains a backslash"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        problem = "contains a control character"
    elif ".." in value.split("/"):
        problem = "contains a '..' part"
    elif posixpath.normpath(value) != value or value.endswith("/"):
        problem = "is not normalised (empty or '.' parts, or a trailing '/')"
    if problem:
        shown = repr(value)[:120] + ("..." if len(repr(value)) > 120 else "")
        raise ValueError(f"{what} {shown} {problem}; fix: use a relative POSIX path inside the artefact "
                         "(e.g. 'config.json' or 'sub/model.safetensors')")
    return value


def artefact_prefix(model: str, sha: str, runtime: str, recipe: str) -> str:
    """The immutable prefix of one artefact version: `models/<model>/<sha>/<runtime>-<recipe>`."""
    _check_part("model", model)
    if not isinstance(sha, str) or not SHA_RE.match(sha):
        raise ValueError(
            f"source sha {sha!r} is not a 40-hex commit sha; fix: resolve the revision first "
            "(llmops.hub.resolve_revision) and pass the sha"
        )
    _check_part("runtime", runtime)
    _check_part("recipe", recipe)
    return f"models/{model}/{sha}/{runtime}-{recipe}"


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="POSIX path relative to the version prefix (and to a fetch destination)")
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    stored_as: str | None = Field(
        default=None, description="where the bytes live, relative to the version prefix (set by the store at "
        "publish: data/<sha256>/<path>, so two publishers of one version never write the same key with different "
        "bytes); None in manifests written before, whose bytes live at `path`")
    checksums: dict[str, str] = Field(
        default={}, description="what the store itself keeps for the object, recorded at publish and compared by "
        "rollout pre-flight: crc32 (S3 ChecksumMode), crc64ecma (OSS), sha256 (file store)")

    @field_validator("path", "stored_as")
    @classmethod
    def _confined(cls, value: str | None, info) -> str | None:
        return None if value is None else check_relative_path(value, f"manifest file {info.field_name}")

    @property
    def key(self) -> str:
        """The object's key relative to the version prefix."""
        return self.stored_as or self.path


def stored_key(sha256: str, path: str) -> str:
    """Where publish puts a file's bytes below the version prefix: content-addressed, so a key only ever
    holds one content, and a retry of the same bytes finds (and resumes) what an earlier attempt sent."""
    return f"data/{sha256}/{path}"


class BuiltBy(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None


class Manifest(BaseModel):
    """What a published artefact version is, where it came from and what it needs to run."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    schema_version: int = 1
    model: str = Field(description="model name from models.yaml")
    source_repo: str = Field(description="Hugging Face repo id the weights came from")
    source_sha: str = Field(pattern=r"^[0-9a-f]{40}$", description="resolved commit sha")
    source_revision: str | None = Field(default=None, description="branch or tag that resolved to the sha")
    recipe: str
    recipe_params: dict[str, Any] = {}
    tool_versions: dict[str, str] = {}
    serving_runtime: str = Field(description="vllm or tensorrt-llm")
    quantization_format: str
    min_compute_capability: float = Field(ge=0.0, le=20.0)
    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int = Field(ge=1)
    files: list[FileEntry]
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    built_by: BuiltBy = BuiltBy()
    uri: str | None = Field(default=None, description="where manifest.json is published (set by the store)")

    @property
    def prefix(self) -> str:
        return artefact_prefix(self.model, self.source_sha, self.serving_runtime, self.recipe)

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files)

    def content(self) -> dict[str, Any]:
        """The manifest without bookkeeping fields (and without where each store keeps the bytes): two builds
        of one version compare equal on this exactly when their files' bytes are the same."""
        content = self.model_dump(mode="json", exclude=set(BOOKKEEPING_FIELDS))
        content["files"] = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files]
        return content

    def same_content(self, other: Manifest) -> bool:
        return self.content() == other.content()

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"

    def asset_extra(self) -> dict[str, Any]:
        """Small, JSON-able lineage for an Airflow Asset event's `extra` (the URI, not the files)."""
        return {
            "manifest_uri": self.uri,
            "model": self.model,
            "source_repo": self.source_repo,
            "source_sha": self.source_sha,
            "source_revision": self.source_revision,
            "recipe": self.recipe,
            "serving_runtime": self.serving_runtime,
            "quantization_format": self.quantization_format,
            "min_compute_capability": self.min_compute_capability,
            "built_by": self.built_by.model_dump(mode="json"),
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def for_directory(cls, local_dir: Path, **fields: Any) -> Manifest:
        """Build a manifest whose `files` are every file under `local_dir`, hashed by streaming.

        Hidden paths (`.cache/` left by snapshot_download, `.incomplete` files) and an existing
        manifest.json are not part of the artefact.
        """
        return cls(files=scan_directory(local_dir), **fields)


def scan_directory(local_dir: Path) -> list[FileEntry]:
    root = Path(local_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; fix: pass the directory the checkpoint was written to")
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            relative = path.relative_to(root).as_posix()
            if name.startswith(".") or name.endswith(".incomplete") or relative == MANIFEST_NAME:
                continue
            digest, size = sha256_file(path)
            entries.append(FileEntry(path=relative, size=size, sha256=digest))
    if not entries:
        raise ValueError(f"{root} holds no files; fix: point at the directory the checkpoint was written to")
    return sorted(entries, key=lambda entry: entry.path)
