"""Helm values validated against a chart's values.schema.json vendored in tests/unit/data/schemas/ (SOURCE.md there
names the repository, path and commit of each).

`helm install` merges the chart's defaults with the -f files and validates the result against the chart's schema.
The Airflow chart's schema has no if/then or dependencies, so validating the kit's file alone checks the same
constraints on every key the file sets (the defaults are valid by release), and a `required` key is, if anything,
asked of the file more strictly. `strict=True` adds what Helm leaves out: where the schema lists `properties`
without saying whether others are allowed (the top level, each `serviceAccount`), a key it does not list is
refused. Helm accepts such a key and the chart ignores it, so a misspelt key would deploy without its setting.
The chart's own values.yaml passes the strict schema (checked when it was vendored).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).resolve().parents[1] / "unit" / "data" / "schemas"


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


@cache
def chart_schema(chart: str, version: str, *, strict: bool = False) -> dict:
    path = SCHEMAS / f"{chart}-chart-{version}-values.schema.json"
    if not path.exists():
        raise FileNotFoundError(f"no schema for the {chart} chart {version}: vendor that release's chart/values.schema.json "
                                f"as {path} and say where it comes from in {SCHEMAS / 'SOURCE.md'}")
    schema = json.loads(path.read_text())
    return _strict(schema) if strict else schema


def problems(values: dict, schema: dict) -> list[str]:
    """Every place `values` breaks `schema`, as `dotted.path: message` (empty when it validates)."""
    validator = jsonschema.validators.validator_for(schema)(schema)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<top>'}: {e.message}" for e in validator.iter_errors(values))
