"""bench/distill.py runs on real ONNX files and writes its JSON (figures are not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_bench_prints_the_table_and_writes_json(exported_onnx, digits_80_20, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "distill.py"),
            "--teacher",
            str(exported_onnx),
            "--student",
            str(exported_onnx),
            "--images",
            str(digits_80_20[1]),
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
    for who in ("teacher", "student"):
        assert (
            data[who]["test_images"] == 359 and 0 < data[who]["p50_ms_b1"] <= data[who]["p99_ms_b1"]
        )
    assert data["teacher"]["test_acc"] == data["student"]["test_acc"]
