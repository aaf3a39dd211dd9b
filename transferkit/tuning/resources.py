"""What a search needs from the Ray cluster, checked before any trial starts, and handed back
after it."""

from __future__ import annotations

import logging
import math
import time

from transferkit.config import ConfigError, DistillTuneConfig, TuneConfig

log = logging.getLogger(__name__)

_EPS = 1e-6


def plan_concurrency(
    cfg: TuneConfig | DistillTuneConfig,
    cluster: dict[str, float],
    tune_field: str = "tune",
    scaling_field: str = "scaling",
) -> int | None:
    """How many trials run at once, checked against the cluster's resources.

    A trial holds ``tune.trial_cpu`` for its driver function plus ``num_workers`` x
    ``cpus_per_worker`` (and GPUs) for its Ray Train workers. A trial that cannot fit the cluster
    would wait forever (Tune schedules the driver, whose workers never start), so it is refused.

    Args:
        cfg: the search config.
        cluster: ``ray.cluster_resources()``.
        tune_field / scaling_field: where ``cfg.tune`` and ``cfg.scaling`` come from, as the
            messages name them (a pipeline's search says ``teacher.tune``, ``teacher.tune.scaling``).

    Returns:
        ``max_concurrent_trials`` for Tune (``None`` = no limit, on an autoscaling cluster).

    Raises:
        ConfigError: one trial, or the asked concurrency, does not fit; names the field and what
            would fit.
    """
    s, t, tf, sf = cfg.scaling, cfg.tune, tune_field, scaling_field
    cpus, gpus = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    worker_cpu = s.num_workers * s.cpus_per_worker
    worker_gpu = s.num_workers * s.gpus_per_worker if s.use_gpu else 0.0
    per_trial = t.trial_cpu + worker_cpu
    if s.autoscale:
        return t.max_concurrent_trials
    if per_trial > cpus + _EPS:
        fit_cpw = (cpus - t.trial_cpu) / s.num_workers
        raise ConfigError(
            f"{sf}: one trial needs {t.trial_cpu:g} CPU ({tf}.trial_cpu) + {s.num_workers} "
            f"worker(s) x {s.cpus_per_worker:g} CPU ({sf}.cpus_per_worker) = {per_trial:g} CPUs, "
            f"but the Ray cluster has {cpus:g}; it would wait forever. Lower {sf}.num_workers "
            f"or set {sf}.cpus_per_worker <= {math.floor(fit_cpw * 100) / 100:g}"
        )
    if worker_gpu > gpus + _EPS:
        raise ConfigError(
            f"{sf}.use_gpu: one trial needs {worker_gpu:g} GPUs but the Ray cluster has "
            f"{gpus:g}; use --no-gpu, fewer workers, or {sf}.gpus_per_worker"
        )
    fit = int((cpus + _EPS) // per_trial)
    if worker_gpu > 0:
        fit = min(fit, int((gpus + _EPS) // worker_gpu))
    concurrency = min(t.max_concurrent_trials or fit, t.num_samples)
    if concurrency * t.trial_cpu + worker_cpu > cpus + _EPS:
        most = int((cpus - worker_cpu + _EPS) // t.trial_cpu)
        raise ConfigError(
            f"{tf}.max_concurrent_trials: {concurrency} trial drivers x {t.trial_cpu:g} CPU plus one "
            f"trial's workers ({worker_cpu:g} CPU) exceed the cluster's {cpus:g} CPUs, so no trial "
            f"could start its workers; allowed: 1..{most}"
        )
    return concurrency


def check_schedule(cfg, epochs_field: str = "optim.epochs (--max-epochs)") -> None:
    """Refuse an ASHA schedule that cannot stop anything.

    Args:
        cfg: the search config.
        epochs_field: where the per-trial epochs come from, as the message names it (a
            pipeline's stage says ``teacher.tune.epochs``).

    Raises:
        ConfigError: ``tune.grace_period`` >= ``optim.epochs``.
    """
    if cfg.tune.scheduler == "asha" and cfg.tune.grace_period >= cfg.optim.epochs:
        raise ConfigError(
            f"tune.grace_period: {cfg.tune.grace_period} must be below {epochs_field} = "
            f"{cfg.optim.epochs} for ASHA to stop anything; lower it, raise the epochs, or use "
            "tune.scheduler: fifo"
        )


def wait_for_resources(timeout_s: float = 30.0) -> None:
    """Wait until the trials' reservations are back (Ray frees placement groups asynchronously)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while True:
        total, free = ray.cluster_resources(), ray.available_resources()
        missing = {
            k: total[k] - free.get(k, 0.0)
            for k in ("CPU", "GPU")
            if k in total and total[k] - free.get(k, 0.0) > _EPS
        }
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if missing:
        log.warning("after the search, %s are still reserved on the Ray cluster", missing)
