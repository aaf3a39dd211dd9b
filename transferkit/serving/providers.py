"""Where an ONNX Runtime session runs: execution providers and intra-op threads.

CUDA is asked for only when ORT has it built in *and* the driver sees a GPU (asked through
``libcuda``, no torch); threads default to the CPUs this process may use, at most 4, because
ORT's own default (one per physical core of the host) oversubscribes a server with several
sessions.
"""

from __future__ import annotations

import ctypes
import logging
import os

import onnxruntime as ort

__all__ = ["gpu_present", "default_providers", "available_cpus", "resolve_threads"]

log = logging.getLogger(__name__)

_MAX_AUTO_THREADS = 4


def gpu_present() -> bool:
    """Whether the CUDA driver sees at least one GPU (asked through ``libcuda``; no torch).

    Returns:
        True when ``cuInit`` succeeds and ``cuDeviceGetCount`` reports one or more devices.
    """
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    try:
        return (
            cuda.cuInit(0) == 0
            and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0
            and count.value > 0
        )
    except (AttributeError, OSError):
        return False


def default_providers() -> list[str]:
    """ORT execution providers to ask for: CUDA first only when built in *and* a GPU is present.

    Asking for CUDA on a machine without a GPU logs an error before falling back, so the CPU
    provider alone is requested there.

    Returns:
        Provider names in priority order.
    """
    if "CUDAExecutionProvider" in ort.get_available_providers() and gpu_present():
        if hasattr(ort, "preload_dlls"):  # CUDA/cuDNN from the nvidia-* wheels, without torch
            try:
                ort.preload_dlls()
            except Exception as exc:  # noqa: BLE001 - best effort; ORT reports what is missing
                log.warning("onnxruntime.preload_dlls failed: %s", exc)
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def available_cpus() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells).

    Returns:
        At least 1.
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def resolve_threads(requested: int, models: int = 1) -> int:
    """ORT intra-op threads: ``0`` = this model's share of the CPUs, ``available CPUs // models``
    (at least 1, at most 4); never more than the CPUs.

    Two models on 2 CPUs get one thread each: with two threads each, the four compete for two
    cores and, at 32 clients, throughput halved and p99 tripled (issue 13, ``bench/serve.py``).

    Args:
        requested: threads asked for (0 = automatic).
        models: how many models this process serves (the automatic share divides by it).

    Returns:
        The thread count to use (a warning is logged when ``requested`` was capped).

    Raises:
        ValueError: ``requested`` is negative.
    """
    if requested < 0:
        raise ValueError(f"intra_op_threads must be >= 0 (0 = automatic); got {requested}")
    cpus = available_cpus()
    if requested == 0:
        return max(1, min(cpus // max(1, models), _MAX_AUTO_THREADS))
    if requested > cpus:
        log.warning(
            "intra_op_threads=%d exceeds the %d available CPUs; using %d", requested, cpus, cpus
        )
    return min(requested, cpus)
