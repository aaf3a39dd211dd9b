"""ELPV held-out check: the pipeline's ONNX files served over HTTP on cells it never saw.

1. ``--make-split DIR`` writes the bundled ELPV cells as two folders, ``DIR/train75`` and
   ``DIR/holdout25`` (each ``functional|defective/<type>_cellNNNN.png``), a 75/25 split stratified
   by defect probability (0, 1/3, 2/3, 1) and cell type, as Deitsch et al. (2019) split theirs.
   Point ``data.dataset`` of ``configs/elpv.yaml`` at ``DIR/train75`` and run the pipeline.
2. ``--pipeline OUT --holdout DIR/holdout25`` starts ``transferkit serve`` on each of
   ``OUT/{teacher,student,baseline}.onnx`` in turn, POSTs every held-out image, and prints
   accuracy, balanced accuracy and per-class recall; the same figures go to
   ``bench/results/elpv_holdout.json``.

Usage::

    python bench/elpv_holdout.py --make-split /tmp/elpv --seed 2024
    transferkit pipeline configs/elpv.yaml   # with data.dataset: /tmp/elpv/train75
    python bench/elpv_holdout.py --pipeline runs/elpv --holdout /tmp/elpv/holdout25
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from _common import provenance

from transferkit.data.bundled import elpv_cells, elpv_label
from transferkit.data.folder import scan_folder
from transferkit.demo import served_labels
from transferkit.metrics import classification_metrics, confusion_matrix

RESULTS = Path(__file__).parent / "results"


def make_split(root: Path, seed: int) -> dict[str, int]:
    """Write ``root/train75`` and ``root/holdout25``; returns the number of cells in each."""
    from sklearn.model_selection import train_test_split

    cells = elpv_cells()
    strata = [f"{c.probability:.2f}-{c.cell_type}" for c in cells]
    train, hold = train_test_split(cells, test_size=0.25, stratify=strata, random_state=seed)
    out = {}
    for name, part in (("train75", train), ("holdout25", hold)):
        shutil.rmtree(root / name, ignore_errors=True)
        for c in part:
            d = root / name / elpv_label(c, "defect")
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(c.path, d / c.file_name)
        out[name] = len(part)
    return out


def score(onnx: Path, holdout: Path, log: Path) -> dict:
    """Serve ``onnx`` over HTTP and score every image of ``holdout``."""
    names, samples = scan_folder(holdout)
    labels = served_labels(onnx, [p for p, _ in samples], log, quiet=True)
    pred = [names.index(x) for x in labels]
    m = classification_metrics(confusion_matrix([y for _, y in samples], pred, len(names)), names)
    return {"onnx": str(onnx), **m}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-split", type=Path)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--pipeline", type=Path)
    ap.add_argument("--holdout", type=Path)
    args = ap.parse_args(argv)
    if args.make_split:
        print(json.dumps(make_split(args.make_split, args.seed)))
    if args.pipeline:
        if not args.holdout:
            ap.error("--pipeline needs --holdout")
        rows = {}
        for name in ("teacher", "student", "baseline"):
            f = args.pipeline / f"{name}.onnx"
            if f.is_file():
                rows[name] = score(f, args.holdout, args.pipeline / f"holdout-{name}-server.log")
        classes = next(iter(rows.values()))["classes"]
        print(
            f"{'model':<10} {'images':>6} {'accuracy':>9} {'balanced':>9} "
            + " ".join(f"{'recall ' + c:>18}" for c in classes)
        )
        for name, m in rows.items():
            print(
                f"{name:<10} {m['images']:>6} {100 * m['accuracy']:>8.2f}% {100 * m['balanced_accuracy']:>8.2f}% "
                + " ".join(f"{100 * m['per_class'][c]['recall']:>17.2f}%" for c in classes)
            )
        if "teacher" in rows and "student" in rows:
            print(
                f"student / teacher accuracy: {rows['student']['accuracy'] / rows['teacher']['accuracy']:.4f}"
            )
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "elpv_holdout.json").write_text(
            json.dumps(
                {
                    **provenance(),
                    "pipeline": str(args.pipeline),
                    "holdout": str(args.holdout),
                    "models": rows,
                },
                indent=2,
            )
        )
        print(f"wrote {RESULTS / 'elpv_holdout.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
