"""INT8 quantization (ONNX Runtime's quantize_static on real calibration images) and its gate.

Ray-free: the small CNN of ``serving_onnx`` and real digits images; the fine-tuned MobileNetV2
tests are in ``test_quantize_run.py`` (slow)."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from transferkit.config import QuantizeSettings
from transferkit.export.quantize import (
    INT8_VARIANTS,
    ImageCalibrationReader,
    QuantizationRefused,
    judge,
    quantize_int8,
    quantize_model,
    report_path,
)
from transferkit.metadata import ModelMetadata


def _fig(acc, ms32):
    return {"test_acc": acc, "p50_ms_b32": ms32}


def test_the_gate_ships_the_fastest_variant_that_keeps_accuracy_and_speed():
    fp32 = _fig(0.95, 100.0)
    cands = {
        "a": _fig(0.945, 60.0),  # passes: -0.5 pt, 0.60x
        "b": _fig(0.90, 40.0),  # fastest, but -5 pt
        "c": _fig(0.95, 66.0),  # passes, slower than a
        "d": _fig(0.96, 70.0),  # 0.70x > 0.67x
    }
    chosen, v = judge(fp32, cands, QuantizeSettings())
    assert chosen == "a"
    assert [n for n in cands if v[n]["passed"]] == ["a", "c"]
    assert not v["b"]["accuracy_ok"] and v["b"]["latency_ok"]
    assert v["d"]["accuracy_ok"] and not v["d"]["latency_ok"]
    assert v["d"]["latency_ratio"] == pytest.approx(0.70)


def test_the_gate_refuses_when_nothing_passes_unless_forced():
    fp32, cands = _fig(0.95, 100.0), {"a": _fig(0.80, 90.0), "b": _fig(0.95, 95.0)}
    assert judge(fp32, cands, QuantizeSettings())[0] is None
    assert judge(fp32, cands, QuantizeSettings(force=True))[0] == "a"  # the fastest
    loose = QuantizeSettings(max_accuracy_drop=0.2, max_latency_ratio=0.95)
    assert judge(fp32, cands, loose)[0] == "a"


def test_the_calibration_reader_feeds_every_image_once_per_pass():
    images = np.arange(20 * 3 * 2 * 2, dtype=np.float32).reshape(20, 3, 2, 2)
    r = ImageCalibrationReader("input", images, batch_size=8)
    for _ in range(2):
        got = []
        while (batch := r.get_next()) is not None:
            got.append(batch["input"])
        assert [len(b) for b in got] == [8, 8, 4]
        np.testing.assert_array_equal(np.concatenate(got), images)
        r.rewind()


def _digits(digits_dir, n):
    classes = sorted(p.name for p in digits_dir.iterdir() if p.is_dir())
    samples = [
        (str(p), y) for y, c in enumerate(classes) for p in sorted((digits_dir / c).glob("*.png"))
    ]
    return samples[:: max(1, len(samples) // n)][:n]


@pytest.fixture(scope="module")
def shipped(serving_onnx, digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "m-int8.onnx"
    samples = _digits(digits_dir, 64)
    gate_open = QuantizeSettings(
        quantize="auto", calibration_images=32, max_accuracy_drop=1.0, max_latency_ratio=100.0,
        latency_runs=5,
    )  # fmt: skip
    report = quantize_model(serving_onnx, out, [p for p, _ in samples], samples, gate_open)
    return out, report


def test_every_variant_is_measured_and_the_fastest_passing_one_ships(shipped):
    out, report = shipped
    assert set(report["variants"]) == set(INT8_VARIANTS)
    fastest = min(report["variants"], key=lambda n: report["variants"][n]["p50_ms_b32"])
    assert report["shipped"] == fastest and not report["forced"]
    assert json.loads(report_path(out).read_text())["shipped"] == fastest
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert ops & {"QuantizeLinear", "QLinearConv", "ConvInteger"}  # it is integer arithmetic


def test_the_int8_file_keeps_the_metadata_and_records_the_gate(shipped, serving_onnx):
    out, report = shipped
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    src = ModelMetadata.from_props(
        ort.InferenceSession(str(serving_onnx), providers=["CPUExecutionProvider"])
        .get_modelmeta()
        .custom_metadata_map
    )
    assert meta.class_names == src.class_names and meta.preprocessing == src.preprocessing
    assert meta.source_run == src.source_run and meta.extra["purpose"] == "serving tests"
    q = meta.extra["quantization"]
    assert q["variant"] == report["shipped"] and q["calibration_images"] == 32
    assert q["int8"]["test_acc"] == report["variants"][report["shipped"]]["test_acc"]
    assert sess.get_inputs()[0].type == "tensor(float)"  # clients feed what they fed fp32


@pytest.mark.parametrize("variant", list(INT8_VARIANTS))
def test_int8_answers_follow_fp32_on_real_images(variant, serving_onnx, digits_dir, tmp_path):
    """Each variant against the fp32 file on 300 digits, calibrated on 32 others: the logits stay
    close (relative to their spread) and the top-1 class mostly agrees. (Which variant ships
    depends on timing, so each is checked here.)

    U8S8 without ``reduce_range`` saturates on x86 CPUs without VNNI (VPMADDUBSW adds two
    u8 x s8 products into an int16; ONNX Runtime's quantization docs say to use reduce_range
    there). On such a CPU only the reduce_range variants are held to the bound; the others
    agreed with fp32 on 74.7% of top-1 classes on an AVX2-only EPYC, and the export gate refuses them
    by their measured accuracy."""
    from helpers import cpu_flags

    vnni = bool((cpu_flags() or set()) & {"avx512_vnni", "avx_vnni"})
    if "reduce_range" not in variant and not vnni:
        pytest.skip(f"{variant}: U8S8 without reduce_range saturates on a CPU without VNNI")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from transferkit.imaging import load_image, preprocess

    prep = ModelMetadata.from_props(
        ort.InferenceSession(str(serving_onnx)).get_modelmeta().custom_metadata_map
    ).preprocessing
    digits = _digits(digits_dir, 332)
    x = np.stack([preprocess(load_image(p), prep) for p, _ in digits])
    prepared, out = tmp_path / "pre.onnx", tmp_path / f"{variant}.onnx"
    quant_pre_process(str(serving_onnx), str(prepared))
    quantize_int8(prepared, out, variant, x[::10][:32], "input", "minmax")
    held_out = np.delete(x, np.arange(0, len(x), 10)[:32], axis=0)[:300]
    a = ort.InferenceSession(str(serving_onnx)).run(None, {"input": held_out})[0]
    b = ort.InferenceSession(str(out)).run(None, {"input": held_out})[0]
    assert np.abs(a - b).mean() <= 0.05 * a.std()
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.9


def test_a_gate_nothing_passes_writes_no_model_but_the_figures(serving_onnx, digits_dir, tmp_path):
    out = tmp_path / "m-int8.onnx"
    out.write_bytes(b"an older file")  # must not survive: what is at the path is this run's
    samples = _digits(digits_dir, 32)
    shut = QuantizeSettings(quantize="qdq", calibration_images=8, max_latency_ratio=1e-6,
                            latency_runs=5)  # fmt: skip
    with pytest.raises(QuantizationRefused, match="no INT8 variant passed the gate") as exc:
        quantize_model(serving_onnx, out, [p for p, _ in samples], samples, shut)
    assert not out.exists()
    figures = json.loads(report_path(out).read_text())
    assert figures["shipped"] is None and list(figures["variants"]) == ["qdq"]
    assert figures["verdicts"]["qdq"]["latency_ok"] is False
    assert exc.value.report["fp32"]["test_acc"] == figures["fp32"]["test_acc"]


def test_inspect_shows_the_variant_and_the_gate_figures(shipped):
    from transferkit.export.inspect import inspect_onnx

    out, report = shipped
    r = inspect_onnx(out)
    q = r["transferkit"]["quantization"]
    assert q["variant"] == report["shipped"] and q["gate"]["max_latency_ratio"] == 100.0
    assert r["inputs"][0]["dtype"] == "float32" and r["inputs"][0]["shape"][0] == "batch"
