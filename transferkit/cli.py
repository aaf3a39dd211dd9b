"""The ``transferkit`` command line: parse, build a config, call one library function.

Heavy libraries (torch, Ray, ONNX Runtime) are imported inside each command, after the config is
validated, so a mistake is reported in about a second.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Fine-tune pretrained vision models on Ray Train, export to ONNX, serve with ONNX Runtime.",
)
data_app = typer.Typer(no_args_is_help=True, help="Bundled datasets.")
app.add_typer(data_app, name="data")

# Exceptions that mean "the user asked for something wrong": message + exit code 2, no traceback.
# transferkit's own errors (TransferkitError: ConfigError, UsageError, DatasetError, ...) and a
# path that is missing or already taken. Any other exception, a plain ValueError included, is a
# bug: it keeps its traceback (exit 1).
_USER_ERRORS: tuple[type[BaseException], ...] = (FileExistsError, FileNotFoundError)


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _run(fn, *args, **kwargs) -> Any:
    """Call a library function; user errors become a one-paragraph message and exit code 2."""
    from transferkit.errors import TransferkitError

    try:
        return fn(*args, **kwargs)
    except (*_USER_ERRORS, TransferkitError) as exc:
        _fail(str(exc))


def _check_arch(name: str | None, option: str) -> None:
    if name is None:
        return
    from transferkit.models.registry import UnknownArchError, get_arch

    try:
        get_arch(name)
    except UnknownArchError as exc:
        _fail(f"{option}: {exc}")


@app.command()
def finetune(
    config: Path | None = typer.Option(None, "--config", help="YAML file; flags override it."),
    dataset: str | None = typer.Option(
        None, help="Bundled name (digits, elpv, elpv-severity, elpv-type) or an ImageFolder path."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Architecture (see `transferkit models`)."
    ),
    weights: str | None = typer.Option(
        None, help="IMAGENET1K_V1, DEFAULT, none, or a state-dict file."
    ),
    image_size: int | None = typer.Option(
        None, help="Input size in pixels (overrides the weights')."
    ),
    freeze_depth: int | None = typer.Option(
        None, help="Freeze the first k stages (0 = train all)."
    ),
    width_mult: float | None = typer.Option(None, help="MobileNet width multiplier."),
    epochs: int | None = typer.Option(None),
    batch_size: int | None = typer.Option(
        None, help="Per worker; the global batch is this x workers."
    ),
    optimizer: str | None = typer.Option(None, help="adamw or sgd."),
    backbone_lr: float | None = typer.Option(None),
    head_lr: float | None = typer.Option(None),
    weight_decay: float | None = typer.Option(None),
    warmup_epochs: float | None = typer.Option(None),
    label_smoothing: float | None = typer.Option(None),
    augment: bool | None = typer.Option(None, "--augment/--no-augment"),
    hflip: bool | None = typer.Option(
        None, "--hflip/--no-hflip", help="Horizontal flips (off for digits)."
    ),
    vflip: bool | None = typer.Option(None, "--vflip/--no-vflip", help="Vertical flips."),
    rot90: bool | None = typer.Option(
        None, "--rot90/--no-rot90", help="Random 90-degree rotations."
    ),
    class_weight: str | None = typer.Option(
        None, help="Loss class weights: none, balanced, sqrt_balanced."
    ),
    sampler: str | None = typer.Option(None, help="random, or balanced (class-balanced sampling)."),
    metric: str | None = typer.Option(
        None, help="Best-epoch metric: val_acc, val_balanced_acc, val_macro_f1, val_loss."
    ),
    val_fraction: float | None = typer.Option(None),
    test_fraction: float | None = typer.Option(None),
    num_workers: int | None = typer.Option(None, help="Ray Train workers (DDP)."),
    cpus_per_worker: float | None = typer.Option(None),
    use_gpu: bool | None = typer.Option(None, "--use-gpu/--no-gpu"),
    seed: int | None = typer.Option(None),
    output: str | None = typer.Option(None, help="The run folder itself."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run folder from its latest checkpoint."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete an existing run folder first."
    ),
) -> None:
    """Fine-tune a pretrained model with Ray Train; writes model.pt, metrics and a test evaluation."""
    from transferkit.config import ConfigError, FinetuneConfig, load_config

    if resume and overwrite:
        _fail("--resume and --overwrite exclude each other")
    overrides = {
        "data": {
            "dataset": dataset,
            "image_size": image_size,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "sampler": sampler,
            "augment": {"enabled": augment, "hflip": hflip, "vflip": vflip, "rot90": rot90},
        },
        "model": {
            "arch": model,
            "weights": weights,
            "freeze_depth": freeze_depth,
            "width_mult": width_mult,
        },
        "optim": {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "backbone_lr": backbone_lr,
            "head_lr": head_lr,
            "weight_decay": weight_decay,
            "warmup_epochs": warmup_epochs,
            "label_smoothing": label_smoothing,
            "class_weight": class_weight,
        },
        "scaling": {
            "num_workers": num_workers,
            "cpus_per_worker": cpus_per_worker,
            "use_gpu": use_gpu,
        },
        "seed": seed,
        "output": output,
        "metric": metric,
    }
    try:
        cfg = load_config(FinetuneConfig, config, overrides)
    except ConfigError as exc:
        _fail(str(exc))
    _check_arch(cfg.model.arch, "model.arch (--model)")
    from transferkit.training.trainer import finetune as run_finetune

    _run(run_finetune, cfg, resume=resume, overwrite=overwrite)


@app.command()
def distill(
    teacher: str | None = typer.Option(
        None, help="Teacher run folder (or its model.pt) from `finetune`."
    ),
    student: str | None = typer.Option(
        None, help="Student architecture (default mobilenet_v3_small)."
    ),
    width_mult: float | None = typer.Option(
        None, help="Student width multiplier (default 0.5 for the default student)."
    ),
    student_weights: str | None = typer.Option(
        None, help="Student weights: none (default), an enum, or a file."
    ),
    config: Path | None = typer.Option(None, "--config", help="YAML file; flags override it."),
    dataset: str | None = typer.Option(
        None, help="Labelled data (default: the teacher's dataset and splits)."
    ),
    unlabeled: str | None = typer.Option(
        None, help="Folder of unlabelled images: an extra transfer set."
    ),
    image_size: int | None = typer.Option(
        None, help="Student input size (default: the teacher's)."
    ),
    temperature: float | None = typer.Option(None, help="KD temperature T (default 4)."),
    hard_weight: float | None = typer.Option(
        None, help="Weight of CE with the labels (default 0.1; 0 allowed)."
    ),
    soft_weight: float | None = typer.Option(
        None, help="Weight of T^2 * KL to the teacher (default 0.9)."
    ),
    hint: list[str] | None = typer.Option(
        None, help="FitNets hint STUDENT_STAGE:TEACHER_STAGE (repeatable)."
    ),
    hint_weight: float | None = typer.Option(None, help="Weight of the hint MSE."),
    mixup_alpha: float | None = typer.Option(
        None, help="Mixup alpha applied to teacher and student alike (default 0.4; 0 = off)."
    ),
    baseline: bool | None = typer.Option(
        None, "--baseline/--no-baseline", help="Also train a label-only student (default on)."
    ),
    baseline_dataset: str | None = typer.Option(
        None, help="Train the baseline on this dataset instead."
    ),
    epochs: int | None = typer.Option(None, help="Default 30."),
    batch_size: int | None = typer.Option(None),
    backbone_lr: float | None = typer.Option(None),
    head_lr: float | None = typer.Option(None),
    num_workers: int | None = typer.Option(None),
    use_gpu: bool | None = typer.Option(None, "--use-gpu/--no-gpu"),
    seed: int | None = typer.Option(None),
    output: str | None = typer.Option(None, help="The student's run folder."),
    resume: bool = typer.Option(False, "--resume"),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Distil a fine-tuned teacher into a compact student (Hinton KD, optional FitNets hints)."""
    from transferkit.config import ConfigError, DistillConfig, load_config, load_yaml

    if resume and overwrite:
        _fail("--resume and --overwrite exclude each other")
    hints = [tuple(h.split(":", 1)) for h in hint] if hint else None
    if hints and not all(len(h) == 2 and all(h) for h in hints):
        _fail("--hint takes STUDENT_STAGE:TEACHER_STAGE, e.g. stage3:stage4")
    try:
        file_data = load_yaml(config) if config else {}
    except ConfigError as exc:
        _fail(str(exc))
    teacher_path = teacher or file_data.get("teacher")
    if dataset is None and not (file_data.get("data") or {}).get("dataset") and teacher_path:
        from transferkit.training.distillation import teacher_dataset

        dataset = teacher_dataset(teacher_path)
    model = {"arch": student, "width_mult": width_mult, "weights": student_weights}
    if student and width_mult is None and student != "mobilenet_v3_small":
        model["width_mult"] = 1.0  # the 0.5 default belongs to the default student
    overrides = {
        "teacher": teacher,
        "unlabeled": unlabeled,
        "baseline": baseline,
        "baseline_dataset": baseline_dataset,
        "seed": seed,
        "output": output,
        "data": {"dataset": dataset, "image_size": image_size},
        "model": model,
        "kd": {
            "temperature": temperature,
            "hard_weight": hard_weight,
            "soft_weight": soft_weight,
            "hints": hints,
            "hint_weight": hint_weight,
            "mixup_alpha": mixup_alpha,
        },
        "optim": {
            "epochs": epochs,
            "batch_size": batch_size,
            "backbone_lr": backbone_lr,
            "head_lr": head_lr,
        },
        "scaling": {"num_workers": num_workers, "use_gpu": use_gpu},
    }
    try:
        cfg = load_config(DistillConfig, config, overrides)
    except ConfigError as exc:
        _fail(str(exc))
    _check_arch(cfg.model.arch, "model.arch (--student)")
    from transferkit.models.portable import PortableModelError, resolve_model_file

    try:
        resolve_model_file(cfg.teacher)
    except PortableModelError as exc:
        _fail(f"teacher (--teacher): {exc}")
    from transferkit.training.distillation import distill as run_distill

    _run(run_distill, cfg, resume=resume, overwrite=overwrite)


