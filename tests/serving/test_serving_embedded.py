"""Serving a model whose preprocessing is inside the graph (``transferkit.export.embed``): the
server decodes the image and feeds its raw uint8 pixels; the answers are the numpy path's
(``transferkit.imaging.preprocess`` + the fp32 file + softmax), on real images. No Ray."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import in_process
from PIL import Image

from transferkit.export.embed import embed_preprocessing
from transferkit.imaging import decode_image, preprocess
from transferkit.metrics import softmax
from transferkit.serving.app import create_app
from transferkit.serving.batching import DynamicBatcher
from transferkit.serving.limits import ServingLimits
from transferkit.serving.model import OnnxClassifier

PROB_TOL = 0.05  # the embedded graph's resize may differ from Pillow's by a grey level or two


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def elpv_pngs() -> list[bytes]:
    """Four real ELPV cells (300x300 grey PNG) and two crops of odd sizes."""
    from transferkit.data.bundled import elpv_cells

    cells = [c.path.read_bytes() for c in elpv_cells()[:400:100]]
    arr = np.asarray(Image.open(elpv_cells()[7].path))
    return [*cells, _png(arr[5:60, 30:251]), _png(arr[:293, 101:140])]


@pytest.fixture(scope="module")
def embedded_onnx(serving_onnx: Path, tmp_path_factory) -> Path:
    from transferkit.data.bundled import elpv_cells

    out = tmp_path_factory.mktemp("embedded") / "digits_cnn_embedded.onnx"
    embed_preprocessing(serving_onnx, out, validate_on=[str(c.path) for c in elpv_cells()[:64]])
    return out


@pytest.fixture(scope="module")
def clf(embedded_onnx: Path) -> OnnxClassifier:
    return OnnxClassifier(embedded_onnx, intra_op_threads=1)


def _expected(reference, data: bytes) -> np.ndarray:
    """The numpy path's probabilities [K] for one encoded image."""
    sess, meta = reference
    x = preprocess(decode_image(data), meta.preprocessing)[None]
    return softmax(sess.run([meta.output_name], {meta.input_name: x})[0])[0]


def test_an_embedded_model_loads_and_describes_its_uint8_image_input(clf) -> None:
    assert clf.embedded
    assert clf.tensor_spec("input") == {"name": "image", "datatype": "UINT8", "shape": [-1] * 4}
    assert clf.tensor_spec("output") == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [-1, 10],
    }


def test_image_bytes_get_the_numpy_paths_answer(clf, reference, digit_pngs, china_jpg, elpv_pngs):
    rgba = np.dstack(
        [np.asarray(Image.open(io.BytesIO(china_jpg)))[:90, :70], np.full((90, 70), 9)]
    )
    images = [*digit_pngs, china_jpg, *elpv_pngs, _png(rgba.astype(np.uint8))]
    for data in images:
        expected = _expected(reference, data)
        got = clf.predict_image_bytes(data, top_k=10)
        assert [p["label"] for p in got][0] == clf.class_names[int(expected.argmax())]
        by_label = {p["label"]: p["probability"] for p in got}
        assert [by_label[n] for n in clf.class_names] == pytest.approx(expected, abs=PROB_TOL)


