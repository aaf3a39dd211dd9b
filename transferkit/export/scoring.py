"""Scoring an ONNX file with ONNX Runtime on the CPU execution provider (torch-free): open it,
run labelled images through it (decoded and preprocessed by :mod:`transferkit.imaging`, the code
the HTTP server runs), classification metrics (:mod:`transferkit.metrics`) and latency.

:func:`onnx_figures` is the entry point for labelled samples (the pipeline report and ``bench/``);
:func:`transferkit.export.evaluate.evaluate_onnx` builds on it for a dataset and a split.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.data.folder import Sample
from transferkit.errors import UsageError
from transferkit.filetype import EXPORT_HINT, not_onnx_reason
from transferkit.imaging import ImageDecodeError, load_image, preprocess
from transferkit.metadata import MetadataError, ModelMetadata
from transferkit.metrics import classification_metrics, confusion_matrix

__all__ = ["Scores", "latency_ms", "onnx_figures", "open_model", "score_samples", "figures"]

log = logging.getLogger(__name__)

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
        raise UsageError(f"threads must be >= 0 (0 = automatic); got {threads}")
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path}: file not found")
    threads = threads or min(4, os.cpu_count() or 1)
    reason = not_onnx_reason(path)  # ORT's answer to any wrong file: "Protobuf parsing failed"
    if reason is not None:
        raise UsageError(reason)
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf

    try:
        sess = _session(path, threads)
    except InvalidProtobuf as exc:  # a file of another kind that nothing above recognised
        raise UsageError(
            f"{path} is not an ONNX model (it does not parse as one): {EXPORT_HINT}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - ORT raises its own, non-exported exception types
        raise UsageError(f"{path} is not a loadable ONNX model: {exc}") from exc
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
        raise UsageError(
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


def figures(
    sess, meta: ModelMetadata, samples: Sequence[Sample], batch_sizes: Sequence[int], runs: int
) -> tuple[Scores, dict[str, Any]]:
    """Score ``samples``, then classification metrics (:mod:`transferkit.metrics`) and latency.

    Returns:
        ``(Scores, {"accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix",
        "classes", "images", "latency_ms": {"<batch>": {"p50", "p99"}}, "skipped" (count),
        "skipped_files" (their paths)})``.
    """
    scores = score_samples(sess, meta, samples, keep_inputs=max(batch_sizes, default=0))
    k = len(meta.class_names)
    cm = confusion_matrix(scores.labels, scores.logits.argmax(axis=1), k)
    figures = classification_metrics(cm, meta.class_names)
    figures["latency_ms"] = _latency(sess, scores.inputs, batch_sizes, runs)
    figures["skipped"] = len(scores.skipped)
    figures["skipped_files"] = list(scores.skipped)
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
        raise UsageError("onnx_figures: no labelled images to evaluate on")
    path = Path(path)
    sess, meta, threads = open_model(path, threads)
    _, f = figures(sess, meta, samples, batch_sizes, runs)
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
