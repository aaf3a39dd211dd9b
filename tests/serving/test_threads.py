"""CPU threads of served models: the default splits the CPUs across the models served."""

from __future__ import annotations

from pathlib import Path

import httpx
from helpers import ServerProcess


def test_two_models_share_the_cpus_by_default(serving_onnx: Path, tmp_path: Path) -> None:
    """``transferkit serve A B`` with default threads gives each model CPUs // 2 intra-op
    threads (at least 1, at most 4): with min(CPUs, 4) each, two models on 2 cores ran four
    threads and reached half the req/s of ``--threads 1`` at 32 clients (bench/serve.py)."""
    import os
    import shutil

    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    shutil.copy(serving_onnx, a)
    shutil.copy(serving_onnx, b)
    cpus = len(os.sched_getaffinity(0))
    want = max(1, min(cpus // 2, 4))
    srv = ServerProcess(a, tmp_path / "server.log", str(b))
    try:
        srv.wait_for("/v2/health/ready")
        with httpx.Client(base_url=srv.url, timeout=30.0) as c:
            for name in ("a", "b"):
                meta = c.get("/v1/model", params={"model": name}).json()
                assert meta["intra_op_threads"] == want, (name, meta["intra_op_threads"], cpus)
    finally:
        srv.stop()
