"""Registry files (include/config/*.yaml) as validated pydantic models.

    from llmops.config import load_registry
    registry = load_registry()            # all four files, cross-checked
    registry.models["tiny-llama"].targets

Every problem is reported as `file: key.path: what is wrong / fix: what to do`. The recipe catalogue the
model targets are checked against is `llmops.config.recipes`.
"""

from llmops.config.loader import REGISTRY_FILES, Registry, load_file, load_registry
from llmops.config.schema import (
    Deployment,
    GpuProfile,
    KnowledgeBase,
    ModelSpec,
    ModelTarget,
)

__all__ = [
    "REGISTRY_FILES",
    "Deployment",
    "GpuProfile",
    "KnowledgeBase",
    "ModelSpec",
    "ModelTarget",
    "Registry",
    "load_file",
    "load_registry",
]
