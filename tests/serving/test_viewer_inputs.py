"""What a viewer shows is what the model sees (issue 13): transparency, bit depth and value range,
palette, EXIF orientation; ambiguous images refused with 422, tensors nested against their
declared shape refused with 400; the server keeps serving.

Each accepted case is served over real HTTP and compared with the logits of the image a viewer
shows, built here independently with numpy (Porter-Duff "over" for alpha, ``value / 65535`` for
16 bits, ``value * 255`` for floats, ``np.rot90`` for orientation) and fed through the plain 8-bit
path. The model is the suite's small ONNX CNN (``serving_onnx``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import ServerProcess
from PIL import Image

from transferkit.imaging import ImageAmbiguousError, decode_image, load_image, preprocess, to_mode
from transferkit.preprocessing import Preprocessing

URL = "/v2/models/digits_cnn/infer"


def _digits(n: int = 12) -> list[np.ndarray]:
    """Real handwritten digits (scikit-learn's UCI digits), uint8 [8, 8], ink bright."""
    from sklearn.datasets import load_digits

    return [(d * (255.0 / 16.0)).round().astype(np.uint8) for d in load_digits().images[:n]]


def _encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _over(colour: np.ndarray, alpha: np.ndarray, background: float = 0.0) -> np.ndarray:
    """Porter-Duff 'over' on 8-bit values: colour * a + background * (1 - a), rounded."""
    a = alpha.astype(np.float64) / 255.0
    if colour.ndim == 3:
        a = a[..., None]
    return np.rint(colour * a + background * (1.0 - a)).astype(np.uint8)


@pytest.fixture(scope="module")
def server(serving_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(serving_onnx, tmp_path_factory.mktemp("viewer") / "server.log")
    try:
        srv.wait_for("/v2/health/ready")
        yield srv
    finally:
        srv.stop()


def _served(c: httpx.Client, data: bytes) -> np.ndarray:
    r = c.post(URL, content=data, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def _expected(reference, view: np.ndarray) -> np.ndarray:
    sess, meta = reference
    mode = "L" if view.ndim == 2 else "RGB"
    x = preprocess(Image.fromarray(view, mode), meta.preprocessing)[None]
    return sess.run([meta.output_name], {meta.input_name: x})[0]


def _cases() -> list[tuple[str, bytes, np.ndarray]]:
    """(name, file bytes, the uint8 image a viewer shows over black) for every accepted kind."""
    out = []
    for i, d in enumerate(_digits()):
        white = np.full_like(d, 255)
        rgba = np.dstack([white, white, white, d])  # ink drawn by alpha over white colour
        out.append((f"rgba-{i}", _encode(Image.fromarray(rgba, "RGBA")), _over(white, d)))
        la = np.dstack([white, d])
        out.append((f"la-{i}", _encode(Image.fromarray(la, "LA")), _over(white, d)))
        f = Image.fromarray(d.astype(np.float32) / 255.0, "F")  # float in [0, 1]
        out.append((f"float-tiff-{i}", _encode(f, "TIFF"), d))
        g16 = Image.fromarray(d.astype(np.uint16) * 257)  # 16-bit, 65535 = white
        out.append((f"png16-{i}", _encode(g16), d))
        out.append((f"tiff16-{i}", _encode(g16, "TIFF"), d))
        opaque = np.dstack([d, d, d, np.full_like(d, 255)])
        out.append((f"opaque-rgba-{i}", _encode(Image.fromarray(opaque, "RGBA")), d))
        stored = Image.fromarray(np.rot90(d, k=1).copy())  # stored rotated, tagged to turn back
        exif = stored.getexif()
        exif[0x0112] = 6  # "rotate 90 CW to display"
        out.append((f"exif6-{i}", _encode(stored, exif=exif), np.rot90(np.asarray(stored), k=-1)))
    d = _digits(1)[0]
    pal = Image.fromarray((d > 128).astype(np.uint8), "P")  # index 0 transparent, white under it
    pal.putpalette([255, 255, 255, 200, 30, 30] + [0] * 762)
    red = np.array([200, 30, 30], np.uint8)
    view = np.where((d > 128)[..., None], red, np.zeros(3, np.uint8)).astype(np.uint8)
    out.append(("palette-trns", _encode(pal, transparency=0), view))
    key = np.dstack([d, d, d])  # RGB colour-key transparency: (0, 0, 0) pixels transparent
    rgb = Image.fromarray(np.where(key == 0, 255, key).astype(np.uint8))
    arr = np.asarray(rgb)
    transparent = (arr == 255).all(axis=2)
    view = np.where(transparent[..., None], 0, arr).astype(np.uint8)
    out.append(("rgb-colour-key", _encode(rgb, transparency=(255, 255, 255)), view))
    return out


def test_each_image_is_answered_as_a_viewer_shows_it(server: ServerProcess, reference) -> None:
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        for name, data, view in _cases():
            np.testing.assert_allclose(
                _served(c, data), _expected(reference, view), rtol=1e-4, atol=1e-4, err_msg=name
            )


def _refused() -> list[tuple[str, bytes, str]]:
    d = _digits(1)[0]
    frames = [Image.fromarray(np.roll(d, k, axis=1)).convert("P") for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    nan = d.astype(np.float32) / 255.0
    nan[0, 0] = np.nan
    return [
        ("float-0-255", _encode(Image.fromarray(d.astype(np.float32), "F"), "TIFF"), "float"),
        ("float-nan", _encode(Image.fromarray(nan, "F"), "TIFF"), "non-finite"),
        ("int32", _encode(Image.fromarray(d.astype(np.int32) * 1000, "I"), "TIFF"), "32-bit"),
        ("animated", buf.getvalue(), "animated"),
    ]


def test_ambiguous_images_get_422_naming_why_and_the_server_keeps_serving(
    server: ServerProcess, reference
) -> None:
    d = _digits(1)[0]
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        for name, data, why in _refused():
            for route, headers in ((URL, {"content-type": "image/tiff"}), ("/v1/predict", {})):
                if route == "/v1/predict":
                    r = c.post(route, files={"file": ("x", data)})
                else:
                    r = c.post(route, content=data, headers=headers)
                assert r.status_code == 422, (name, route, r.text)
                assert why in r.json()["error"], (name, r.text)
        np.testing.assert_allclose(
            _served(c, _encode(Image.fromarray(d))), _expected(reference, d), rtol=1e-4, atol=1e-4
        )


def test_tensor_nested_against_its_declared_shape_is_400(server: ServerProcess, reference) -> None:
    sess, meta = reference
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    body = {"inputs": [{"name": meta.input_name, "shape": [1, 3, 32, 32], "datatype": "FP32"}]}
    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        body["inputs"][0]["data"] = x.transpose(0, 2, 3, 1).tolist()  # [1][32][32][3]: NHWC
        r = c.post(URL, json=body)
        assert r.status_code == 400 and "contradicts the declared shape" in r.json()["error"]
        body["inputs"][0]["data"] = x.reshape(1, -1).tolist()  # [1][3072]: half nested
        assert c.post(URL, json=body).status_code == 400
        for data in (x.tolist(), x.ravel().tolist()):  # nested as declared, or flat: accepted
            body["inputs"][0]["data"] = data
            r = c.post(URL, json=body)
            assert r.status_code == 200, r.text
            got = np.asarray(r.json()["outputs"][0]["data"], np.float32).reshape(1, -1)
            want = sess.run([meta.output_name], {meta.input_name: x})[0]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# -- the same decode path in training and in-process ------------------------------------------------


def test_transparency_is_composited_over_the_model_background() -> None:
    d = _digits(1)[0]
    rgba = np.dstack([np.full_like(d, 255), np.zeros_like(d), np.zeros_like(d), d])  # red ink
    img = decode_image(_encode(Image.fromarray(rgba, "RGBA")))
    for bg in ((0, 0, 0), (255, 255, 255), (10, 200, 30)):
        want = np.stack(
            [_over(rgba[..., c].astype(np.float64), d, bg[c]) for c in range(3)], axis=2
        )
        np.testing.assert_array_equal(np.asarray(to_mode(img, 3, bg)), want)
        prep = Preprocessing(input_size=8, background=bg)
        np.testing.assert_allclose(
            preprocess(img, prep), preprocess(Image.fromarray(want, "RGB"), prep), atol=1e-6
        )


def test_training_reads_images_as_serving_does(tmp_path: Path) -> None:
    """The training data check uses the same decode: a float TIFF in [0, 1] is kept and reads
    as its 8-bit twin; a float TIFF in [0, 255] is skipped with the reason."""
    from transferkit.data.dataset import verify_images

    d = _digits(1)[0]
    good, bad = tmp_path / "good.tif", tmp_path / "bad.tif"
    Image.fromarray(d.astype(np.float32) / 255.0, "F").save(good)
    Image.fromarray(d.astype(np.float32), "F").save(bad)
    kept, skipped = verify_images([(str(good), 0), (str(bad), 1)], threads=1)
    assert kept == [(str(good), 0)]
    assert len(skipped) == 1 and "bad.tif" in skipped[0] and "float" in skipped[0]
    np.testing.assert_array_equal(np.asarray(to_mode(load_image(good), 1)), d)
    with pytest.raises(ImageAmbiguousError, match="float"):
        load_image(bad)
