"""Serving tests against a real ``transferkit serve`` on loopback, over real HTTP (httpx).

Expected answers are computed independently in-process: a plain ``onnxruntime.InferenceSession``
on ``transferkit.imaging.preprocess`` of the same bytes.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from helpers import REPO, ServerProcess
from PIL import Image

from transferkit.imaging import decode_image, preprocess
from transferkit.metadata import ModelMetadata

MAX_BODY = 1024 * 1024
MAX_PIXELS = 1_000_000
DEFAULT_TOP_K = 5


# -- a real server in a subprocess -----------------------------------------------------------------


@pytest.fixture(scope="module")
def server(serving_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        serving_onnx,
        tmp_path_factory.mktemp("server") / "server.log",
        "--max-body-mb",
        str(MAX_BODY / 2**20),
        "--max-image-pixels",
        str(MAX_PIXELS),
        "--top-k",
        str(DEFAULT_TOP_K),
        "--threads",
        "1",
    )
    try:
        srv.wait_for("/v2/health/ready")
        yield srv
    finally:
        srv.stop()


# -- the expected answer, computed in-process ------------------------------------------------------


def reference_logits(ref: tuple[ort.InferenceSession, ModelMetadata], data: bytes) -> np.ndarray:
    """float32 logits ``[K]`` for one encoded image, preprocessed by ``transferkit.imaging``."""
    sess, meta = ref
    x = preprocess(decode_image(data), meta.preprocessing)[None]
    return sess.run([meta.output_name], {meta.input_name: x})[0][0]


def assert_valid_predictions(preds: list[dict], k: int, class_names: list[str]) -> None:
    assert len(preds) == k
    probs = [p["probability"] for p in preds]
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs)
    assert sum(probs) <= 1.0 + 1e-9
    assert len({p["label"] for p in preds}) == k
    assert all(p["label"] in class_names for p in preds)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose IHDR declares ``width`` x ``height`` (8-bit grey) over one row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1))
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


# -- tests -----------------------------------------------------------------------------------------


def test_import_is_light() -> None:
    code = (
        "import sys, transferkit.serving as s\n"
        "assert s.OnnxClassifier and s.create_app and s.serve\n"
        "heavy = sorted(m for m in ('torch', 'torchvision', 'ray') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_preprocess_gives_the_models_normalised_input(serving_onnx: Path) -> None:
    """Constant images of any size and mode come out as ``(value - mean) / std`` per channel,
    in the model's [3, 32, 32], red in channel 0."""
    from transferkit.serving import OnnxClassifier

    clf = OnnxClassifier(serving_onnx, intra_op_threads=1)
    mean = np.asarray(clf.preprocessing.mean, dtype=np.float32)
    std = np.asarray(clf.preprocessing.std, dtype=np.float32)
    cases = [
        (Image.new("RGB", (50, 40), (255, 255, 255)), [1.0, 1.0, 1.0]),
        (Image.new("L", (7, 90), 0), [0.0, 0.0, 0.0]),  # grey: one value on every channel
        (Image.new("L", (64, 64), 51), [0.2, 0.2, 0.2]),
        (Image.new("RGBA", (33, 31), (255, 0, 0, 255)), [1.0, 0.0, 0.0]),
        (Image.new("RGB", (320, 32), (0, 51, 255)), [0.0, 0.2, 1.0]),
    ]
    for img, rgb in cases:
        x = clf.preprocess(img)
        assert x.dtype == np.float32 and x.shape == (3, 32, 32), (img.mode, img.size)
        want = (np.asarray(rgb, dtype=np.float32) - mean) / std
        np.testing.assert_allclose(x, np.broadcast_to(want[:, None, None], x.shape), atol=1e-5)