@app.command()
def tune(
    config: Path | None = typer.Option(
        None,
        "--config",
        help="YAML: base config plus a `tune:` section (search space, scheduler, searcher, resources); flags override it.",
    ),
    dataset: str | None = typer.Option(
        None, help="Bundled name (digits, elpv, elpv-severity, elpv-type) or an ImageFolder path."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Architecture (the student's with --teacher)."
    ),
    weights: str | None = typer.Option(
        None, help="IMAGENET1K_V1, DEFAULT, none, or a state-dict file."
    ),
    image_size: int | None = typer.Option(None, help="Input size in pixels."),
    teacher: str | None = typer.Option(
        None, help="Search distillation runs of this teacher (run folder) instead of fine-tuning."
    ),
    num_samples: int | None = typer.Option(None, help="Number of trials (default 8)."),
    max_epochs: int | None = typer.Option(
        None, help="Epoch budget of each trial (ASHA may stop a trial sooner)."
    ),
    scheduler: str | None = typer.Option(None, help="asha (default) or fifo."),
    grace_period: int | None = typer.Option(
        None, help="ASHA: epochs before a trial may be stopped (default 1)."
    ),
    reduction_factor: float | None = typer.Option(
        None, help="ASHA: keep the best 1/eta at each rung (default 2)."
    ),
    searcher: str | None = typer.Option(None, help="random (default) or optuna (TPE)."),
    max_concurrent_trials: int | None = typer.Option(
        None, help="Default: as many as the cluster fits."
    ),
    num_workers: int | None = typer.Option(None, help="Ray Train workers per trial (default 1)."),
    cpus_per_worker: float | None = typer.Option(
        None, help="Default 0.99 (the trial itself holds 0.01)."
    ),
    use_gpu: bool | None = typer.Option(None, "--use-gpu/--no-gpu"),
    tracking: str | None = typer.Option(None, help="local (default), tensorboard or mlflow."),
    tracking_uri: str | None = typer.Option(
        None, help="MLflow tracking URI (default: EXPERIMENT/mlruns)."
    ),
    seed: int | None = typer.Option(None),
    output: str | None = typer.Option(
        None, help="The experiment folder (local path or s3://, gs:// URI)."
    ),
    resume: str | None = typer.Option(
        None,
        "--resume",
        metavar="EXPERIMENT_DIR",
        help="Continue an interrupted search; finished trials are not run again.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing experiment folder."
    ),
) -> None:
    """Search freeze depth and learning rates with Ray Tune (ASHA); each trial is a Ray Train run.

    Writes trials.csv, best_config.yaml (for `finetune --config`), best_trial.json and
    tune_plot.png into the experiment folder.
    """
    from transferkit.config import (
        ConfigError,
        DistillTuneConfig,
        TuneConfig,
        load_config,
        load_yaml,
    )

    given = {
        k: v
        for k, v in dict(
            config=config,
            dataset=dataset,
            model=model,
            weights=weights,
            image_size=image_size,
            teacher=teacher,
            num_samples=num_samples,
            max_epochs=max_epochs,
            scheduler=scheduler,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            searcher=searcher,
            max_concurrent_trials=max_concurrent_trials,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            use_gpu=use_gpu,
            tracking=tracking,
            tracking_uri=tracking_uri,
            seed=seed,
            output=output,
        ).items()
        if v is not None
    }
    if resume is not None:
        if given or overwrite:
            _fail(
                "--resume continues a search with its own saved config; drop "
                + ", ".join(
                    "--" + k.replace("_", "-")
                    for k in [*given, *(["overwrite"] if overwrite else [])]
                )
            )
        from transferkit.tuning import resume_search

        _run_search(resume_search, resume)
        return
    try:
        file_data = load_yaml(config) if config else {}
    except ConfigError as exc:
        _fail(str(exc))
    distill_search = bool(teacher or file_data.get("teacher"))
    overrides = {
        "teacher": teacher,
        "seed": seed,
        "output": output,
        "data": {"dataset": dataset, "image_size": image_size},
        "model": {"arch": model, "weights": weights},
        "optim": {"epochs": max_epochs},
        "scaling": {
            "num_workers": num_workers,
            "cpus_per_worker": cpus_per_worker,
            "use_gpu": use_gpu,
        },
        "tune": {
            "num_samples": num_samples,
            "scheduler": scheduler,
            "grace_period": grace_period,
            "reduction_factor": reduction_factor,
            "searcher": searcher,
            "max_concurrent_trials": max_concurrent_trials,
            "tracking": tracking,
            "tracking_uri": tracking_uri,
        },
    }
    if distill_search and model and model != "mobilenet_v3_small":
        overrides["model"]["width_mult"] = 1.0  # the 0.5 default belongs to the default student
    try:
        cfg = load_config(DistillTuneConfig if distill_search else TuneConfig, config, overrides)
    except ConfigError as exc:
        _fail(str(exc))
    _check_arch(cfg.model.arch, "model.arch (--model)")
    from transferkit.tuning import tune_search

    _run_search(tune_search, cfg, overwrite=overwrite)


def _run_search(fn, *args, **kwargs) -> None:
    from transferkit.errors import TransferkitError
    from transferkit.tuning.search import SearchInterrupted

    try:
        fn(*args, **kwargs)
    except SearchInterrupted as exc:  # not a mistake: say how to continue, exit like Ctrl+C
        typer.secho(str(exc), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(130) from None
    except (*_USER_ERRORS, TransferkitError) as exc:
        _fail(str(exc))


@app.command()
def pipeline(
    config: Path = typer.Argument(..., help="Pipeline YAML (see configs/demo-digits.yaml)."),
    output: str | None = typer.Option(
        None, help="Pipeline folder (overrides the file's `output`)."
    ),
    dataset: str | None = typer.Option(
        None, help="Data for every stage (overrides the file's `data.dataset`)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Re-run every stage, even those already done."
    ),
) -> None:
    """Tune -> fine-tune the teacher -> distill the student -> export both to ONNX -> evaluate
    with ONNX Runtime -> report. Stages already done with the same config and inputs are skipped."""
    from transferkit.config import ConfigError, PipelineConfig, load_config

    try:
        cfg = load_config(PipelineConfig, config, {"output": output, "data": {"dataset": dataset}})
    except ConfigError as exc:
        _fail(str(exc))
    from transferkit.pipeline import run_pipeline

    _run_search(run_pipeline, cfg, force=force)


@app.command("export")
def export_cmd(
    run: Path = typer.Argument(..., help="Run folder (or its model.pt)."),
    output: Path = typer.Option(
        Path("model.onnx"), "--output", "-o", help="The .onnx file to write."
    ),
    opset: int = typer.Option(18, help="ONNX opset (>= 18 with the dynamo exporter)."),
    atol: float = typer.Option(1e-4, help="Max allowed |logit difference| vs PyTorch."),
    images: Path | None = typer.Option(
        None, help="Folder of images to validate on (default: the run's test split)."
    ),
    validation_images: int = typer.Option(512, help="How many images to compare."),
    tta: str = typer.Option(
        "none",
        help="Test-time augmentation in the graph: none, hflip (2 views) or d4 (8: rotations "
        "and flips); logits averaged, one forward pass per view.",
    ),
) -> None:
    """Export a run to ONNX and validate it against PyTorch (fails when any check fails)."""
    from transferkit.config import ConfigError, ExportConfig, validate

    try:
        cfg = validate(
            ExportConfig,
            {
                "run": str(run),
                "output": str(output),
                "opset": opset,
                "atol": atol,
                "validation_images": validation_images,
                "tta": tta,
            },
            source="command line",
        )
    except ConfigError as exc:
        _fail(str(exc))
    paths = None
    if images is not None:
        from transferkit.imaging import IMAGE_EXTENSIONS

        if not images.is_dir():
            _fail(f"--images {images}: not a folder")
        paths = [str(p) for p in sorted(images.rglob("*")) if p.suffix.lower() in IMAGE_EXTENSIONS]
    from transferkit.errors import TransferkitError
    from transferkit.export.onnx_export import ExportValidationError, export_onnx
    from transferkit.models.portable import PortableModelError

    try:
        report = export_onnx(cfg, images=paths)
    except ExportValidationError as exc:
        _fail(str(exc), code=1)
    except (PortableModelError, TransferkitError) as exc:
        _fail(str(exc))
    typer.echo(
        f"exported {report.onnx_path} ({report.file_bytes / 1e6:.1f} MB, opset {report.opset}"
        + (f", test-time augmentation {report.tta}" if report.tta != "none" else "")
        + ")\n"
        f"validated on {report.images_compared} images ({report.image_source}): max |logit diff| "
        f"{report.max_abs_diff:.2e} (<= {cfg.atol:g}), top-1 agreement {report.top1_agreement:.2%}, "
        f"batches {report.batch_sizes_checked}"
    )


@app.command()
def serve(
    models: list[Path] | None = typer.Argument(
        None,
        help="One or more .onnx files written by `transferkit export` (each served as its stem).",
    ),
    repository: Path | None = typer.Option(
        None, help="Triton-style model repository REPO/<name>/<version>/model.onnx."
    ),
    host: str = typer.Option("127.0.0.1", help="Bind address (0.0.0.0 exposes it)."),
    port: int = typer.Option(8000),
    name: str | None = typer.Option(
        None, help="Model name when one file is given (default: its stem)."
    ),
    top_k: int = typer.Option(5, help="Predictions returned per image by /v1/predict."),
    threads: int = typer.Option(0, help="ONNX Runtime intra-op threads per model (0 = automatic)."),
    max_batch_size: int = typer.Option(8, help="Dynamic batching: images per ORT run (1 = off)."),
    max_queue_delay_ms: float = typer.Option(2.0, help="Longest wait for a batch to fill."),
    max_queue_size: int = typer.Option(
        256, help="Queued requests per model before 503 + Retry-After."
    ),
    max_body_mb: float = typer.Option(20.0, help="Larger request bodies get 413."),
    max_image_pixels: int = typer.Option(50_000_000, help="Images with more pixels get 422."),
    api_key: str | None = typer.Option(
        None,
        envvar="TRANSFERKIT_API_KEY",
        show_envvar=True,
        help="Require 'Authorization: Bearer KEY' (or X-API-Key) on every route but health.",
    ),
    graceful_timeout: float = typer.Option(
        10.0, help="Seconds in-flight requests get on shutdown."
    ),
    access_log: bool = typer.Option(False, help="uvicorn's per-request access log."),
    ray: bool = typer.Option(False, "--ray", help="Deploy on Ray Serve (needs the `serve` extra)."),
    replicas: int = typer.Option(1, help="Ray Serve replicas (with --ray)."),
    replica_cpus: float = typer.Option(
        1.0, help="CPUs per Ray Serve replica = its ORT threads (with --ray)."
    ),
) -> None:
    """Serve ONNX models over HTTP: Open Inference Protocol v2 (/v2/models/NAME/infer), POST
    /v1/predict, /metrics, /v2/health/*."""
    from transferkit.config import ConfigError, ServeConfig, validate

    try:
        cfg = validate(
            ServeConfig,
            {
                "models": [str(m) for m in models or []],
                "repository": str(repository) if repository else None,
                "host": host,
                "port": port,
                "name": name,
                "top_k": top_k,
                "intra_op_threads": threads,
                "max_batch_size": max_batch_size,
                "max_queue_delay_ms": max_queue_delay_ms,
                "max_queue_size": max_queue_size,
                "max_body_mb": max_body_mb,
                "max_image_pixels": max_image_pixels,
                "api_key": api_key,
                "graceful_timeout_s": graceful_timeout,
                "access_log": access_log,
                "ray": ray,
                "replicas": replicas,
                "replica_cpus": replica_cpus,
            },
            "command line",
        )
    except ConfigError as exc:
        _fail(str(exc))
    for m in models or []:
        if not m.is_file():
            _fail(f"MODEL {m}: file not found")
    if repository is not None and not repository.is_dir():
        _fail(f"--repository {repository}: not a folder")
    import logging

    from transferkit.logs import detach_console

    detach_console()  # the server logs through the root logger, in uvicorn's format
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    from transferkit.serving.server import serve_config

    _run(serve_config, cfg)


@app.command()
def predict(
    model: Path = typer.Argument(..., help="An .onnx file written by `transferkit export`."),
    inputs: list[Path] = typer.Argument(..., help="Image files and/or folders."),
    top_k: int = typer.Option(1, help="Labels per image."),
    fmt: str = typer.Option("table", "--format", help="table or csv."),
) -> None:
    """Label images with an ONNX model (in-process, ONNX Runtime)."""
    if fmt not in ("table", "csv"):
        _fail(f"--format {fmt!r}: allowed values are table, csv")
    if top_k < 1:
        _fail("--top-k must be >= 1")
    if not model.is_file():
        _fail(f"MODEL {model}: file not found")
    from transferkit.imaging import IMAGE_EXTENSIONS, ImageDecodeError
    from transferkit.serving.model import OnnxClassifier

    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files += [f for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_EXTENSIONS]
        elif p.is_file():
            files.append(p)
        else:
            _fail(f"{p}: no such file or folder")
    if not files:
        _fail(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {', '.join(map(str, inputs))}")
    clf = _run(OnnxClassifier, str(model))
    rows = []
    for f in files:
        try:
            preds = clf.predict_image_bytes(f.read_bytes(), top_k=top_k)
            rows.append((str(f), preds, ""))
        except ImageDecodeError as exc:
            rows.append((str(f), [], str(exc)))
    _print_predictions(rows, top_k, fmt)
    if any(err for _, _, err in rows):
        raise typer.Exit(1)


def _print_predictions(rows, top_k: int, fmt: str) -> None:
    import csv

    if fmt == "csv":
        w = csv.writer(sys.stdout)
        header = (
            ["path"]
            + [h for i in range(1, top_k + 1) for h in (f"label_{i}", f"probability_{i}")]
            + ["error"]
        )
        w.writerow(header)
        for path, preds, err in rows:
            cells = [c for p in preds for c in (p["label"], f"{p['probability']:.6f}")]
            cells += [""] * (2 * top_k - len(cells))
            w.writerow([path, *cells, err])
        return
    width = max([len(r[0]) for r in rows] + [4])
    typer.echo(f"{'path':<{width}}  label  probability")
    for path, preds, err in rows:
        if err:
            typer.echo(f"{path:<{width}}  ERROR  {err}")
            continue
        typer.echo(
            f"{path:<{width}}  " + ", ".join(f"{p['label']} {p['probability']:.4f}" for p in preds)
        )


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
        _fail(f"--split {split!r}: allowed values are {', '.join(SPLITS)}")
    from transferkit.export.evaluate import evaluate_onnx

    result = _run(
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


@app.command()
def models(
    arch: str | None = typer.Argument(None, help="Show this architecture's stages."),
) -> None:
    """List the architectures, or one architecture's stages (what each freeze depth freezes)."""
    from transferkit.models.registry import get_arch, list_archs

    if arch is None:
        typer.echo("\n".join(list_archs()))
        typer.echo("\n`transferkit models NAME` shows its stages and freeze depths.")
        return
    _check_arch(arch, "ARCH")
    from transferkit.config import ModelConfig
    from transferkit.models.build import build_model, count_parameters

    built = build_model(ModelConfig(arch=arch, weights=None), 1000)
    spec = get_arch(arch)
    typer.echo(
        f"{arch}: {count_parameters(built.model):,} parameters (1000 classes), "
        f"{len(built.stages)} stages, head: {spec.head}"
    )
    typer.echo(f"{'freeze_depth':>12}  {'frozen through':<10}  modules (output channels)")
    typer.echo(f"{0:>12}  {'(nothing)':<10}  all layers train")
    for k, st in enumerate(built.stages, start=1):
        note = "  <- linear probe" if k == len(built.stages) else ""
        typer.echo(f"{k:>12}  {st.name:<10}  {', '.join(st.modules)} ({st.out_channels}){note}")


@data_app.command("materialize")
def materialize_cmd(
    name: str = typer.Argument(
        ...,
        help="Bundled dataset: digits, elpv (functional/defective), "
        "elpv-severity (p000..p100), elpv-type (mono/poly).",
    ),
    out_dir: Path = typer.Argument(..., help="Folder to write <class>/*.png into."),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Write a bundled real dataset as an ImageFolder of PNG files."""
    from transferkit.data.bundled import materialize

    counts = _run(materialize, name, out_dir, overwrite=overwrite)
    typer.echo(f"wrote {sum(counts.values())} images in {len(counts)} classes to {out_dir}")


def main() -> None:
    """Entry point of the ``transferkit`` script: transferkit's log lines on the console
    (:func:`transferkit.logs.setup_console`), then the command."""
    from transferkit.logs import setup_console

    setup_console()
    app()


if __name__ == "__main__":
    main()
