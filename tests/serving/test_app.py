"""The FastAPI app in this process, through ``httpx.ASGITransport``, on the real tiny ONNX model.

No socket and no subprocess: these tests are about the app's answers (lifecycle, drain, limits,
route pairs), not about uvicorn.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import in_process

from transferkit.serving.app import create_app
from transferkit.serving.limits import ServingLimits
from transferkit.serving.model import OnnxClassifier


@pytest.fixture(scope="module")
def clf(serving_onnx: Path) -> OnnxClassifier:
    return OnnxClassifier(serving_onnx, intra_op_threads=1)


def test_a_model_that_fails_to_load_leaves_the_server_live_but_not_ready(
    tmp_path: Path, china_jpg: bytes
) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_text("this is not an ONNX file")
    app = create_app(bad, limits=ServingLimits(intra_op_threads=1))

    async def main() -> None:
        async with in_process(app) as c:
            assert (await c.get("/v2/health/live")).status_code == 200
            r = await c.get("/v2/health/ready")
            assert r.status_code == 503
            assert "'broken' version 1 failed to load" in r.json()["error"]
            r = await c.post(
                "/v1/predict", content=china_jpg, headers={"content-type": "image/jpeg"}
            )
            assert r.status_code == 503 and "failed to load" in r.json()["error"]
            assert (await c.get("/v1/model")).status_code == 503
            assert (await c.get("/v2/models/broken/ready")).status_code == 503

    asyncio.run(main())
