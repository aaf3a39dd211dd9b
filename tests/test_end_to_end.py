"""The first real path end to end: Ray Train -> ONNX -> a real HTTP server on loopback, scored
on held-out PNG files it never saw."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from transferkit.data import scan_folder
from transferkit.imaging import load_image, preprocess
from transferkit.metadata import ModelMetadata

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(exported_onnx):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "transferkit.cli", "serve", str(exported_onnx), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(url + "/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("server did not become ready")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def test_served_accuracy_equals_the_onnx_models_accuracy(server, exported_onnx, digits_80_20):
    names, hold = scan_folder(digits_80_20[1])
    sess = ort.InferenceSession(str(exported_onnx), providers=["CPUExecutionProvider"])
    meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    x = np.stack([preprocess(load_image(p), meta.preprocessing) for p, _ in hold])
    onnx_pred = sess.run(None, {"input": x})[0].argmax(1)
    labels = np.array([y for _, y in hold])
    served = []
    with httpx.Client(base_url=server, timeout=30) as client:
        for p, _ in hold:
            r = client.post(
                "/v1/predict", content=Path(p).read_bytes(), headers={"content-type": "image/png"}
            )
            assert r.status_code == 200
            served.append(meta.class_names.index(r.json()["predictions"][0]["label"]))
    served = np.array(served)
    assert (served == onnx_pred).all()
    acc = float((served == labels).mean())
    assert acc == float((onnx_pred == labels).mean())
    assert acc > 0.85


def test_corrupt_upload_gets_4xx_json_and_the_next_request_succeeds(server, digits_80_20):
    _, hold = scan_folder(digits_80_20[1])
    r = httpx.post(
        server + "/v1/predict", files={"file": ("x.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")}
    )
    assert 400 <= r.status_code < 500 and "error" in r.json()
    r = httpx.post(
        server + "/v1/predict",
        files={"file": ("ok.png", Path(hold[0][0]).read_bytes(), "image/png")},
    )
    assert r.status_code == 200 and r.json()["predictions"][0]["probability"] > 0
