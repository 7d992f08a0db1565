"""Errors carry their fix as data, and every domain error is an LlmopsError defined in an errors module."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from llmops.errors import ConfigError, InvalidValue, LlmopsError

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "include" / "llmops"


def _modules():
    for path in sorted(LIBRARY.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def _exception_classes():
    """(module name, class name, file) of every class in include/llmops whose bases include an exception."""
    for path, tree in _modules():
        module = ".".join(("llmops", *path.relative_to(LIBRARY).with_suffix("").parts)).removesuffix(".__init__")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                cls = getattr(importlib.import_module(module), node.name, None)
                if isinstance(cls, type) and issubclass(cls, BaseException):
                    yield module, node.name, path


def test_every_domain_error_is_an_llmops_error_in_an_errors_module():
    found = list(_exception_classes())
    assert len(found) > 20
    outside = [f"{module}.{name}" for module, name, path in found if path.name != "errors.py"]
    not_ours = [f"{module}.{name}" for module, name, _ in found
                if not issubclass(getattr(importlib.import_module(module), name), LlmopsError)]
    assert outside == [] and not_ours == []


def _message_literals(call: ast.Call) -> str:
    first = call.args[0] if call.args else None
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return first.value
    if isinstance(first, ast.JoinedStr):
        return "".join(v.value for v in first.values if isinstance(v, ast.Constant))
    return ""


def test_no_error_message_writes_its_fix_as_prose_and_nobody_splits_one():
    prose, splits = [], []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and "fix: " in _message_literals(node.exc):
                prose.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr in ("split", "partition", "rsplit") \
                    and any(isinstance(a, ast.Constant) and "fix:" in str(a.value) for a in node.args):
                splits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert prose == [], "pass the fix as fix=..., not inside the message"
    assert splits == [], "read exc.fix / exc.what instead of splitting a message"


def test_the_fix_is_data_and_the_message_still_says_it():
    error = InvalidValue("overlap (900) must be below size (800)", fix="lower overlap")
    assert (error.what, error.fix) == ("overlap (900) must be below size (800)", "lower overlap")
    assert str(error) == "overlap (900) must be below size (800); fix: lower overlap"
    assert isinstance(error, ValueError) and str(LlmopsError("no fix")) == "no fix"


def test_a_validator_fix_reaches_the_registry_problem_unsplit(tmp_path):
    from llmops.config import load_file

    registry = tmp_path / "knowledge_bases.yaml"
    registry.write_text("knowledge_bases:\n  - name: k\n    alias: k\n    source: {uri: docs}\n"
                        "    chunking: {size: 100, overlap: 200}\n")
    with pytest.raises(ConfigError) as refused:
        load_file(registry)
    [(key, what, fix)] = refused.value.problems
    assert (what, fix) == ("overlap (200) must be below size (100)", "lower overlap")
    assert key.endswith("chunking")
