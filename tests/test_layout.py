"""The import rules of the layout (README, DESIGN.md), checked over every module's source with `ast`:

- train/ (the trial side) never imports sweep/ (the driver) or tracking/ (MLflow);
- sweep/ never imports results/ (the reading side);
- results/ never imports sweep/ or Optuna;
- only tracking/ imports mlflow;
- the leaf modules (search/*.py, data/, terms/) never import sweep/, tracking/, results/ or cli/.

Every import counts, also one inside a function: a lazy import still ties the rooms together.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "search"

# room → the top-level modules / search subpackages it must never import
FORBIDDEN: dict[str, set[str]] = {
    "train": {"search.sweep", "search.tracking", "search.results", "search.cli", "mlflow", "optuna"},
    "sweep": {"search.results", "search.cli", "mlflow"},
    "results": {"search.sweep", "search.cli", "optuna", "mlflow"},
    "terms": {"search.sweep", "search.tracking", "search.results", "search.cli", "mlflow", "optuna"},
    "data": {"search.sweep", "search.tracking", "search.results", "search.cli", "mlflow", "optuna"},
    "leaf": {"search.sweep", "search.tracking", "search.results", "search.cli", "mlflow", "optuna"},
    "cli": {"mlflow"},
    "tracking": set(),
}


def imported(source: str) -> set[str]:
    """Every absolute module name a source imports (`from a.b import c` names a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def room(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1:
        return "package" if parts[0] == "__init__.py" else "leaf"
    return parts[0]


def violations(path: Path, source: str) -> list[str]:
    banned = FORBIDDEN.get(room(path), set())
    return sorted(f"{path.relative_to(PACKAGE.parent)} imports {name}" for name in imported(source)
                  if any(name == b or name.startswith(b + ".") for b in banned))


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_room_is_known():
    """A new room must be given its rules here, not slip past them."""
    assert {room(p) for p in MODULES} - {"package"} <= set(FORBIDDEN), "a new room under search/: add its rules"
    assert {"train", "sweep", "results", "tracking"} <= {room(p) for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layout(path):
    assert violations(path, path.read_text(encoding="utf-8")) == []


def test_the_checker_catches_each_rule():
    """Each rule fails on a module that breaks it, a lazy import included."""
    cases = {
        "train/x.py": "def f():\n    from search.sweep.driver import Driver\n",
        "sweep/x.py": "import search.results.pick\n",
        "results/x.py": "import optuna\n",
        "results/y.py": "from search.sweep import target\n",
        "devices.py": "from search.tracking import load_runs\n",
        "cli/x.py": "import mlflow.tracking\n",
    }
    for rel, src in cases.items():
        assert violations(PACKAGE / rel, src), rel
    assert violations(PACKAGE / "tracking/x.py", "import mlflow\n") == []
    assert violations(PACKAGE / "results/x.py", "from search.tracking import load_runs\n") == []
