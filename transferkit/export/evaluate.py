"""``transferkit evaluate``: an exported ONNX file measured on one split of a dataset as it will
be served (accuracy, per-class metrics, latency; ONNX Runtime on the CPU, torch-free).

The folder's classes are mapped to the model's by name, and the misclassified files go to a CSV.
Scoring itself is :mod:`transferkit.export.scoring` (also behind the pipeline report and
``bench/``): images are decoded and preprocessed by :mod:`transferkit.imaging`, the code the HTTP
server runs, so an accuracy here is the accuracy of serving those files.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.config import DataConfig, EvaluateConfig, validate
from transferkit.data.folder import Sample, Splits, resolve_splits
from transferkit.errors import UsageError
from transferkit.export.scoring import (
    Scores,
    figures,
    latency_ms,
    onnx_figures,
    open_model,
    score_samples,
)
from transferkit.metrics import softmax

__all__ = [
    "SPLITS",
    "Scores",
    "onnx_figures",
    "evaluate_onnx",
    "open_model",
    "score_samples",
    "latency_ms",
    "write_misclassified",
]

#: Values of ``split``: one split of :func:`transferkit.data.folder.resolve_splits`, or all three.
SPLITS = ("test", "val", "train", "all")


def _split_samples(splits: Splits, split: str) -> list[Sample]:
    """The samples of one split, or of all three; empty splits are refused.

    Raises:
        ValueError: the split holds no image.
    """
    samples = sorted(splits.train + splits.val + splits.test) if split == "all" else None
    samples = samples if samples is not None else list(getattr(splits, split))
    if not samples:
        counts = ", ".join(f"{k} {v}" for k, v in splits.counts().items())
        raise UsageError(
            f"the {split} split of {splits.source} is empty ({counts} images); choose "
            "another --split or change the split fractions"
        )
    return samples


def _to_model_classes(
    samples: Sequence[Sample], splits: Splits, model_classes: Sequence[str]
) -> list[Sample]:
    """Re-index labels from the folder's class order to the model's, matching names.

    Raises:
        ValueError: a folder class (one that has images here) is not a class of the model.
    """
    folder_classes = splits.class_names
    index = {name: i for i, name in enumerate(model_classes)}
    used = sorted({folder_classes[y] for _, y in samples})
    unknown = [name for name in used if name not in index]
    if unknown:
        raise UsageError(
            f"the dataset has class folder(s) {', '.join(map(repr, unknown))} that the model does not "
            f"know; the model's classes are {', '.join(map(repr, model_classes))}"
        )
    return [(p, index[folder_classes[y]]) for p, y in samples]


def write_misclassified(path: str | Path, scores: Scores, class_names: Sequence[str]) -> int:
    """Write the misclassified images as CSV, most confident mistakes first (ties: by path).

    Columns: ``path, true, predicted, confidence, p_<class>...``: class names, the predicted
    class's softmax probability and every class's (6 decimals). Parent folders are created.

    Args:
        path: the CSV file (overwritten).
        scores: from :func:`score_samples`.
        class_names: the model's ``K`` class names.

    Returns:
        The number of misclassified images (rows written below the header).
    """
    probs = softmax(scores.logits)
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != scores.labels)
    rows = sorted(wrong, key=lambda i: (-probs[i, pred[i]], scores.paths[i]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "true", "predicted", "confidence", *(f"p_{c}" for c in class_names)])
        for i in rows:
            w.writerow(
                [
                    scores.paths[i],
                    class_names[scores.labels[i]],
                    class_names[pred[i]],
                    f"{probs[i, pred[i]]:.6f}",
                    *(f"{p:.6f}" for p in probs[i]),
                ]
            )
    return len(rows)


def evaluate_onnx(
    model: str | Path,
    dataset: str,
    split: str = "test",
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    threads: int = 0,
    batch_sizes: Sequence[int] = (1, 32),
    latency_runs: int = 50,
    errors_csv: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate an exported ONNX classifier on one split of a dataset with ONNX Runtime alone.

    The split is the one training used for the same fractions and seed
    (:func:`transferkit.data.folder.resolve_splits`); ``all`` is every image of the folder. Folder
    classes are matched to the model's by name (a model class without images has support 0).

    Args:
        model: a ``.onnx`` file written by ``transferkit export``.
        dataset: a folder (``<class>/<image>``, or pre-split ``train/ val/ test/``) or a bundled
            dataset name (``digits``, ``elpv``, ...).
        split: one of :data:`SPLITS`.
        val_fraction / test_fraction / seed: the split of a folder that is not pre-split.
        threads: ORT intra-op threads (0 = the machine's CPUs, at most 4).
        batch_sizes: batch sizes whose latency is measured.
        latency_runs: timed runs per batch size.
        errors_csv: where the misclassified images go (see :func:`write_misclassified`);
            default ``<model stem>.<split>.misclassified.csv`` in the current folder.

    Returns:
        The metrics of :func:`transferkit.export.scoring.figures` (accuracy, per-class, confusion
        matrix, latency, skipped files; fractions in [0, 1]) and ``"model"``, ``"dataset"``,
        ``"split"``, ``"threads"``, ``"misclassified"`` (count), ``"misclassified_csv"`` (absolute
        path). JSON-serialisable.

    Raises:
        ValueError: unknown ``split``, bad fractions/threads/runs (``ConfigError``), a file that
            is not ONNX, a folder class the model lacks, an empty split, no readable image.
        FileNotFoundError / MetadataError: no model file / no transferkit metadata in it.
        DatasetError: the dataset is neither a folder nor a bundled name, or holds no images.
    """
    _check_ranges(split, dataset, val_fraction, test_fraction, threads, batch_sizes, latency_runs)
    csv_path = _errors_csv(model, split, errors_csv)
    model = Path(model)
    sess, meta, threads = open_model(model, threads)
    splits = resolve_splits(dataset, val_fraction, test_fraction, seed)
    samples = _to_model_classes(_split_samples(splits, split), splits, meta.class_names)
    scores, result = figures(sess, meta, samples, batch_sizes, latency_runs)
    wrong = write_misclassified(csv_path, scores, meta.class_names)
    return {
        "model": str(model.resolve()),
        "dataset": splits.source,
        "split": split,
        **result,
        "threads": threads,
        "misclassified": wrong,
        "misclassified_csv": str(csv_path.resolve()),
    }


def _check_ranges(split, dataset, val_fraction, test_fraction, threads, batch_sizes, runs) -> None:
    """Refuse bad arguments before the (long) scoring, naming the field and its allowed values.

    Raises:
        ValueError: unknown ``split``; ``ConfigError`` for a value out of its config range.
    """
    if split not in SPLITS:
        raise UsageError(f"split {split!r}: allowed values are {', '.join(SPLITS)}")
    data = {"dataset": dataset, "val_fraction": val_fraction, "test_fraction": test_fraction}
    validate(DataConfig, data, "evaluate")
    run = {"threads": threads, "latency_batches": list(batch_sizes), "latency_runs": runs}
    validate(EvaluateConfig, run, "evaluate")


def _errors_csv(model: str | Path, split: str, errors_csv: str | Path | None) -> Path:
    """The misclassified-images CSV: ``errors_csv``, or ``<model stem>.<split>.misclassified.csv``.

    Raises:
        ValueError: the path is a folder.
    """
    path = Path(errors_csv or f"{Path(model).stem}.{split}.misclassified.csv")
    if path.is_dir():
        raise UsageError(f"--errors {path}: is a folder; give the path of a .csv file to write")
    return path
