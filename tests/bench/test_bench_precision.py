"""bench/precision.py times both models in both precisions and writes what it prints."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_times_each_model_in_fp32_and_bf16(tmp_path):
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "precision.py"), "--batch", "2", "--steps", "1"]
        + ["--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads((tmp_path / "precision.json").read_text())
    assert [row["model"] for row in out["rows"]] == [
        "teacher mobilenet_v2 @192",
        "student 5-stage cut @256",
    ]
    for row in out["rows"]:
        assert row["fp32"] > 0 and row["bf16"] > 0
        assert abs(row["speedup"] - row["bf16"] / row["fp32"]) < 1e-9
        assert f"{row['speedup']:.2f}x" in r.stdout