def test_the_http_routes_serve_it_like_any_other_model(embedded_onnx, reference, digit_pngs):
    app = create_app(embedded_onnx, limits=ServingLimits(intra_op_threads=1, max_batch_size=4))
    digit = np.asarray(Image.open(io.BytesIO(digit_pngs[0])))  # 8x8 grey
    tensor = {"name": "image", "datatype": "UINT8", "shape": [1, 8, 8, 1]}

    async def main() -> None:
        async with in_process(app) as c:
            meta = (await c.get("/v2/models/digits_cnn_embedded")).json()
            assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1] * 4}]
            body = {"inputs": [{**tensor, "data": digit.ravel().tolist()}]}
            r = await c.post("/v2/models/digits_cnn_embedded/infer", json=body)
            assert r.status_code == 200, r.text
            (out,) = r.json()["outputs"]
            assert (out["name"], out["datatype"], out["shape"]) == (
                "probabilities",
                "FP32",
                [1, 10],
            )
            assert out["data"] == pytest.approx(_expected(reference, digit_pngs[0]), abs=PROB_TOL)
            for bad in ([300] + [0] * 63, [0.5] + [0] * 63):
                r = await c.post(
                    "/v2/models/digits_cnn_embedded/infer",
                    json={"inputs": [{**tensor, "data": bad}]},
                )
                assert r.status_code == 400 and "0 to 255" in r.json()["error"]
            # an RGBA tensor (ink drawn by alpha over white colour) is composited over the
            # model's background (black), as an uploaded RGBA image is: the digit's answer
            white = np.full_like(digit, 255)
            rgba = np.dstack([white, white, white, digit])
            r = await c.post(
                "/v2/models/digits_cnn_embedded/infer",
                json={"inputs": [{**tensor, "shape": [1, 8, 8, 4], "data": [rgba.tolist()]}]},
            )
            assert r.status_code == 200, r.text
            got = r.json()["outputs"][0]["data"]
            assert got == pytest.approx(_expected(reference, digit_pngs[0]), abs=PROB_TOL)
            fp32 = {**tensor, "datatype": "FP32", "data": [0.0] * 64}
            r = await c.post("/v2/models/digits_cnn_embedded/infer", json={"inputs": [fp32]})
            assert r.status_code == 400 and "UINT8" in r.json()["error"]
            files = {"file": ("d.png", digit_pngs[1], "image/png")}
            r = await c.post("/v1/predict", files=files, params={"top_k": 3})
            assert r.status_code == 200, r.text
            preds = r.json()["predictions"]
            expected = _expected(reference, digit_pngs[1])
            assert [set(p) for p in preds] == [{"label", "probability"}] * 3
            assert preds[0]["label"] == str(int(expected.argmax()))
            assert preds[0]["probability"] == pytest.approx(expected.max(), abs=PROB_TOL)

    asyncio.run(main())


def test_concurrent_images_of_different_sizes_each_get_their_own_answer(
    embedded_onnx, reference, digit_pngs, elpv_pngs, china_jpg
):
    app = create_app(
        embedded_onnx,
        limits=ServingLimits(intra_op_threads=1, max_batch_size=8, max_queue_delay_ms=20.0),
    )
    images = [*digit_pngs[:4], *elpv_pngs, china_jpg] * 2

    async def main() -> list[dict]:
        async with in_process(app) as c:

            async def one(data: bytes) -> dict:
                r = await c.post(
                    "/v2/models/digits_cnn_embedded/infer",
                    content=data,
                    headers={"content-type": "image/png"},
                )
                assert r.status_code == 200, r.text
                return r.json()["outputs"][0]

            return await asyncio.gather(*(one(d) for d in images))

    for data, out in zip(images, asyncio.run(main())):
        assert out["shape"] == [1, 10]
        assert out["data"] == pytest.approx(_expected(reference, data), abs=PROB_TOL)


def test_the_batcher_puts_only_same_shaped_requests_in_one_run() -> None:
    runs: list[tuple[int, ...]] = []

    def run(x: np.ndarray) -> np.ndarray:  # uint8 [n, H, W, 1] -> [n, 2]: (H, W) per row
        runs.append(x.shape)
        time.sleep(0.002)
        return np.tile(np.array(x.shape[1:3], dtype=np.float32), (len(x), 1))

    sizes = [(8, 8), (300, 300), (8, 8), (55, 221), (8, 8), (300, 300)] * 5

    async def main() -> list[np.ndarray]:
        b = DynamicBatcher(run, max_batch_size=8, max_queue_delay_ms=5.0)
        b.start()
        xs = [np.zeros((1, h, w, 1), dtype=np.uint8) for h, w in sizes]
        outs = await asyncio.gather(*(b.submit(x) for x in xs))
        await b.stop()  # not on failure: a batcher whose loop died never drains
        return outs

    outs = asyncio.run(asyncio.wait_for(main(), 30.0))  # a mixed batch would kill the loop
    assert [tuple(o[0].astype(int)) for o in outs] == sizes
    assert sum(n for n, *_ in runs) == len(sizes)  # every request ran once (mixed: concat fails)
    assert len(runs) <= 2 * len(set(sizes)) + 2  # same-shaped requests shared runs
