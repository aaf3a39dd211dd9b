"""``transferkit tune`` (a Ray Tune search) and ``transferkit pipeline`` (every stage)."""

from __future__ import annotations

from pathlib import Path

import typer

from transferkit.cli.common import (
    Dataset,
    Seed,
    UseGpu,
    app,
    check_arch,
    config_defaults,
    fail,
    fields,
    load,
    overrides,
    read_yaml,
    run_search,
)
from transferkit.config import DistillTuneConfig, TuneConfig

Opt = typer.Option

#: Each ``tune`` option's field in :class:`~transferkit.config.TuneConfig` (and
#: :class:`~transferkit.config.DistillTuneConfig` with ``--teacher``).
TUNE_FIELDS = fields(
    {
        "": "teacher seed output",
        "data": "dataset image_size",
        "model": "weights",
        "scaling": "num_workers cpus_per_worker use_gpu",
        "tune": "num_samples scheduler grace_period reduction_factor searcher "
        "max_concurrent_trials tracking tracking_uri",
    },
    model="model.arch",
    max_epochs="optim.epochs",
)


@app.command(cls=config_defaults(TuneConfig, TUNE_FIELDS))
def tune(
    ctx: typer.Context,
    config: Path | None = Opt(
        None, "--config", help="YAML: base config plus a `tune:` section; flags override it."
    ),
    dataset: Dataset = None,
    model: str | None = Opt(None, "--model", help="Architecture (the student's with --teacher)."),
    weights: str | None = Opt(None, help="IMAGENET1K_V1, DEFAULT, none, or a state-dict file."),
    image_size: int | None = Opt(None, help="Input size in pixels."),
    teacher: str | None = Opt(
        None, help="Search distillation runs of this teacher (run folder) instead of fine-tuning."
    ),
    num_samples: int | None = Opt(None, help="Number of trials."),
    max_epochs: int | None = Opt(
        None, help="Epoch budget of each trial (ASHA may stop a trial sooner)."
    ),
    scheduler: str | None = Opt(None, help="asha or fifo."),
    grace_period: int | None = Opt(None, help="ASHA: epochs before a trial may be stopped."),
    reduction_factor: float | None = Opt(None, help="ASHA: keep the best 1/eta at each rung."),
    searcher: str | None = Opt(None, help="random or optuna (TPE)."),
    max_concurrent_trials: int | None = Opt(None, help="Default: as many as the cluster fits."),
    num_workers: int | None = Opt(None, help="Ray Train workers per trial."),
    cpus_per_worker: float | None = Opt(None, help="The trial itself holds 0.01 more."),
    use_gpu: UseGpu = None,
    tracking: str | None = Opt(None, help="local, tensorboard or mlflow."),
    tracking_uri: str | None = Opt(None, help="MLflow tracking URI (default: EXPERIMENT/mlruns)."),
    seed: Seed = None,
    output: str | None = Opt(None, help="The experiment folder (local path or s3://, gs:// URI)."),
    resume: str | None = Opt(
        None,
        "--resume",
        metavar="EXPERIMENT_DIR",
        help="Continue an interrupted search; finished trials are not run again.",
    ),
    overwrite: bool = Opt(False, "--overwrite", help="Replace an existing experiment folder."),
) -> None:
    """Search freeze depth and learning rates with Ray Tune (ASHA); each trial is a Ray Train run.

    Writes trials.csv, best_config.yaml (for `finetune --config`), best_trial.json and
    tune_plot.png into the experiment folder.
    """
    if resume is not None:
        _resume(resume, ctx.params)
        return
    distill_search = bool(teacher or read_yaml(config).get("teacher"))
    given = overrides(ctx.params, TUNE_FIELDS)
    cfg = load(DistillTuneConfig if distill_search else TuneConfig, config, given)
    check_arch(cfg.model.arch, "model.arch (--model)")
    from transferkit.tuning import tune_search

    run_search(tune_search, cfg, overwrite=overwrite)


def _resume(experiment: str, params: dict) -> None:
    """``tune --resume DIR``: the search continues with its own saved config, so any other
    option is refused (exit 2, naming them)."""
    given = [k for k, v in params.items() if v is not None and k != "resume"]
    given = [k for k in given if k != "overwrite" or params[k]]
    if given:
        fail(
            "--resume continues a search with its own saved config; drop "
            + ", ".join("--" + k.replace("_", "-") for k in given)
        )
    from transferkit.tuning import resume_search

    run_search(resume_search, experiment)


@app.command()
def pipeline(
    config: Path = typer.Argument(..., help="Pipeline YAML (see configs/demo-digits.yaml)."),
    output: str | None = Opt(None, help="Pipeline folder (overrides the file's `output`)."),
    dataset: str | None = Opt(
        None, help="Data for every stage (overrides the file's `data.dataset`)."
    ),
    force: bool = Opt(False, "--force", help="Re-run every stage, even those already done."),
) -> None:
    """Tune -> fine-tune the teacher -> distill the student -> export both to ONNX -> evaluate
    with ONNX Runtime -> report. Stages already done with the same config and inputs are skipped."""
    from transferkit.config import PipelineConfig

    cfg = load(PipelineConfig, config, {"output": output, "data": {"dataset": dataset}})
    from transferkit.pipeline import run_pipeline

    run_search(run_pipeline, cfg, force=force)
