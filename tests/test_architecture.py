"""The core stays pure; the layers only depend downwards (import-linter checks imports too)."""

from __future__ import annotations

import ast
from pathlib import Path

import adapter.core

CORE = Path(adapter.core.__file__).parent
FORBIDDEN_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
    ("time", "time"),
}
FORBIDDEN_NAMES = {"open", "print", "input", "getenv", "environ"}
FORBIDDEN_MODULES = {
    "os",
    "io",
    "pathlib",
    "logging",
    "json",
    "requests",
    "socket",
    "time",
    "random",
    "sqlite3",
    "subprocess",
    "urllib",
    "http",
    "tomllib",
    "fhir",
}


def _core_files():
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 8
    return files


def test_core_reads_no_clock_and_does_no_io():
    problems = []
    for path in _core_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                if (node.value.id, node.attr) in FORBIDDEN_CALLS:
                    problems.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
            if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
                problems.append(f"{path.name}:{node.lineno} {node.id}")
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                )
                for name in names:
                    if name.split(".")[0] in FORBIDDEN_MODULES:
                        problems.append(f"{path.name}:{node.lineno} import {name}")
    assert problems == []


def test_core_has_no_numeric_thresholds():
    """Clinical numbers live in mappings/: the core may only hold 0, 1 and 100 (percent)."""
    # 2/12/40: date arithmetic and identifier length; 18: the most digits a versionId is read
    # as a count (labs.numeric_version), a parsing bound, not a clinical number
    allowed = {0, 1, 100, 2, 12, 24, 40, 18}
    found = []
    for path in _core_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and type(node.value) in (int, float):
                if node.value not in allowed:
                    found.append(f"{path.name}:{node.lineno} {node.value}")
    assert found == []
