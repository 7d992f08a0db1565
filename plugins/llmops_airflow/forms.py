"""Trigger-form building blocks shared by the DAGs' Params.

The React trigger form treats an empty string or an empty list as a missing value and disables the
Trigger button, so a field meant to be optional is nullable (`type=["null", ...]`), and "every item"
is spelled `all` in a drop-down. `chosen()` is the one place that reads such a value back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ALL = "all"


def registry_names(file: str, key: str) -> list[str]:
    """The `name`s listed under `key` in the registry file `file` (e.g. models.yaml, "models").

    Read at parse time for a drop-down: one small YAML read, no validation. A missing or broken registry
    gives no names (the form then offers only `all`); the tasks load and validate it and report the problem.
    """
    try:
        import yaml

        from llmops.settings import get_settings

        data = yaml.safe_load((Path(get_settings().config_dir) / file).read_text()) or {}
        return [str(item["name"]) for item in data.get(key) or [] if isinstance(item, dict) and item.get("name")]
    except Exception:  # noqa: BLE001 - never break DAG parsing over the registry
        return []


def one_or_all(file: str, key: str, *, title: str, description: str):
    """A drop-down Param of the registry's names plus `all` (the default)."""
    from airflow.sdk import Param

    return Param(ALL, type="string", enum=[ALL, *registry_names(file, key)], title=title, description=description)


def chosen(value: str | None) -> str | None:
    """A one-or-all field's value: None means every item (`all`, empty or null), else the name."""
    if value is None or str(value).strip() in ("", ALL):
        return None
    return str(value)


def _nullable(schema: dict) -> dict:
    """`schema` with null allowed at the top and in each property (an empty form field means "the default")."""
    schema = {k: v for k, v in schema.items() if k not in ("title", "default")}
    if "type" in schema:
        schema["type"] = ["null", schema["type"]]
    if "enum" in schema:
        schema["enum"] = [None, *schema["enum"]]
    if "properties" in schema:
        schema["properties"] = {name: _nullable(prop) for name, prop in schema["properties"].items()}
    return schema


def optional_typed(type_: Any, default: Any, *, title: str, description: str, **extra):
    """An optional Param whose JSON schema is the pydantic type's own, so the form refuses what the task
    would refuse with one definition of the bounds (e.g. `TrafficSteps`, `RolloutThresholds`)."""
    from airflow.sdk import Param
    from pydantic import TypeAdapter

    schema = _nullable(TypeAdapter(type_).json_schema())
    schema.pop("description", None)  # the Param's own description (the type's docstring is for developers)
    return Param(default, title=title, description=description, **extra, **schema)


def rollout_defaults_md(field: str) -> str:
    """Markdown lines `deployment: value` of one `rollout:` field (steps, thresholds, analysis_window_s) as
    deployments.yaml sets it (schema defaults filled in), for the trigger form: Airflow's form cannot pre-fill
    a field from another field's choice, so empty means "the registry's" and the form shows what that is.
    Read at parse time like `registry_names` (one YAML read, each entry parsed alone); empty when unreadable."""
    try:
        import yaml

        from llmops.config.schema import Deployment
        from llmops.settings import get_settings

        data = yaml.safe_load((Path(get_settings().config_dir) / "deployments.yaml").read_text()) or {}
        lines = []
        for item in data.get("deployments") or []:
            try:
                value = getattr(Deployment.model_validate(item).rollout, field)
            except Exception:  # noqa: BLE001 - an invalid entry is the task's to report
                continue
            if hasattr(value, "model_dump"):
                value = ", ".join(f"{k} {v:g}" if isinstance(v, int | float) else f"{k} {v}"
                                  for k, v in value.model_dump().items())
            lines.append(f"- `{item['name']}`: {value}")
        return "\n".join(lines)
    except Exception:  # noqa: BLE001 - never break DAG parsing over the registry
        return ""