def test_health(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").status_code == 200
    r = client.get("/v2/health/ready")
    assert r.status_code == 200 and r.json()["ready"] is True


def test_start_up_log_gives_urls_that_answer(server: ServerProcess, china_jpg: bytes) -> None:
    log = server.log()
    assert "{name}" not in log, log
    infer = f"{server.url}/v2/models/digits_cnn/infer"
    assert infer in log and f"{server.url}/v1/predict" in log, log
    r = httpx.post(infer, content=china_jpg, headers={"content-type": "image/jpeg"}, timeout=30)
    assert r.status_code == 200, r.text


def test_model_metadata(client: httpx.Client, serving_onnx: Path) -> None:
    r = client.get("/v1/model")
    assert r.status_code == 200
    meta = r.json()
    assert meta["name"] == serving_onnx.stem
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["input"]["shape"] == [-1, 3, 32, 32] and meta["input"]["name"] == "input"
    assert meta["output"]["shape"] == [-1, 10] and meta["output"]["name"] == "logits"
    assert meta["preprocessing"]["input_size"] == 32
    assert meta["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    assert meta["arch"] == "tiny_cnn"
    assert "CPUExecutionProvider" in meta["execution_providers"]


def test_predictions_match_in_process_ort(
    client: httpx.Client, reference, digit_pngs: list[bytes], china_jpg: bytes
) -> None:
    names = reference[1].class_names
    for data, ctype in [(china_jpg, "image/jpeg")] + [(d, "image/png") for d in digit_pngs]:
        r = client.post("/v1/predict", content=data, headers={"content-type": ctype})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "digits_cnn"
        preds = body["predictions"]
        assert_valid_predictions(preds, DEFAULT_TOP_K, names)
        logits = reference_logits(reference, data).astype(np.float64)
        assert preds[0]["label"] == names[int(np.argmax(logits))]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        for p in preds:
            assert p["probability"] == pytest.approx(probs[names.index(p["label"])], abs=1e-5)


def test_multipart_and_raw_bytes_agree(
    client: httpx.Client, china_jpg: bytes, digit_pngs: list[bytes]
) -> None:
    for data in (china_jpg, digit_pngs[3]):
        raw = client.post(
            "/v1/predict", content=data, headers={"content-type": "application/octet-stream"}
        )
        assert raw.status_code == 200, raw.text
        for field in ("file", "image"):
            multi = client.post(
                "/v1/predict",
                files={field: ("x.bin", data, "application/octet-stream")},
                data={"note": "a text field first"},
            )
            assert multi.status_code == 200, multi.text
            assert [p["label"] for p in multi.json()["predictions"]] == [
                p["label"] for p in raw.json()["predictions"]
            ]
            np.testing.assert_allclose(
                [p["probability"] for p in multi.json()["predictions"]],
                [p["probability"] for p in raw.json()["predictions"]],
                rtol=0,
                atol=1e-12,
            )


def test_top_k_query(client: httpx.Client, china_jpg: bytes) -> None:
    def post(k):
        return client.post(
            "/v1/predict",
            params={"top_k": k},
            content=china_jpg,
            headers={"content-type": "image/jpeg"},
        )

    assert len(post(1).json()["predictions"]) == 1
    everything = post(1000).json()["predictions"]
    assert len(everything) == 10  # capped at the class count
    assert sum(p["probability"] for p in everything) == pytest.approx(1.0, abs=1e-9)
    for bad in (0, "x"):
        r = post(bad)
        assert r.status_code == 422 and "top_k" in r.json()["error"]


def _cases(china_jpg: bytes) -> list[tuple[str, dict, int]]:
    china_png = png(Image.open(io.BytesIO(china_jpg)))
    return [
        ("corrupt", {"content": os.urandom(4096), "headers": {"content-type": "image/png"}}, 400),
        (
            "png signature, junk after",
            {"content": china_png[:16] + b"\0" * 500, "headers": {"content-type": "image/png"}},
            400,
        ),
        (
            "truncated png",
            {"content": china_png[: len(china_png) // 2], "headers": {"content-type": "image/png"}},
            400,
        ),
        ("empty body", {"content": b"", "headers": {"content-type": "image/png"}}, 400),
        ("empty upload", {"files": {"file": ("empty.png", b"", "image/png")}}, 400),
        (
            "text as octet-stream",
            {
                "content": b"hello, world\n" * 20,
                "headers": {"content-type": "application/octet-stream"},
            },
            400,
        ),
        ("text upload", {"files": {"file": ("notes.txt", b"not an image\n", "text/plain")}}, 400),
        (
            "text/plain body",
            {"content": b"not an image", "headers": {"content-type": "text/plain"}},
            415,
        ),
        ("json body", {"json": {"instances": [[0.0]]}}, 415),
        ("multipart without a file", {"data": {"image": "not a file"}, "files": {}}, 400),
        (
            "too many pixels",
            {
                "content": png(Image.new("L", (2000, 1000))),
                "headers": {"content-type": "image/png"},
            },
            422,
        ),
        (
            "long strip over the pixel limit",
            {
                "content": png(Image.new("L", (1, 2_000_000))),
                "headers": {"content-type": "image/png"},
            },
            422,
        ),
        (
            "decompression bomb header",
            {"content": png_bomb(100_000, 100_000), "headers": {"content-type": "image/png"}},
            422,
        ),
    ]


def test_bad_input_is_4xx_json_and_server_keeps_serving(
    client: httpx.Client, china_jpg: bytes
) -> None:
    for label, kwargs, status in _cases(china_jpg):
        if kwargs.get("files") == {}:  # force multipart encoding with text fields only
            kwargs = {
                "content": b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nnot a file\r\n--b--\r\n',
                "headers": {"content-type": "multipart/form-data; boundary=b"},
            }
        r = client.post("/v1/predict", **kwargs)
        assert r.status_code == status, f"{label}: {r.status_code} {r.text}"
        assert isinstance(r.json()["error"], str) and r.json()["error"], label
        ok = client.post("/v1/predict", content=china_jpg, headers={"content-type": "image/jpeg"})
        assert ok.status_code == 200, f"after {label}: {ok.text}"


def test_extreme_aspect_ratio_is_served_without_a_huge_resize(client: httpx.Client) -> None:
    """A 1 x 100,000 strip is a valid image: the crop box is resampled directly (no 32 x 3.2e6
    intermediate), so it is answered, quickly."""
    r = client.post(
        "/v1/predict",
        content=png(Image.new("L", (1, 100_000))),
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 200 and len(r.json()["predictions"]) >= 1


def test_body_over_limit_is_413(client: httpx.Client, china_jpg: bytes) -> None:
    big = os.urandom(MAX_BODY + 1)
    r = client.post(
        "/v1/predict", content=big, headers={"content-type": "application/octet-stream"}
    )
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts while streaming
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    r = client.post(
        "/v1/predict", content=chunks(), headers={"content-type": "application/octet-stream"}
    )
    assert r.status_code == 413 and "limit" in r.json()["error"]
    assert (
        client.post(
            "/v1/predict", content=china_jpg, headers={"content-type": "image/jpeg"}
        ).status_code
        == 200
    )


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and "error" in r.json()


def test_concurrent_requests_agree(
    client: httpx.Client, server: ServerProcess, digit_pngs: list[bytes]
) -> None:
    def predict(data: bytes) -> list[dict]:
        r = client.post("/v1/predict", content=data, headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        return r.json()["predictions"]

    serial = [predict(d) for d in digit_pngs]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(predict, digit_pngs * 4))
    for i, preds in enumerate(parallel):
        assert [p["label"] for p in preds] == [p["label"] for p in serial[i % len(digit_pngs)]]
    assert server.proc.poll() is None


def test_eager_server_refuses_file_without_metadata(tmp_path: Path, serving_onnx: Path) -> None:
    import onnx
    from typer.testing import CliRunner

    from transferkit.cli import app

    proto = onnx.load(str(serving_onnx))
    del proto.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(proto, str(plain))
    r = CliRunner().invoke(app, ["serve", str(plain), "--port", "0"])
    assert r.exit_code == 2, r.output
    assert "transferkit metadata" in r.output
