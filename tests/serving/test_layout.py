"""The serving package's shape: the runtime imports no HTTP library; modules and functions stay
small enough to read (STYLE.md: one job each)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

SERVING = REPO / "transferkit" / "serving"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # physical lines, the ``def`` line to the end, docstring included

#: The layers below the HTTP layer: they must import without FastAPI, Starlette or uvicorn.
NO_HTTP = ["runtime", "batching", "model", "limits", "errors", "oip", "repository"]


def test_the_runtime_imports_no_http_library() -> None:
    code = (
        "import sys\n"
        + "".join(f"import transferkit.serving.{m}\n" for m in NO_HTTP)
        + "http = sorted(m for m in ('fastapi', 'starlette', 'uvicorn') if m in sys.modules)\n"
        + "assert not http, http\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def _functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text())
    return [
        (f"{path.name}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


@pytest.mark.parametrize("path", sorted(SERVING.glob("*.py")), ids=lambda p: p.name)
def test_module_and_function_sizes(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines"
    long = [(name, n) for name, n in _functions(path) if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
