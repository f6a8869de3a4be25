"""The registry belongs to both sides and never imports its plug-ins; importing `search.terms` registers them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import search.terms.registry as registry

BUILTIN = {"ce", "hint", "kd", "attention", "dkd", "dist"}


def test_the_registry_imports_no_term():
    tree = ast.parse(Path(registry.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m.startswith("search.terms")}, imported


def test_importing_the_package_registers_the_builtin_terms():
    # a fresh process: nothing else has imported a term module before
    out = subprocess.run([sys.executable, "-c", "import search.terms as t; print(','.join(sorted(t.TERMS)))"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert set(out.split(",")) == BUILTIN

