"""The serving package's layers: the runtime imports no HTTP library (sizes: tests/test_layout.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO

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
