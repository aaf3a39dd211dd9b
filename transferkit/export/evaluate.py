"""An exported ONNX file measured as it will be served: test accuracy and latency with ONNX
Runtime on the CPU execution provider (torch-free; used by the pipeline report and ``bench/``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from transferkit.imaging import load_image, preprocess
from transferkit.metadata import ModelMetadata

__all__ = ["onnx_figures", "latency_ms"]


def _session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def latency_ms(sess, x: np.ndarray, runs: int, warmup: int = 10) -> tuple[float, float]:
    """``(p50, p99)`` wall time of ``sess.run`` on ``x`` in milliseconds, after ``warmup`` runs.

    Args:
        sess: an ``onnxruntime.InferenceSession`` with one input.
        x: float32 ``[N, C, H, W]``.
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


def onnx_figures(path: str | Path, samples: Sequence[tuple[str, int]], threads: int = 0,
                 batch_sizes: Sequence[int] = (1, 32), runs: int = 50) -> dict:
    """Accuracy on labelled images and latency of one ONNX file.

    Args:
        path: a transferkit ONNX file (class names and preprocessing in its metadata).
        samples: ``(image path, class index)`` with indices into the file's class names.
        threads: ORT intra-op threads (0 = the machine's CPUs, at most 4).
        batch_sizes: latency is measured at each (real images, repeated to fill the batch).
        runs: timed runs per batch size (batch sizes above 8 get a fifth, at least 10).

    Returns:
        ``{"onnx", "arch", "parameters", "file_mb", "input_size", "test_acc", "test_images",
        "threads", "latency_ms": {"<batch>": {"p50", "p99"}}}``; latency excludes decoding and
        preprocessing.

    Raises:
        ValueError: no samples.
    """
    if not samples:
        raise ValueError("onnx_figures: no labelled images to evaluate on")
    path = Path(path)
    threads = threads or min(4, os.cpu_count() or 1)
    sess = _session(path, threads)
    meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    x = np.stack([preprocess(load_image(p), meta.preprocessing) for p, _ in samples])
    y = np.array([label for _, label in samples])
    name = sess.get_inputs()[0].name
    preds = np.concatenate([sess.run(None, {name: x[i:i + 64]})[0].argmax(1)
                            for i in range(0, len(x), 64)])
    latency = {}
    for b in batch_sizes:
        p50, p99 = latency_ms(sess, np.resize(x, (b, *x.shape[1:])), runs if b <= 8 else max(10, runs // 5))
        latency[str(b)] = {"p50": p50, "p99": p99}
    return {"onnx": str(path), "arch": meta.arch, "parameters": int(meta.extra.get("parameters", 0)),
            "file_mb": path.stat().st_size / 1e6, "input_size": meta.preprocessing.input_size,
            "test_acc": float((preds == y).mean()), "test_images": int(len(y)), "threads": threads,
            "latency_ms": latency}
