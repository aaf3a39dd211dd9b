"""``transferkit tune``: a Ray Tune search in which every trial is a Ray Train run.

Each trial is a Tune *function trainable* holding a token CPU (``tune.trial_cpu``); it builds a
``TorchTrainer`` over the same per-worker loop as ``finetune``/``distill`` whose ``RunConfig`` has
Ray's ``TuneReportCallback``, so every epoch's metrics reach Tune and ASHA can stop a trial
between epochs. The trial's Ray Train run is stored at ``EXPERIMENT/<trial_id>/train``, so a trial
restarted by ``--resume`` continues from its last checkpoint.

The first trial of every search is the base config's own values of the searched parameters
(Ray Tune's ``points_to_evaluate``; :func:`transferkit.tuning.space.seed_with_base` says what
happens to a base value outside the searched domain). It counts among ``tune.num_samples`` and
ASHA treats it like any other trial; the summary compares it with the best trial (``default``,
``best_is_default``). ``--resume`` restores the searcher's saved state, in which that point has
already been handed out, so it is not run again. "Best" is ``tune.metric`` (``val_loss``
minimised, the accuracy-like metrics maximised), for the epoch within a trial and across trials.

Experiment folder (``cfg.output``)::

    tune_config.yaml      the resolved search config (``--resume`` reads it)
    search_context.json   splits and preprocessing every trial trains on
    versions.json         package versions
    <trial_id>/           Tune's logs of one trial (progress.csv, result.json, TensorBoard events)
    <trial_id>/train/     the trial's Ray Train run (checkpoints)
    trials.csv            one row per trial: sampled values, is_default, best_val_acc and
                          best_val_loss (and best_<metric> for another tune.metric) at the
                          trial's best epoch, epochs_run, stopped_early, wall time, checkpoint
    best_config.yaml      the best trial as a config ``transferkit finetune --config`` accepts
    best_trial.json       the summary: the best trial (id, values, metrics, checkpoint path)
                          and the default trial beside it
    tune_plot.png         each trial's best tune.metric against each searched value (a star
                          marks the default trial)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import yaml

from transferkit.config import (
    ConfigError,
    DistillConfig,
    DistillTuneConfig,
    Range,
    TuneConfig,
    validate,
)
from transferkit.errors import TransferkitError
from transferkit.tuning.context import SearchContext, trial_base
from transferkit.tuning.space import (
    apply_sample,
    base_values,
    param_space,
    same_value,
    seed_with_base,
)
from transferkit.tuning.storage import ExperimentDir

__all__ = [
    "SearchContext",
    "trial_base",
    "tune_search",
    "resume_search",
    "run_trial",
    "plan_concurrency",
    "check_schedule",
    "SearchInterrupted",
    "SearchFailedError",
    "TRIALS_CSV",
    "BEST_CONFIG",
    "BEST_TRIAL",
    "PLOT",
]

log = logging.getLogger(__name__)

TUNE_CONFIG = "tune_config.yaml"
CONTEXT = "search_context.json"
TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best_config.yaml"
BEST_TRIAL = "best_trial.json"
PLOT = "tune_plot.png"
_EPS = 1e-6


class SearchInterrupted(TransferkitError, RuntimeError):
    """The search stopped (SIGINT) before every trial finished; ``--resume`` continues it."""


class SearchFailedError(TransferkitError, RuntimeError):
    """No trial produced a result (the first trial error is chained in the message)."""


# ----------------------------------------------------------------------------- resources


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


# ----------------------------------------------------------------------------- the trial


def _trial_dirname(trial) -> str:
    return trial.trial_id


def run_trial(config: dict[str, Any], context: SearchContext) -> None:
    """One Tune trial: a Ray Train run of the sampled config (runs inside the trial's actor).

    Args:
        config: the sampled values (``{"freeze_depth": 3, "backbone_lr": 1e-3, ...}``), applied to
            ``context.base``; the result is typed, and the workers receive it as it is.
        context: what every trial trains on.
    """
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from transferkit.training.trainer import make_trainer

    cfg = apply_sample(context.base, config, context.space)
    trial_id = tune.get_context().get_trial_id()
    trainer = make_trainer(
        cfg,
        context.splits,
        context.preprocessing,
        name="train",
        storage_path=f"{context.experiment}/{trial_id}",
        callbacks=[TuneReportCallback()],
        teacher_preprocessing=context.teacher_preprocessing,
    )
    trainer.fit()


def _trainable(cfg, context: SearchContext):
    from ray import tune

    return tune.with_resources(
        tune.with_parameters(run_trial, context=context), {"CPU": cfg.tune.trial_cpu}
    )


# ----------------------------------------------------------------------------- set-up


def _resolve(cfg, experiment: str) -> tuple[SearchContext, dict[str, Any]]:
    """Data, model and preprocessing, checked on the driver: ``(context, param_space)``."""
    from transferkit.models import build_model
    from transferkit.training.trainer import load_splits, resolve_preprocessing

    t_prep = None
    base = trial_base(cfg)
    if isinstance(cfg, DistillTuneConfig):
        from transferkit.training.distillation import student_inputs

        resolved, splits, prep, t_prep = student_inputs(base)
        base = trial_base(cfg, teacher=resolved.teacher)
    else:
        splits, prep = load_splits(cfg), None
    if not splits.train or not splits.val:
        raise ConfigError(
            f"data: a search needs training and validation images; got {splits.counts()} "
            "(raise data.val_fraction or add a val/ folder)"
        )
    built = build_model(cfg.model, len(splits.class_names))
    prep = prep or resolve_preprocessing(built, cfg.data.image_size)
    search = type(cfg.tune.search)
    space, point = seed_with_base(
        param_space(
            cfg.tune.search,
            len(built.stages),
            cfg.model.weights is not None,
            distill=isinstance(cfg, DistillTuneConfig),
            arch=cfg.model.arch,
        ),
        base,
        search,
    )
    context = SearchContext(
        base=base,
        splits=splits,
        preprocessing=prep,
        teacher_preprocessing=t_prep if t_prep is not None and t_prep != prep else None,
        num_stages=len(built.stages),
        default_point=point,
        experiment=experiment,
        space=search,
    )
    return context, space


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


def _mode(metric: str) -> str:
    """``"min"`` or ``"max"`` for ``metric`` (Tune's ``mode``)."""
    from transferkit.training.trainer import metric_mode  # the one owner of the rule

    return metric_mode(metric)


def _tune_config(cfg, concurrency: int | None, point: dict[str, Any]):
    """Tune's config for a new search; ``point`` (the base config's values, see
    :func:`seed_with_base`) is the searcher's first trial. Only a new search builds it:
    ``Tuner.restore`` brings back the searcher it saved, which has handed the point out."""
    from ray import tune

    t = cfg.tune
    mode = _mode(t.metric)
    seed = [dict(point)] if point else None
    scheduler = None
    if t.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=cfg.optim.epochs,
            grace_period=t.grace_period,
            reduction_factor=t.reduction_factor,
        )
    if t.searcher == "optuna":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        # The point is enqueued in Optuna's study (``study.enqueue_trial``) once Tune hands the
        # searcher its space, metric and mode.
        search_alg = OptunaSearch(
            points_to_evaluate=seed, sampler=optuna.samplers.TPESampler(seed=cfg.seed)
        )
    else:
        from ray.tune.search import BasicVariantGenerator

        # BasicVariantGenerator ignores TuneConfig.max_concurrent_trials: limit it here, or every
        # trial's driver starts at once and their token CPUs crowd out the workers.
        search_alg = BasicVariantGenerator(
            points_to_evaluate=seed, random_state=cfg.seed, max_concurrent=concurrency or 0
        )
        concurrency = None  # (Tune warns when given both)
    return tune.TuneConfig(
        metric=t.metric,
        mode=mode,
        scheduler=scheduler,
        search_alg=search_alg,
        num_samples=t.num_samples,
        max_concurrent_trials=concurrency,
        trial_dirname_creator=_trial_dirname,
    )


def _callbacks(cfg, exp: ExperimentDir) -> list:
    t = cfg.tune
    if t.tracking == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        uri = (
            t.tracking_uri
            or (exp.local_path / "mlruns" if exp.local_path else Path("mlruns").resolve()).as_uri()
        )
        if uri.startswith("file:"):
            # MLflow 3 refuses its file store unless opted in; a folder beside the trials is what
            # a laptop user wants (a server or database URI needs no opt-in).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return [
            MLflowLoggerCallback(tracking_uri=uri, experiment_name=exp.name, save_artifact=False)
        ]
    if t.tracking == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        return [TBXLoggerCallback()]
    return []


