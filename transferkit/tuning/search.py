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
import os
from pathlib import Path
from typing import Any

import yaml

from transferkit.config import ConfigError, DistillConfig, DistillTuneConfig, TuneConfig, validate
from transferkit.errors import TransferkitError
from transferkit.tuning.context import SearchContext, trial_base
from transferkit.tuning.resources import check_schedule, plan_concurrency
from transferkit.tuning.results import (
    BEST_CONFIG,
    BEST_TRIAL,
    PLOT,
    TRIALS_CSV,
    SearchFailedError,
    SearchInterrupted,
    conclude,
    tune_mode,
)
from transferkit.tuning.space import apply_sample, param_space, seed_with_base
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
    prep = (prep or resolve_preprocessing(built, cfg.data.image_size)).model_copy(
        update={"background": tuple(cfg.data.background)}
    )
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


def _tune_config(cfg, concurrency: int | None, point: dict[str, Any]):
    """Tune's config for a new search; ``point`` (the base config's values, see
    :func:`seed_with_base`) is the searcher's first trial. Only a new search builds it:
    ``Tuner.restore`` brings back the searcher it saved, which has handed the point out."""
    from ray import tune

    t = cfg.tune
    mode = tune_mode(t.metric)
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
    return conclude(cfg, exp, context)


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
    return conclude(cfg, exp, context)


def _announce(
    cfg, exp: ExperimentDir, space: dict[str, Any], concurrency: int | None, point: dict[str, Any]
) -> None:
    t, s = cfg.tune, cfg.scaling
    shown = {k: _describe(v) for k, v in space.items()}
    log.info(
        f"search in {exp.uri}: {t.num_samples} trials x up to {cfg.optim.epochs} "
        f"epochs, {t.searcher} search, {t.scheduler} scheduler, metric {t.metric} ({tune_mode(t.metric)})"
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
