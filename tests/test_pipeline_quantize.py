"""The pipeline's optional quantization stage: a ResNet-18 teacher (random init, one epoch) gets an
INT8 file beside its fp32 one, and the report shows both rows. Real Ray, digits, ONNX Runtime.
That INT8 is faster is measured by ``bench/quantize.py``, not asserted here."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest
from test_pipeline import NO_RAY, _tiny, _tk, _write

from transferkit.metadata import ModelMetadata
from transferkit.serving.providers import gpu_present


@pytest.mark.slow
def test_a_quantized_teacher_gets_its_int8_row_beside_the_fp32_one(
    ray_cluster, digits_dir, tmp_path
):
    cfg = _tiny(
        digits_dir,
        tmp_path / "out",
        **{
            "teacher.model": {"arch": "resnet18", "weights": None, "freeze_depth": 0},
            "teacher.tune": None,
            "data.image_size": 32,
            "student": None,
            "export.quantization": {
                "quantize": "auto", "force": True, "calibration_images": 32, "latency_runs": 5
            },
        },
    )  # fmt: skip
    r = _tk("pipeline", _write(tmp_path / "p.yaml", cfg), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert list(report["models"]) == ["teacher", "teacher-int8"]
    q = report["quantization"]["teacher"]
    assert q["onnx"] == str(out / "teacher-int8.onnx") and q["forced"] in (True, False)
    md = (out / "report.md").read_text()
    assert "| teacher-int8 | resnet18 |" in md and "## Quantization" in md
    sess = ort.InferenceSession(str(out / "teacher-int8.onnx"), providers=["CPUExecutionProvider"])
    meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    assert meta.extra["quantization"]["variant"] == q["shipped"]
    assert meta.class_names == [str(i) for i in range(10)]
    figures = json.loads((out / "teacher-int8.onnx.quantization.json").read_text())
    assert set(figures["variants"]) == set(q["verdicts"])


@pytest.mark.skipif(gpu_present(), reason="fp16 is allowed where a GPU is present")
def test_fp16_without_a_gpu_is_refused_before_anything_runs(digits_dir, tmp_path):
    cfg = _tiny(digits_dir, tmp_path / "out", **{"export.quantization.quantize": "fp16"})
    r = _tk("pipeline", _write(tmp_path / "p.yaml", cfg), env=NO_RAY)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert "export.quantization.quantize" in r.stderr and "GPU" in r.stderr
    assert not (tmp_path / "out" / "stages").exists()