def _run_config(cfg, exp: ExperimentDir):
    from ray import tune

    return tune.RunConfig(
        name=exp.name,
        storage_path=exp.parent,
        callbacks=_callbacks(cfg, exp),
        failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures),
        verbose=1,
    )


def tune_search(cfg: TuneConfig | DistillTuneConfig, overwrite: bool = False) -> dict[str, Any]:
    """Run a new search; see the module doc for what the experiment folder holds.

    Args:
        cfg: the search config (:class:`TuneConfig`; :class:`DistillTuneConfig` searches
            distillation runs of a teacher).
        overwrite: replace an existing experiment folder.

    Returns:
        Summary: experiment folder, table path, best config path, plot path, trial-epochs
        run; ``metric`` and ``mode`` (``tune.metric``, ``"max"``/``"min"``); ``best`` (trial id,
        values, ``val_acc``, ``val_loss`` and ``<metric>`` at its best epoch, checkpoint);
        ``default`` (the trial of the base config's values: trial id, values, ``<metric>``,
        ``val_acc``, ``val_loss``, best epoch, ``epochs_run``, ``stopped_early``, status; ``None``
        for a search made before searches were seeded); ``best_is_default``.

    Raises:
        ExperimentExistsError: ``cfg.output`` holds another search and ``overwrite`` is False.
        ConfigError: the search space, schedule or resources are wrong (before any trial starts).
        SearchInterrupted: stopped before every trial finished (resume with :func:`resume_search`).
        SearchFailedError: every trial failed.
        plus the data/model errors of ``finetune``/``distill``.
    """
    from transferkit.training.trainer import ensure_ray, package_versions

    check_schedule(cfg)
    exp = ExperimentDir(cfg.output)
    fresh = not exp.is_used() or overwrite
    exp.claim(overwrite)
    try:
        context, space = _resolve(cfg, exp.uri)
        ensure_ray()
        import ray

        concurrency = plan_concurrency(cfg, ray.cluster_resources())
        exp.write_text(TUNE_CONFIG, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        exp.write_text(CONTEXT, context.to_json())
        exp.write_text("versions.json", json.dumps(package_versions(), indent=2))
    except BaseException:
        if fresh:
            exp.remove()  # nothing ran: leave no half-made experiment behind
        raise
    from ray import tune

    _announce(cfg, exp, space, concurrency, context.default_point)
    tuner = tune.Tuner(
        _trainable(cfg, context),
        param_space=space,
        tune_config=_tune_config(cfg, concurrency, context.default_point),
        run_config=_run_config(cfg, exp),
    )
    tuner.fit()
    return _conclude(cfg, exp, context)


def resume_search(experiment: str) -> dict[str, Any]:
    """Continue an interrupted search (``Tuner.restore``): finished trials are kept as they are,
    unfinished and errored ones continue from their last Ray Train checkpoint.

    Raises:
        FileNotFoundError: ``experiment`` is not a transferkit search folder.
        ConfigError: its resources no longer fit the cluster.
    """
    from transferkit.training.trainer import ensure_ray

    exp = ExperimentDir(experiment)
    try:
        data = yaml.safe_load(exp.read_text(TUNE_CONFIG))
        context = SearchContext.from_json(exp.read_text(CONTEXT), source=exp.join(CONTEXT))
    except FileNotFoundError as exc:
        raise TransferkitError(
            f"--resume: {experiment} is not a transferkit search folder ({exc})"
        ) from None
    cfg = validate(
        DistillTuneConfig if isinstance(context.base, DistillConfig) else TuneConfig,
        data,
        source=exp.join(TUNE_CONFIG),
    )
    ensure_ray()
    import ray
    from ray import tune

    plan_concurrency(cfg, ray.cluster_resources())
    if not tune.Tuner.can_restore(exp.uri):
        raise TransferkitError(f"--resume: {exp.uri} holds no Tune experiment state to restore")
    log.info(f"resuming the search in {exp.uri}")
    tuner = tune.Tuner.restore(
        exp.uri, trainable=_trainable(cfg, context), resume_unfinished=True, resume_errored=True
    )
    tuner.fit()
    return _conclude(cfg, exp, context)


def _announce(
    cfg, exp: ExperimentDir, space: dict[str, Any], concurrency: int | None, point: dict[str, Any]
) -> None:
    t, s = cfg.tune, cfg.scaling
    shown = {k: _describe(v) for k, v in space.items()}
    log.info(
        f"search in {exp.uri}: {t.num_samples} trials x up to {cfg.optim.epochs} "
        f"epochs, {t.searcher} search, {t.scheduler} scheduler, metric {t.metric} ({_mode(t.metric)})"
    )
    log.info(f"space {shown}")
    outside = [k for k, v in point.items() if not space[k].is_valid(v)]
    note = f"; outside the searched range, run once as given: {outside}" if outside else ""
    log.info(f"trial 1 of {t.num_samples} runs the base config's values {point}{note}")
    if t.num_samples == 1:
        log.warning(
            "tune.num_samples is 1: the only trial is the base config's values; raise it "
            "to search anything"
        )
    log.info(
        f"each trial: {s.num_workers} Ray Train worker(s) x {s.cpus_per_worker:g} CPU "
        f"+ {t.trial_cpu:g} CPU for the trial; up to {concurrency or 'unlimited'} at once"
    )


def _describe(domain: Any) -> str:
    """``tune.choice([0, 2])`` -> ``choice[0, 2]``; ``tune.loguniform(1e-4, 1e-2)`` ->
    ``loguniform(0.0001, 0.01)``."""
    if hasattr(domain, "categories"):
        return f"choice{list(domain.categories)}"
    if hasattr(domain, "lower"):
        from ray.tune.search.sample import LogUniform

        log = "log" if isinstance(domain.get_sampler(), LogUniform) else ""
        return f"{log}uniform({domain.lower:g}, {domain.upper:g})"
    return repr(domain)


# ----------------------------------------------------------------------------- results

_LABELS = {
    "val_acc": "val accuracy",
    "val_balanced_acc": "val balanced accuracy",
    "val_macro_f1": "val macro F1",
    "val_loss": "val loss",
}


def _score_col(metric: str) -> str:
    """The ``trials.csv`` column that ranks trials: ``best_<metric>``."""
    return f"best_{metric}"


def _score_cols(metric: str) -> list[str]:
    """``trials.csv``'s figures at each trial's best epoch: ``best_val_acc``, ``best_val_loss``
    and, when ``metric`` is another one, ``best_<metric>``."""
    cols = ["best_val_acc", "best_val_loss"]
    return cols if _score_col(metric) in cols else [*cols, _score_col(metric)]


def _best_epoch(df, metric: str):
    """One trial's best epoch (a row of its results, one per epoch): the highest ``metric``
    (the lowest for ``val_loss``), ties to the lower val loss, then to the earlier epoch. Results
    without a ``metric`` column are ranked by ``val_acc``."""
    key = metric if metric in df else "val_acc"
    if _mode(key) == "max":
        return df.sort_values([key, "val_loss", "epoch"], ascending=[False, True, True]).iloc[0]
    return df.sort_values(["val_loss", "epoch"]).iloc[0]


def _trial_row(trial, df, searched: list[str], max_epochs: int, metric: str) -> dict[str, Any]:
    row: dict[str, Any] = {"trial_id": trial.trial_id, "status": trial.status}
    for name in searched:
        row[name] = trial.config.get(name)
    cols = _score_cols(metric)
    row.update({c: math.nan for c in cols}, best_epoch=0, epochs_run=0)
    if df is not None and len(df) and "epoch" in df:
        df = df.drop_duplicates(subset="epoch", keep="last")
        best = _best_epoch(df, metric)
        row.update(
            {c: float(best.get(c[len("best_") :], math.nan)) for c in cols},
            best_epoch=int(best["epoch"]),
            epochs_run=int(df["epoch"].max()),
            checkpoint=str(best.get("checkpoint_path", "") or ""),
        )
    last = trial.last_result or {}
    row["stopped_early"] = bool(trial.status == "TERMINATED" and row["epochs_run"] < max_epochs)
    row["wall_time_s"] = round(float(last.get("time_total_s", math.nan)), 1)
    row.setdefault("checkpoint", "")
    return row


def _default_trial_id(trials, point: dict[str, Any] | None) -> str | None:
    """The trial that ran the base config's values: the earliest created trial whose config holds
    ``point`` (a later random sample of the same values is an ordinary trial).

    Args:
        trials: Tune's trials (``ExperimentAnalysis.trials``), in the order they were created.
        point: ``search_context.json``'s ``default_point``.

    Returns:
        Its trial id; ``None`` for a search saved without a point (made before searches were
        seeded) or when no trial holds it.
    """
    if not point:
        return None

    def created(pair: tuple[int, Any]) -> tuple[float, int]:
        # Both searchers number trials as they create them: "0_..." (random), "1_..." (Optuna).
        head = (pair[1].experiment_tag or "").split("_", 1)[0]
        return (int(head) if head.isdigit() else math.inf, pair[0])

    matches = [
        (i, t)
        for i, t in enumerate(trials)
        if all(same_value((t.config or {}).get(k), v) for k, v in point.items())
    ]
    return min(matches, key=created)[1].trial_id if matches else None


def _pick_best(scored, metric: str):
    """The best of ``trials.csv``'s scored rows: the highest ``best_<metric>`` (the lowest for
    ``val_loss``), ties to the lower best val loss, then to the default trial (a searched config
    must beat the defaults to replace them), then to the table's order."""
    col = _score_col(metric)
    if _mode(metric) == "max":
        keys, ascending = [col, "best_val_loss"], [False, True]
    else:
        keys, ascending = [col], [True]
    if "is_default" in scored:
        keys, ascending = [*keys, "is_default"], [*ascending, False]
    return scored.sort_values(keys, ascending=ascending, kind="mergesort").iloc[0]


def _default_summary(
    table, default_id: str | None, searched: list[str], metric: str
) -> dict[str, Any] | None:
    """The default trial's line of the summary (``None`` when there is none); its figures are
    ``None`` when it produced no result."""
    if default_id is None:
        return None
    row = table[table["trial_id"] == default_id].iloc[0]

    def num(v) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    out = {
        "trial_id": default_id,
        "config": {k: row[k].item() if hasattr(row[k], "item") else row[k] for k in searched},
        "val_acc": num(row["best_val_acc"]),
        "val_loss": num(row["best_val_loss"]),
    }
    out[metric] = num(row[_score_col(metric)])
    out.update(
        epoch=int(row["best_epoch"]),
        epochs_run=int(row["epochs_run"]),
        stopped_early=bool(row["stopped_early"]),
        status=str(row["status"]),
    )
    return out


def _existing_checkpoint(row: dict[str, Any], exp: ExperimentDir) -> str:
    """The best epoch's checkpoint or, when Ray's retention dropped it (a tie at the top score),
    the trial's most recent kept checkpoint."""
    path = row.get("checkpoint", "")
    if exp.remote or (path and Path(path).is_dir()):
        return path
    kept = sorted(Path(exp.join(row["trial_id"], "train")).glob("checkpoint_*"))
    return str(kept[-1]) if kept else path


def _conclude(cfg, exp: ExperimentDir, context: SearchContext) -> dict[str, Any]:
    import pandas as pd
    from ray import tune

    metric = cfg.tune.metric
    mode, score = _mode(metric), _score_col(metric)
    # Read the experiment back from storage: after Ctrl+C the in-memory trials all say TERMINATED,
    # while the saved state (what --resume continues) keeps an interrupted trial RUNNING.
    analysis = tune.ExperimentAnalysis(exp.uri, default_metric=metric, default_mode=mode)
    frames = analysis.trial_dataframes
    searched = [
        k for k in context.space.paths() if any(k in (t.config or {}) for t in analysis.trials)
    ]
    rows = [
        _trial_row(t, frames.get(t.trial_id), searched, cfg.optim.epochs, metric)
        for t in analysis.trials
    ]
    default_id = _default_trial_id(analysis.trials, context.default_point)
    table = pd.DataFrame(rows).sort_values("trial_id").reset_index(drop=True)
    table.insert(2, "is_default", table["trial_id"] == default_id)
    exp.write_text(TRIALS_CSV, table.to_csv(index=False))
    unfinished = [r["trial_id"] for r in rows if r["status"] not in ("TERMINATED", "ERROR")]
    _print_table(table, searched, metric)
    if unfinished:  # the saved state still has them running: --resume continues them
        raise SearchInterrupted(
            f"search interrupted: {len(rows) - len(unfinished)} of {len(rows)} trials finished "
            f"({', '.join(unfinished)} not); continue it with `transferkit tune --resume {exp.uri}`"
        )
    _wait_for_resources()
    scored = table.dropna(subset=[score])
    if scored.empty:
        errors = [str(t.error_file or t.status) for t in analysis.trials]
        raise SearchFailedError(f"every trial failed; see {errors[:3]} in {exp.uri}")
    best = _pick_best(scored, metric).to_dict()
    best_cfg = _best_config(context, exp, {k: best[k] for k in searched})
    sample = base_values(best_cfg, searched, context.space)  # typed: an int depth, float rates
    best["checkpoint"] = _existing_checkpoint(best, exp)
    trial_epochs = int(table["epochs_run"].sum())
    best_line = {
        "trial_id": best["trial_id"],
        "config": sample,
        "val_acc": float(best["best_val_acc"]),
        "val_loss": float(best["best_val_loss"]),
    }
    best_line[metric] = float(best[score])
    best_line.update(epoch=int(best["best_epoch"]), checkpoint=best["checkpoint"])
    summary = {
        "experiment": exp.uri,
        "trials_csv": exp.join(TRIALS_CSV),
        "best_config": exp.join(BEST_CONFIG),
        "plot": exp.join(PLOT),
        "num_trials": len(rows),
        "max_epochs": cfg.optim.epochs,
        "trial_epochs": trial_epochs,
        "stopped_early": int(table["stopped_early"].sum()),
        "errored": int((table["status"] == "ERROR").sum()),
        "metric": metric,
        "mode": mode,
        "best": best_line,
        "default": _default_summary(table, default_id, searched, metric),
        "best_is_default": bool(default_id is not None and best["trial_id"] == default_id),
    }
    exp.write_text(BEST_CONFIG, yaml.safe_dump(best_cfg.model_dump(mode="json"), sort_keys=False))
    exp.write_text(BEST_TRIAL, json.dumps(summary, indent=2, default=str))
    exp.write_bytes(PLOT, _plot(table, searched, cfg))
    b = summary["best"]
    log.info(
        f"{len(rows)} trials, {trial_epochs} trial-epochs of "
        f"{len(rows) * cfg.optim.epochs} possible; {summary['stopped_early']} stopped early, "
        f"{summary['errored']} failed"
    )
    log.info(
        f"best trial {b['trial_id']}: {metric} {b[metric]:.4f} (val_acc "
        f"{b['val_acc']:.4f}) at epoch {b['epoch']} with {b['config']}"
    )
    log.info(f"{_default_line(summary)}")
    log.info(f"best checkpoint {b['checkpoint']}")
    log.info(f"wrote {summary['trials_csv']}, {summary['plot']}")
    if cfg.tune.tracking == "tensorboard":
        log.info(f"TensorBoard: tensorboard --logdir {exp.uri}")
    command = "distill" if isinstance(context.base, DistillConfig) else "finetune"
    log.info(f"reproduce it: transferkit {command} --config {summary['best_config']}")
    return summary


def _default_line(summary: dict[str, Any]) -> str:
    """``default values: val_acc 0.9900 (trial ..., 4 epochs) vs best 0.9944 (trial ...)``."""
    d, b, metric = summary["default"], summary["best"], summary["metric"]
    if d is None:
        return (
            "default values: no trial ran the base config's values (a search from before "
            "searches were seeded with them)"
        )
    if d[metric] is None:
        ran = f"no result, {d['status']}"
    else:
        ran = (
            f"stopped early by the scheduler after {d['epochs_run']} epochs"
            if d["stopped_early"]
            else f"{d['epochs_run']} epochs"
        )
    value = "n/a" if d[metric] is None else f"{d[metric]:.4f}"
    which = "the default trial itself" if summary["best_is_default"] else f"trial {b['trial_id']}"
    return f"default values: {metric} {value} (trial {d['trial_id']}, {ran}) vs best {b[metric]:.4f} ({which})"


def _best_config(context: SearchContext, exp: ExperimentDir, sample: dict[str, Any]):
    """The best trial as a typed ``finetune``/``distill`` config; its output is ``best_run/`` in
    the experiment folder (``runs/<name>-best`` for a remote experiment)."""
    output = str(Path("runs", f"{exp.name}-best").resolve()) if exp.remote else exp.join("best_run")
    return apply_sample(context.base, sample, context.space).model_copy(update={"output": output})


def _print_table(table, searched: list[str], metric: str) -> None:
    scores = ["best_val_acc"] + ([_score_col(metric)] if metric != "val_acc" else [])
    cols = [
        "trial_id",
        "status",
        "is_default",
        *searched,
        *scores,
        "best_epoch",
        "epochs_run",
        "stopped_early",
        "wall_time_s",
    ]
    shown = table[[c for c in cols if c in table]].copy()
    for name in searched:
        if name != "freeze_depth":
            shown[name] = shown[name].map(lambda v: f"{v:.2e}" if isinstance(v, float) else v)
    for col in scores:
        shown[col] = shown[col].map(lambda v: f"{v:.4f}")
    log.info("trials:\n%s", shown.to_string(index=False))


def _y_axis(metric: str) -> tuple[str, float, str]:
    """The plot's y axis for ``metric``: ``(trials.csv column, scale, label)``; accuracy-like
    metrics in percent."""
    scale = 1.0 if metric == "val_loss" else 100.0
    label = f"best {_LABELS.get(metric, metric)}" + (" (%)" if scale == 100.0 else "")
    return _score_col(metric), scale, label


def _plot(table, searched: list[str], cfg) -> bytes:
    """PNG: each trial's best ``tune.metric`` against each searched value (log axis for log
    ranges); crosses mark trials that ASHA stopped early, a star the default trial."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col, scale, ylabel = _y_axis(cfg.tune.metric)
    names = searched or ["freeze_depth"]
    fig, axes = plt.subplots(
        1, len(names), figsize=(4 * len(names), 3.6), squeeze=False, sharey=True
    )
    done = table.dropna(subset=[col])
    is_default = (
        done["is_default"] if "is_default" in done else done["trial_id"].map(lambda _: False)
    )
    for ax, name in zip(axes[0], names):
        for early, marker, label in ((False, "o", "full budget"), (True, "x", "stopped early")):
            part = done[(done["stopped_early"] == early) & ~is_default]
            if name in part:
                ax.scatter(part[name], scale * part[col], marker=marker, label=label)
        base = done[is_default]
        if name in base and len(base):
            ax.scatter(
                base[name],
                scale * base[col],
                marker="*",
                s=160,
                zorder=3,
                label="base config (default)",
            )
        domain = getattr(cfg.tune.search, name, None)
        if isinstance(domain, Range) and domain.log:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.suptitle(
        f"{cfg.model.arch}: {len(table)} trials, {cfg.tune.scheduler}, {cfg.tune.searcher}"
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _wait_for_resources(timeout_s: float = 30.0) -> None:
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
