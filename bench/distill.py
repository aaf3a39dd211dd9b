"""Teacher vs student, measured on their ONNX files with ONNX Runtime.

Prints one table (parameters, ONNX file size, ORT latency p50/p99 at batch 1 and 32, test top-1)
and writes the same figures as JSON to ``bench/results/distill-<time>.json`` (and
``distill.json``).

Usage::

    python bench/distill.py --teacher runs/teacher.onnx --student runs/student.onnx \
        --images HELD_OUT_IMAGEFOLDER [--threads 2] [--runs 200]

Latency is wall time of ``InferenceSession.run`` on preprocessed real images (preprocessing
excluded), CPU execution provider, ``intra_op_num_threads=--threads``, after 10 warm-up runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import onnxruntime as ort
from _common import write_json

from transferkit.data.folder import scan_folder
from transferkit.export.evaluate import onnx_figures
from transferkit.metadata import ModelMetadata


def measure(path: Path, images: Path, threads: int, runs: int) -> dict:
    """Figures for one ONNX file; accuracy on the labelled ImageFolder ``images``."""
    meta = ModelMetadata.from_props(
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        .get_modelmeta()
        .custom_metadata_map
    )
    _, samples = scan_folder(images, meta.class_names)
    r = onnx_figures(path, samples, threads, (1, 32), runs)
    lat = r.pop("latency_ms")
    return {
        **r,
        "p50_ms_b1": lat["1"]["p50"],
        "p99_ms_b1": lat["1"]["p99"],
        "p50_ms_b32": lat["32"]["p50"],
        "p99_ms_b32": lat["32"]["p99"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--student", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True, help="labelled ImageFolder (held out)")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()
    rows = {
        "teacher": measure(a.teacher, a.images, a.threads, a.runs),
        "student": measure(a.student, a.images, a.threads, a.runs),
    }
    cols = [
        ("parameters", "{:,}"),
        ("file_mb", "{:.2f}"),
        ("p50_ms_b1", "{:.2f}"),
        ("p99_ms_b1", "{:.2f}"),
        ("p50_ms_b32", "{:.2f}"),
        ("p99_ms_b32", "{:.2f}"),
        ("test_acc", "{:.4f}"),
    ]
    print(f"{'model':<8} {'arch':<20} " + " ".join(f"{c:>12}" for c, _ in cols))
    for name, r in rows.items():
        print(f"{name:<8} {r['arch']:<20} " + " ".join(f"{f.format(r[c]):>12}" for c, f in cols))
    t, s = rows["teacher"], rows["student"]
    print(
        f"student/teacher: parameters {s['parameters'] / t['parameters']:.3f}, "
        f"file {s['file_mb'] / t['file_mb']:.3f}, p50@1 {s['p50_ms_b1'] / t['p50_ms_b1']:.2f}x, "
        f"p50@32 {s['p50_ms_b32'] / t['p50_ms_b32']:.2f}x, accuracy {s['test_acc'] / t['test_acc']:.4f}"
    )
    doc = {"ort": ort.__version__, "threads": a.threads, **rows}
    out = write_json("distill", doc, a.out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
