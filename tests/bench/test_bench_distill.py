"""bench/distill.py measures two different real ONNX files, and its accuracies agree with an
independent scoring: ONNX Runtime fed by torchvision's transforms (not transferkit.imaging)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers import torchvision_eval_transform
from PIL import Image

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _accuracy_by_torchvision(onnx_path: Path, folder: Path) -> float:
    from transferkit.metadata import ModelMetadata

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    tf = torchvision_eval_transform(meta.preprocessing)
    images, labels = [], []
    for y, name in enumerate(meta.class_names):
        for p in sorted((folder / name).glob("*.png")):
            images.append(tf(Image.open(p).convert("RGB")).numpy())
            labels.append(y)
    logits = sess.run(None, {sess.get_inputs()[0].name: np.stack(images)})[0]
    return float(np.mean(logits.argmax(1) == np.asarray(labels)))


def test_bench_measures_teacher_and_student_separately(
    exported_onnx, serving_onnx, digits_80_20, tmp_path
):
    """Teacher: the fine-tuned MobileNetV2; student: an untrained small CNN (chance level)."""
    held_out = digits_80_20[1]
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "distill.py"),
            "--teacher",
            str(exported_onnx),
            "--student",
            str(serving_onnx),
            "--images",
            str(held_out),
            "--runs",
            "20",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "p50_ms_b1" in r.stdout and "student/teacher" in r.stdout
    (out,) = tmp_path.glob("distill-*.json")
    data = json.loads(out.read_text())
    one_image = 1.0 / 359
    for who, path in (("teacher", exported_onnx), ("student", serving_onnx)):
        row = data[who]
        assert row["test_images"] == 359 and 0 < row["p50_ms_b1"] <= row["p99_ms_b1"]
        assert row["onnx"] == str(path)
        assert row["test_acc"] == pytest.approx(
            _accuracy_by_torchvision(path, held_out), abs=one_image
        )
    assert data["teacher"]["test_acc"] > data["student"]["test_acc"] + 0.3
