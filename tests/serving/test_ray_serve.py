"""The Ray Serve deployment (``transferkit serve --ray``) answers like the plain server.

Slow: joins the session's local Ray cluster (``ray_cluster`` sets ``RAY_ADDRESS``, so the CLI
subprocess joins it instead of starting a second cluster).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import REPO, ServerProcess, free_port, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_ray_serve_answers_like_the_plain_server(
    ray_cluster, serving_onnx: Path, tmp_path: Path, china_jpg: bytes
) -> None:
    pytest.importorskip("ray.serve")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    log_path = tmp_path / "ray_serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "transferkit.cli",
                "serve",
                "--ray",
                "--replicas",
                "1",
                "--replica-cpus",
                "0.5",
                str(serving_onnx),
                "--port",
                str(port),
                "--max-batch-size",
                "4",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    plain = ServerProcess(serving_onnx, tmp_path / "plain.log")
    url = f"http://127.0.0.1:{port}"
    try:
        plain.wait_for("/v2/health/ready")

        def ray_ready() -> bool:
            assert proc.poll() is None, log_path.read_text(errors="replace")
            try:
                return httpx.get(url + "/v2/health/ready", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(
            ray_ready,
            "Ray Serve answers GET /v2/health/ready with 200",
            deadline_s=300,
            interval_s=1.0,
            detail=lambda: log_path.read_text(errors="replace"),
        )
        for path, kwargs in (
            ("/v1/predict", {"content": china_jpg, "headers": {"content-type": "image/jpeg"}}),
            (
                "/v2/models/digits_cnn/infer",
                {"content": china_jpg, "headers": {"content-type": "image/jpeg"}},
            ),
        ):
            a = httpx.post(url + path, timeout=60, **kwargs)
            b = httpx.post(plain.url + path, timeout=60, **kwargs)
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            if path == "/v1/predict":
                assert [p["label"] for p in a.json()["predictions"]] == [
                    p["label"] for p in b.json()["predictions"]
                ]
                np.testing.assert_allclose(
                    [p["probability"] for p in a.json()["predictions"]],
                    [p["probability"] for p in b.json()["predictions"]],
                    atol=1e-5,
                )
            else:
                np.testing.assert_allclose(
                    a.json()["outputs"][0]["data"], b.json()["outputs"][0]["data"], atol=1e-4
                )
        meta = httpx.get(url + "/v2/models/digits_cnn", timeout=30).json()
        assert meta["inputs"][0]["shape"] == [-1, 3, 32, 32]
        assert meta["parameters"]["intra_op_threads"] == 1  # = the replica's CPUs (at least 1)
    finally:
        plain.stop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
