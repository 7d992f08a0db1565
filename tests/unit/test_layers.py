"""The layer rules: include/llmops never imports Airflow or the plugins, and its packages import one way only
(the import-linter contracts in pyproject.toml: layers, independence, forbidden)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("airflow", "llmops_airflow")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _lint_imports(include: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the project's contracts over the package under `include` (what `make lint` runs)."""
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=include.parent, capture_output=True, text=True,
                          env={"PYTHONPATH": str(include), "PATH": "/usr/bin:/bin"})


def test_include_llmops_never_imports_airflow():
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "include" / "llmops").rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offenders == []


def test_the_ast_check_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from airflow.sdk import dag\nimport os\n")
    assert "airflow.sdk" in _imports(bad)


def test_import_linter_contracts_hold():
    """Every contract (layers, independence, no Airflow), following indirect and function-level imports too."""
    result = _lint_imports(ROOT / "include")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# A copy of include/llmops with one import added where it breaks a rule; the contract that must say so.
VIOLATIONS = {
    "config reads the catalogue from quantize": (
        "config/schema.py", "from llmops.quantize import build\n", "include/llmops layers"),
    "a serving backend imports the rollout driver": (
        "serving/local.py", "import llmops.rollout.driver\n", "include/llmops layers"),
    "a pipeline imports another pipeline": (
        "kb/__init__.py", "from llmops.refresh import plan\n", "include/llmops layers"),
    "a lazy import closes a cycle": (
        "artefacts/store.py", "def _backend():\n    from llmops.artefacts.local import FileStore\n    return FileStore\n",
        "artefacts: open_store (uri) above the store backends"),
    "one serving backend imports the other": (
        "serving/kubernetes.py", "from llmops.serving import local\n", "the serving backends never meet"),
    "a new top-level module nobody placed": (
        "unplaced.py", "", "include/llmops layers"),
    "the domain imports Airflow": (
        "rollout/plan.py", "import airflow\n", "include/llmops decides and never imports Airflow"),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_import_linter_catches_a_violation(tmp_path, case):
    relative, line, contract = VIOLATIONS[case]
    include = tmp_path / "include"
    shutil.copytree(ROOT / "include" / "llmops", include / "llmops", ignore=shutil.ignore_patterns("__pycache__"))
    target = include / "llmops" / relative
    assert target.exists() or case == "a new top-level module nobody placed", f"{relative} moved: update VIOLATIONS"
    target.write_text((target.read_text() if target.exists() else "") + "\n" + line)
    result = _lint_imports(include)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1].replace("\n", " ")
    assert " ".join(contract.split()) in " ".join(broken.split()), result.stdout
