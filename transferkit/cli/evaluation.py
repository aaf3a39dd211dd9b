"""``transferkit evaluate``: an ONNX file scored with ONNX Runtime alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from transferkit.cli.common import app, fail, run


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="An .onnx file written by `transferkit export`."),
    dataset: str = typer.Option(
        ..., help="Bundled name (digits, elpv, ...) or an ImageFolder path."
    ),
    split: str = typer.Option(
        "test", help="test, val, train, or all (every image of the dataset)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object on stdout instead of the summary."
    ),
    val_fraction: float = typer.Option(
        0.1, help="Split of a folder that is not pre-split (as in training)."
    ),
    test_fraction: float = typer.Option(
        0.1, help="Split of a folder that is not pre-split (as in training)."
    ),
    seed: int = typer.Option(0, help="Split seed (as in training)."),
    threads: int = typer.Option(0, help="ONNX Runtime intra-op threads (0 = automatic)."),
    errors: Path | None = typer.Option(
        None,
        "--errors",
        help="CSV of the misclassified images (default: MODEL_STEM.SPLIT.misclassified.csv here).",
    ),
    latency_runs: int = typer.Option(
        50, help="Timed model runs per batch size (batches 1 and 32)."
    ),
) -> None:
    """Score an ONNX model on a dataset split with ONNX Runtime alone: accuracy, balanced
    accuracy, per-class precision/recall/F1, confusion matrix, latency, and a CSV of the mistakes."""
    from transferkit.export.evaluate import SPLITS

    if split not in SPLITS:
        fail(f"--split {split!r}: allowed values are {', '.join(SPLITS)}")
    from transferkit.export.evaluate import evaluate_onnx

    result = run(
        evaluate_onnx,
        model,
        dataset,
        split,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        threads=threads,
        latency_runs=latency_runs,
        errors_csv=errors,
    )
    if as_json:
        import json

        typer.echo(json.dumps(result))
        return
    _print_evaluation(result)


def _print_evaluation(r: dict[str, Any]) -> None:
    names = r["classes"]
    typer.echo(
        f"{r['model']} on the {r['split']} split of {r['dataset']}: {r['images']} images"
        + (f" ({r['skipped']} unreadable, skipped)" if r["skipped"] else "")
    )
    typer.echo(
        f"accuracy {r['accuracy']:.4f}  balanced accuracy {r['balanced_accuracy']:.4f}  "
        f"macro F1 {r['macro_f1']:.4f}\n"
    )
    w = max([len(n) for n in names] + [5])
    typer.echo(f"{'class':<{w}}  precision  recall      f1  support")
    for n in names:
        c = r["per_class"][n]
        typer.echo(
            f"{n:<{w}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:6.4f}  {c['support']:7d}"
        )
    cm = r["confusion_matrix"]
    cw = max([len(n) for n in names] + [len(str(v)) for row in cm for v in row])
    typer.echo(
        f"\nconfusion matrix (rows: true class, columns: predicted)\n{'':<{w}}  "
        + " ".join(f"{n:>{cw}}" for n in names)
    )
    for n, row in zip(names, cm):
        typer.echo(f"{n:<{w}}  " + " ".join(f"{v:>{cw}}" for v in row))
    if r["latency_ms"]:
        typer.echo(
            f"\nlatency (ONNX Runtime, CPU, {r['threads']} threads, model run only): "
            + ", ".join(
                f"batch {b} p50 {t['p50']:.2f} ms / p99 {t['p99']:.2f} ms"
                for b, t in r["latency_ms"].items()
            )
        )
    typer.echo(
        f"{r['misclassified']} misclassified images, most confident first: {r['misclassified_csv']}"
    )
