"""``transferkit serve`` serves the compact files ``transferkit export --quantize`` writes (INT8,
fp16) like any other: real server on loopback, real digits; each answer checked against ONNX
Runtime run in-process on the same file (the numpy preprocessing of ``transferkit.imaging``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import ServerProcess
from onnxruntime.transformers.float16 import convert_float_to_float16

from transferkit.config import QuantizeSettings
from transferkit.export.quantize import carry_metadata, quantize_model
from transferkit.imaging import decode_image, preprocess
from transferkit.metadata import ModelMetadata


@pytest.fixture(scope="module")
def compact_files(serving_onnx, digits_dir, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("compact")
    paths = sorted(str(p) for p in digits_dir.rglob("*.png"))[::20]
    samples = [(p, int(Path(p).parent.name)) for p in paths]
    int8 = d / "digits_int8.onnx"
    quantize_model(
        serving_onnx, int8, paths, samples,
        QuantizeSettings(quantize="qdq", calibration_images=16, force=True, latency_runs=5),
    )  # fmt: skip
    fp16 = d / "digits_fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(serving_onnx)), keep_io_types=True), fp16)
    carry_metadata(serving_onnx, fp16, {"quantization": {"variant": "fp16"}})
    return {"int8": int8, "fp16": fp16}


@pytest.mark.parametrize("kind", ["int8", "fp16"])
def test_the_server_serves_a_compact_file_as_onnx_runtime_answers(
    kind, compact_files, digit_pngs, tmp_path
):
    path = compact_files[kind]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    srv = ServerProcess(path, tmp_path / "server.log")
    try:
        srv.wait_for("/v2/health/ready")
        info = httpx.get(f"{srv.url}/v2/models/{path.stem}", timeout=10).json()
        assert info["inputs"][0]["datatype"] == "FP32"
        for data in digit_pngs:
            r = httpx.post(
                f"{srv.url}/v1/predict", content=data, headers={"content-type": "image/png"}
            )
            assert r.status_code == 200, r.text
            x = preprocess(decode_image(data), meta.preprocessing)[None]
            logits = sess.run(None, {meta.input_name: x})[0][0].astype(np.float64)
            probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            top = r.json()["predictions"][0]
            assert top["label"] == meta.class_names[int(probs.argmax())]
            assert top["probability"] == pytest.approx(probs.max(), abs=1e-4)
    finally:
        srv.stop()
