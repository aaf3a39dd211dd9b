"""The package's shape: every module and function of ``transferkit/`` small enough to read
(STYLE.md: one job each). A function may be longer only with ``# long: <reason>`` on its ``def``
line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = REPO / "transferkit"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # physical lines, the ``def`` line to the end, docstring included
MODULES = sorted(PACKAGE.rglob("*.py"))


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """``(name:line, length)`` of each function over ``limit`` physical lines whose ``def`` line
    does not carry ``# long:``."""
    lines = source.splitlines()
    return [
        (f"{node.name}:{node.lineno}", node.end_lineno - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > limit
        and "# long:" not in lines[node.lineno - 1]
    ]


def test_the_check_sees_a_long_function_and_its_exception():
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    assert long_functions(f"def f():\n{body}") == [("f:1", 61)]
    assert long_functions(f"def f():  # long: a table\n{body}") == []
    assert long_functions(f"def f():\n{body[: -len('    x59 = 59')]}") == []
    assert long_functions(
        f"class C:\n    async def g(self):\n{body}".replace("\n    x", "\n        x")
    )


def test_the_package_is_found():
    assert len(MODULES) > 40 and PACKAGE / "cli" / "__init__.py" in MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path: Path) -> None:
    source = path.read_text()
    lines = len(source.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(REPO)} has {lines} lines"
    long = long_functions(source)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
