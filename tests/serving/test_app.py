"""The FastAPI app in this process, through ``httpx.ASGITransport``, on the real tiny ONNX model.

No socket and no subprocess: these tests are about the app's answers (lifecycle, drain, limits,
route pairs), not about uvicorn.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from helpers import in_process

from transferkit.serving.app import create_app
from transferkit.serving.limits import ServingLimits
from transferkit.serving.model import OnnxClassifier
from transferkit.serving.repository import ModelSource


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


def test_while_draining_a_request_that_reaches_the_app_gets_503_and_connection_close(
    clf: OnnxClassifier, china_jpg: bytes
) -> None:
    app = create_app(clf, limits=ServingLimits(max_batch_size=1))

    async def main() -> None:
        async with in_process(app) as c:
            assert (await c.get("/v2")).status_code == 200
            app.state.runtime.draining = True  # what the server does as shutdown starts
            for method, path in (
                ("GET", "/v2"),
                ("GET", "/v2/models/digits_cnn"),
                ("POST", "/v1/predict"),
                ("POST", "/v2/models/digits_cnn/infer"),
            ):
                r = await c.request(
                    method, path, content=china_jpg, headers={"content-type": "image/jpeg"}
                )
                assert r.status_code == 503, (path, r.text)
                assert r.headers["retry-after"] == "1" and r.headers["connection"] == "close"
                assert "shutting down" in r.json()["error"]
            assert (await c.get("/v2/health/live")).status_code == 200
            r = await c.get("/v2/health/ready")
            assert r.status_code == 503 and "shutting down" in r.json()["error"]

    asyncio.run(main())


def test_each_model_route_answers_on_its_unversioned_and_versioned_path(serving_onnx: Path) -> None:
    sources = [ModelSource("student", v, serving_onnx) for v in ("1", "2")]
    app = create_app(sources, limits=ServingLimits(intra_op_threads=1, max_batch_size=1))
    body = {
        "inputs": [
            {"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3072}
        ]
    }

    async def main() -> None:
        async with in_process(app) as c:

            async def call(path: str) -> httpx.Response:
                if path.endswith("/infer"):
                    return await c.post(path, json=body)
                return await c.get(path)

            for suffix, version_of in (
                ("", None),
                ("/ready", lambda r: r.json()["version"]),
                ("/infer", lambda r: r.json()["model_version"]),
            ):
                latest = await call(f"/v2/models/student{suffix}")
                first = await call(f"/v2/models/student/versions/1{suffix}")
                assert latest.status_code == first.status_code == 200, (suffix, first.text)
                if version_of is not None:
                    assert (version_of(latest), version_of(first)) == ("2", "1"), suffix
                missing = await call(f"/v2/models/student/versions/9{suffix}")
                assert missing.status_code == 404, suffix
                assert "served versions: ['1', '2']" in missing.json()["error"]
            # the version is a path segment only: a query parameter does not pick one
            r = await c.get("/v2/models/student/ready", params={"version": "1"})
            assert r.json()["version"] == "2"

    asyncio.run(main())


def test_the_limits_reach_the_routes(
    clf: OnnxClassifier, digit_pngs: list[bytes], china_jpg: bytes
) -> None:
    limits = ServingLimits(
        top_k=2, max_body_bytes=200_000, max_image_pixels=500, max_request_rows=2, max_batch_size=1
    )
    app = create_app(clf, limits=limits)
    rows3 = {
        "inputs": [
            {"name": "input", "shape": [3, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 9216}
        ]
    }
    png = {"content-type": "image/png"}

    async def main() -> None:
        async with in_process(app) as c:
            r = await c.post("/v1/predict", content=digit_pngs[0], headers=png)  # 8x8 pixels
            assert r.status_code == 200 and len(r.json()["predictions"]) == 2
            r = await c.post("/v1/predict", content=b"\0" * 200_001, headers=png)
            assert r.status_code == 413 and "200000" in r.json()["error"]
            r = await c.post(
                "/v1/predict", content=china_jpg, headers={"content-type": "image/jpeg"}
            )
            assert r.status_code == 422 and "the limit is 500" in r.json()["error"]
            r = await c.post("/v2/models/digits_cnn/infer", json=rows3)
            assert r.status_code == 400 and "1..2" in r.json()["error"]

    asyncio.run(main())
