"""An exported ONNX file measured as it will be served: accuracy, per-class metrics and latency
with ONNX Runtime on the CPU execution provider (torch-free).

Two entry points share one scoring path (:func:`score_samples`, then :func:`_figures`):

* :func:`onnx_figures` takes labelled samples (the pipeline report and ``bench/``);
* :func:`evaluate_onnx` takes a dataset and a split (``transferkit evaluate``), maps the folder's
  classes to the model's by name and writes the misclassified files to a CSV.

Images are decoded and preprocessed by :mod:`transferkit.imaging`, the code the HTTP server runs,
so an accuracy here is the accuracy of serving those files.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.config import DataConfig, EvaluateConfig, validate
from transferkit.data.folder import Sample, Splits, resolve_splits
from transferkit.imaging import ImageDecodeError, load_image, preprocess
from transferkit.metadata import MetadataError, ModelMetadata
from transferkit.metrics import classification_metrics, confusion_matrix, softmax

__all__ = [
    "SPLITS",
    "Scores",
    "onnx_figures",
    "evaluate_onnx",
    "score_samples",
    "latency_ms",
    "write_misclassified",
]

log = logging.getLogger(__name__)

#: Values of ``split``: one split of :func:`transferkit.data.folder.resolve_splits`, or all three.
SPLITS = ("test", "val", "train", "all")

_CHUNK = 64  # images decoded and run per ORT call while scoring (bounds memory on big splits)


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def open_model(path: str | Path, threads: int = 0) -> tuple[Any, ModelMetadata, int]:
    """Open a transferkit ONNX file on the CPU execution provider.

    Args:
        path: the ``.onnx`` file.
        threads: ORT intra-op threads; 0 = the machine's CPUs, at most 4.

    Returns:
        ``(onnxruntime.InferenceSession, its ModelMetadata, the thread count used)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: ``threads`` < 0, or the file is not a loadable ONNX model.
        MetadataError: the file carries no (or malformed) transferkit metadata.
    """
    path = Path(path)
    if threads < 0:
        raise ValueError(f"threads must be >= 0 (0 = automatic); got {threads}")
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path}: file not found")
    threads = threads or min(4, os.cpu_count() or 1)
    try:
        sess = _session(path, threads)
    except Exception as exc:  # noqa: BLE001 - ORT raises its own, non-exported exception types
        raise ValueError(f"{path} is not a loadable ONNX model: {exc}") from exc
    try:
        meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    except MetadataError as exc:
        raise MetadataError(f"{path}: {exc}") from exc
    return sess, meta, threads


def _io_names(sess, meta: ModelMetadata) -> tuple[str, str]:
    """The metadata's input/output names where the graph has them, else its first ones (as the
    server chooses them)."""
    inputs = [i.name for i in sess.get_inputs()]
    outputs = [o.name for o in sess.get_outputs()]
    return (
        meta.input_name if meta.input_name in inputs else inputs[0],
        meta.output_name if meta.output_name in outputs else outputs[0],
    )


def latency_ms(sess, x: np.ndarray, runs: int, warmup: int = 10) -> tuple[float, float]:
    """``(p50, p99)`` wall time of ``sess.run`` on ``x`` in milliseconds, after ``warmup`` runs.

    Args:
        sess: an ``onnxruntime.InferenceSession`` with one input.
        x: float32 ``[N, C, H, W]``.
        runs: timed runs (>= 1).
    """
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x})
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


@dataclass
class Scores:
    """One model's outputs on labelled images.

    Attributes:
        paths: the ``N`` images that decoded, in input order.
        labels: int64 ``[N]`` true class indices into the model's class names.
        logits: float32 ``[N, K]`` model outputs.
        skipped: files that could not be read or decoded (logged, not scored).
        inputs: float32 ``[M, C, H, W]``, the first ``M`` preprocessed images (``M`` <= the
            largest latency batch), used to time the model on real inputs.
    """

    paths: list[str]
    labels: np.ndarray
    logits: np.ndarray
    skipped: list[str]
    inputs: np.ndarray


def score_samples(
    sess, meta: ModelMetadata, samples: Sequence[Sample], keep_inputs: int = 0
) -> Scores:
    """Decode, preprocess (:mod:`transferkit.imaging`, as the server does) and run every sample.

    Args:
        sess: an ``onnxruntime.InferenceSession`` of the model ``meta`` describes.
        meta: its metadata (preprocessing, input/output names).
        samples: ``(image path, class index)``, indices into ``meta.class_names``.
        keep_inputs: how many preprocessed images to keep in :attr:`Scores.inputs`.

    Returns:
        The :class:`Scores`; unreadable images are skipped with a logged warning.

    Raises:
        ValueError: no sample decodes.
    """
    in_name, out_name = _io_names(sess, meta)
    prep = meta.preprocessing
    paths: list[str] = []
    labels: list[int] = []
    logits: list[np.ndarray] = []
    kept: list[np.ndarray] = []
    skipped: list[str] = []
    for start in range(0, len(samples), _CHUNK):
        batch = []
        for path, label in samples[start : start + _CHUNK]:
            try:
                batch.append(preprocess(load_image(path), prep))
            except ImageDecodeError as exc:
                log.warning("skipping an unreadable image: %s", exc)
                skipped.append(str(path))
                continue
            paths.append(str(path))
            labels.append(int(label))
        if not batch:
            continue
        x = np.stack(batch)
        kept += batch[: max(0, keep_inputs - len(kept))]
        logits.append(sess.run([out_name], {in_name: x})[0])
    if not paths:
        raise ValueError(
            f"none of the {len(samples)} images could be read (see the warnings above)"
        )
    shape = (0, prep.channels, prep.input_size, prep.input_size)
    return Scores(
        paths,
        np.asarray(labels, dtype=np.int64),
        np.concatenate(logits),
        skipped,
        np.stack(kept) if kept else np.zeros(shape, np.float32),
    )


def _latency(
    sess, inputs: np.ndarray, batch_sizes: Sequence[int], runs: int
) -> dict[str, dict[str, float]]:
    """p50/p99 ms per batch size, real images repeated to fill the batch (model run only)."""
    out = {}
    for b in batch_sizes:
        p50, p99 = latency_ms(
            sess, np.resize(inputs, (b, *inputs.shape[1:])), runs if b <= 8 else max(10, runs // 5)
        )
        out[str(b)] = {"p50": p50, "p99": p99}
    return out


def _figures(
    sess, meta: ModelMetadata, samples: Sequence[Sample], batch_sizes: Sequence[int], runs: int
) -> tuple[Scores, dict[str, Any]]:
    """Score ``samples``, then classification metrics (:mod:`transferkit.metrics`) and latency."""
    scores = score_samples(sess, meta, samples, keep_inputs=max(batch_sizes, default=0))
    k = len(meta.class_names)
    cm = confusion_matrix(scores.labels, scores.logits.argmax(axis=1), k)
    figures = classification_metrics(cm, meta.class_names)
    figures["latency_ms"] = _latency(sess, scores.inputs, batch_sizes, runs)
    figures["skipped"] = len(scores.skipped)
    return scores, figures


def onnx_figures(
    path: str | Path,
    samples: Sequence[Sample],
    threads: int = 0,
    batch_sizes: Sequence[int] = (1, 32),
    runs: int = 50,
) -> dict[str, Any]:
    """Accuracy, per-class metrics and latency of one ONNX file on labelled images.

    Args:
        path: a transferkit ONNX file (class names and preprocessing in its metadata).
        samples: ``(image path, class index)`` with indices into the file's class names.
        threads: ORT intra-op threads (0 = the machine's CPUs, at most 4).
        batch_sizes: latency is measured at each (real images, repeated to fill the batch).
        runs: timed runs per batch size (batch sizes above 8 get a fifth, at least 10).

    Returns:
        ``{"onnx", "arch", "parameters", "file_mb", "input_size", "test_acc", "test_images",
        "threads", "latency_ms": {"<batch>": {"p50", "p99"}}, "balanced_accuracy", "macro_f1",
        "per_class": {name: {"precision", "recall", "f1", "support"}}, "confusion_matrix",
        "classes", "skipped"}``; ``test_images`` counts the images scored (unreadable ones are
        skipped and counted in ``skipped``); latency excludes decoding and preprocessing.

    Raises:
        ValueError: no samples, none readable, a class index out of range, or a file that is not
            a loadable ONNX model.
        FileNotFoundError: no such file.
        MetadataError: the file has no transferkit metadata.
    """
    if not samples:
        raise ValueError("onnx_figures: no labelled images to evaluate on")
    path = Path(path)
    sess, meta, threads = open_model(path, threads)
    _, f = _figures(sess, meta, samples, batch_sizes, runs)
    return {
        "onnx": str(path),
        "arch": meta.arch,
        "parameters": int(meta.extra.get("parameters", 0)),
        "file_mb": path.stat().st_size / 1e6,
        "input_size": meta.preprocessing.input_size,
        "test_acc": f["accuracy"],
        "test_images": f["images"],
        "threads": threads,
        "latency_ms": f["latency_ms"],
        **{
            k: f[k]
            for k in (
                "balanced_accuracy",
                "macro_f1",
                "per_class",
                "confusion_matrix",
                "classes",
                "skipped",
            )
        },
    }


def _split_samples(splits: Splits, split: str) -> list[Sample]:
    if split == "all":
        return sorted(splits.train + splits.val + splits.test)
    return list(getattr(splits, split))


def _to_model_classes(
    samples: Sequence[Sample], folder_classes: Sequence[str], model_classes: Sequence[str]
) -> list[Sample]:
    """Re-index labels from the folder's class order to the model's, matching names.

    Raises:
        ValueError: a folder class (one that has images here) is not a class of the model.
    """
    index = {name: i for i, name in enumerate(model_classes)}
    used = sorted({folder_classes[y] for _, y in samples})
    unknown = [name for name in used if name not in index]
    if unknown:
        raise ValueError(
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

    The split is the one training used for the same ``val_fraction``, ``test_fraction`` and
    ``seed`` (:func:`transferkit.data.folder.resolve_splits`); ``all`` is train + val + test,
    i.e. every image of the folder. Folder classes are matched to the model's class names by
    name; a model class without images has support 0.

    Args:
        model: a ``.onnx`` file written by ``transferkit export``.
        dataset: a folder (``<class>/<image>``, or pre-split ``train/ val/ test/``) or a bundled
            dataset name (``digits``, ``elpv``, ...).
        split: one of :data:`SPLITS`.
        val_fraction / test_fraction / seed: the split of a folder that is not pre-split
            (``DataConfig``'s ranges apply).
        threads: ORT intra-op threads (0 = the machine's CPUs, at most 4).
        batch_sizes: batch sizes whose latency is measured.
        latency_runs: timed runs per batch size (``EvaluateConfig``'s range applies).
        errors_csv: where the misclassified images go (see :func:`write_misclassified`);
            default ``<model stem>.<split>.misclassified.csv`` in the current folder.

    Returns:
        ``{"model", "dataset", "split", "images", "accuracy", "balanced_accuracy", "macro_f1",
        "per_class": {name: {"precision", "recall", "f1", "support"}}, "confusion_matrix"
        ([K][K] ints, rows = true class, columns = predicted, in ``classes`` order), "classes",
        "latency_ms": {"<batch>": {"p50", "p99"}} (model run only), "threads", "misclassified"
        (count), "misclassified_csv" (absolute path), "skipped" (unreadable images)}``; fractions
        in [0, 1]. JSON-serialisable.

    Raises:
        ValueError: unknown ``split``, bad fractions/threads/runs (``ConfigError``), a file that
            is not ONNX, a folder class the model lacks, an empty split, no readable image.
        FileNotFoundError: the model file does not exist.
        MetadataError: the ONNX file has no transferkit metadata.
        DatasetError: the dataset is neither a folder nor a bundled name, or holds no images.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: allowed values are {', '.join(SPLITS)}")
    validate(
        DataConfig,
        {"dataset": dataset, "val_fraction": val_fraction, "test_fraction": test_fraction},
        "evaluate",
    )
    validate(
        EvaluateConfig,
        {"threads": threads, "latency_batches": list(batch_sizes), "latency_runs": latency_runs},
        "evaluate",
    )
    model = Path(model)
    csv_path = (
        Path(errors_csv)
        if errors_csv is not None
        else Path(f"{model.stem}.{split}.misclassified.csv")
    )
    if csv_path.is_dir():  # refused before the (long) scoring, not after it
        raise ValueError(f"--errors {csv_path}: is a folder; give the path of a .csv file to write")
    sess, meta, threads = open_model(model, threads)
    splits = resolve_splits(dataset, val_fraction, test_fraction, seed)
    samples = _split_samples(splits, split)
    if not samples:
        counts = ", ".join(f"{k} {v}" for k, v in splits.counts().items())
        raise ValueError(
            f"the {split} split of {splits.source} is empty ({counts} images); choose "
            "another --split or change the split fractions"
        )
    samples = _to_model_classes(samples, splits.class_names, meta.class_names)
    scores, figures = _figures(sess, meta, samples, batch_sizes, latency_runs)
    wrong = write_misclassified(csv_path, scores, meta.class_names)
    return {
        "model": str(model.resolve()),
        "dataset": splits.source,
        "split": split,
        **figures,
        "threads": threads,
        "misclassified": wrong,
        "misclassified_csv": str(csv_path.resolve()),
    }
