"""``--quantize fp16``: ONNX Runtime's float16 converter, checked against fp32 on real images
(Ray-free: the small CNN of ``serving_onnx`` and real digits)."""

import json

import onnxruntime as ort
import pytest

from transferkit.export import fp16
from transferkit.export.fp16 import FP16ValidationError, convert_fp16
from transferkit.export.inspect import inspect_onnx
from transferkit.export.quantize import report_path
from transferkit.metadata import ModelMetadata
from transferkit.serving.providers import gpu_present


def _digits(digits_dir, n=120):
    return sorted(str(p) for p in digits_dir.rglob("*.png"))[:: 1797 // n][:n]


def test_forced_fp16_on_a_cpu_writes_a_checked_file(serving_onnx, digits_dir, tmp_path):
    out = tmp_path / "m-fp16.onnx"
    r = convert_fp16(serving_onnx, out, _digits(digits_dir), force=True)
    assert out.is_file() and r["passed"] and r["images_compared"] == 120
    assert r["top1_agreement"] >= fp16.FP16_MIN_AGREEMENT
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(float)"  # float32 in and out (keep_io_types)
    assert sess.get_outputs()[0].type == "tensor(float)"
    meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    q = meta.extra["quantization"]
    assert q["variant"] == "fp16" and q["top1_agreement"] == r["top1_agreement"]
    assert q["forced"] is (not gpu_present())
    assert inspect_onnx(out)["transferkit"]["quantization"]["variant"] == "fp16"
    assert json.loads(report_path(out).read_text())["passed"] is True
    import onnx

    kinds = {i.data_type for i in onnx.load(str(out)).graph.initializer}
    assert onnx.TensorProto.FLOAT16 in kinds and onnx.TensorProto.FLOAT not in kinds


def test_an_fp16_file_outside_the_tolerance_is_removed(
    serving_onnx, digits_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(fp16, "FP16_MAX_PROB_DIFF", 0.0)  # any rounding at all now fails
    out = tmp_path / "m-fp16.onnx"
    with pytest.raises(FP16ValidationError, match="too far from fp32 over the 120 images"):
        convert_fp16(serving_onnx, out, _digits(digits_dir), force=True)
    assert not out.exists()
    figures = json.loads(report_path(out).read_text())
    assert figures["passed"] is False and figures["output"] is None


def test_inspect_of_a_folder_points_to_export(tmp_path):
    from transferkit.errors import UsageError

    with pytest.raises(UsageError, match="is a folder, not an ONNX file"):
        inspect_onnx(tmp_path)
