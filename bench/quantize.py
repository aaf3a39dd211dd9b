"""fp32 vs every INT8 variant of one run, measured on this machine with ONNX Runtime.

Prints one table (test accuracy, p50/p99 latency at batch 1 and 32, file size, the gate's
verdict) and writes the same figures as JSON to ``bench/results/quantize-<name>.json``.

Usage::

    python bench/quantize.py --run RUN_FOLDER [--name NAME] [--calibration-images 200]
        [--runs 50] [--threads 0] [--tta none|hflip|d4]

It is ``transferkit export RUN --quantize auto`` with its defaults (the gate: accuracy >= fp32
- 1 pt, batch-32 p50 <= 0.67x fp32), written to a temporary folder: the run's training split
calibrates, its test split scores. Latency is ``InferenceSession.run`` on preprocessed real
images (preprocessing excluded), CPU execution provider, after 10 warm-up runs; batch 32 gets a
fifth of ``--runs`` (at least 10). Run it with nothing else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import provenance

from transferkit.config import ExportConfig, QuantizeSettings
from transferkit.export.compact import export_compact
from transferkit.export.quantize import QuantizationRefused

COLS = [
    ("test_acc", "{:.4f}"),
    ("p50_ms_b1", "{:.2f}"),
    ("p99_ms_b1", "{:.2f}"),
    ("p50_ms_b32", "{:.2f}"),
    ("p99_ms_b32", "{:.2f}"),
    ("file_mb", "{:.2f}"),
]


def measure(run: Path, calibration_images: int, runs: int, threads: int, tta: str) -> dict:
    """The quantization report of ``run`` (every variant measured; the gate's verdicts)."""
    q = QuantizeSettings(quantize="auto", calibration_images=calibration_images, latency_runs=runs)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExportConfig(
            run=str(run), output=str(Path(tmp) / "int8.onnx"), tta=tta, quantization=q
        )
        try:
            return export_compact(cfg, threads=threads)
        except QuantizationRefused as exc:
            return exc.report


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", type=Path, required=True, help="a transferkit run folder")
    ap.add_argument("--name", default=None, help="results file name (default: the run's)")
    ap.add_argument("--calibration-images", type=int, default=200)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--tta", default="none", choices=["none", "hflip", "d4"])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()
    r = measure(a.run, a.calibration_images, a.runs, a.threads, a.tta)
    print(f"{'model':<24} " + " ".join(f"{c:>11}" for c, _ in COLS) + "  gate")
    rows = {"fp32": r["fp32"], **r["variants"]}
    for name, f in rows.items():
        v = r["verdicts"].get(name)
        gate = "" if v is None else ("passes" if v["passed"] else "fails")
        ratio = f["p50_ms_b32"] / r["fp32"]["p50_ms_b32"]
        print(
            f"{name:<24} "
            + " ".join(f"{fmt.format(f[c]):>11}" for c, fmt in COLS)
            + f"  {gate} ({ratio:.2f}x fp32 at batch 32)"
        )
    print(f"shipped: {r['shipped'] or 'nothing (refused by the gate)'}")
    a.out.mkdir(parents=True, exist_ok=True)
    name = a.name or a.run.resolve().name
    r = {**provenance(), "threads": r["fp32"]["threads"], "run": str(a.run), **r}
    (a.out / f"quantize-{name}.json").write_text(json.dumps(r, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
