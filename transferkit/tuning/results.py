"""A finished (or interrupted) search read back from Tune's saved state: one ``trials.csv`` row
per trial at its best epoch, the best trial and the default trial by ``tune.metric``, the summary
(``best_trial.json``), ``best_config.yaml`` and the plot (``tune_plot.png``). The experiment
folder's layout is in :mod:`transferkit.tuning.search`."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import yaml

from transferkit.config import DistillConfig
from transferkit.errors import TransferkitError
from transferkit.tuning.context import SearchContext
from transferkit.tuning.resources import wait_for_resources
from transferkit.tuning.space import apply_sample, base_values, same_value
from transferkit.tuning.storage import ExperimentDir

log = logging.getLogger(__name__)

TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best_config.yaml"
BEST_TRIAL = "best_trial.json"
PLOT = "tune_plot.png"


class SearchInterrupted(TransferkitError, RuntimeError):
    """The search stopped (SIGINT) before every trial finished; ``--resume`` continues it."""


class SearchFailedError(TransferkitError, RuntimeError):
    """No trial produced a result (the first trial error is chained in the message)."""


def conclude(cfg, exp: ExperimentDir, context: SearchContext) -> dict[str, Any]:
    """Read the search in ``exp`` back, write ``trials.csv``, ``best_config.yaml``,
    ``best_trial.json`` and ``tune_plot.png``, and log the outcome.

    Returns:
        The summary :func:`transferkit.tuning.search.tune_search` documents.

    Raises:
        SearchInterrupted: a trial had not finished (``trials.csv`` is written all the same).
        SearchFailedError: no trial produced a result.
    """
    metric = cfg.tune.metric
    analysis, table, searched, default_id = _read_trials(cfg, exp, context)
    wait_for_resources()
    scored = table.dropna(subset=[score_column(metric)])
    if scored.empty:
        errors = [str(t.error_file or t.status) for t in analysis.trials]
        raise SearchFailedError(f"every trial failed; see {errors[:3]} in {exp.uri}")
    best = _pick_best(scored, metric).to_dict()
    best_cfg = _best_config(context, exp, {k: best[k] for k in searched})
    best["checkpoint"] = _existing_checkpoint(best, exp)
    summary = {
        "experiment": exp.uri,
        "trials_csv": exp.join(TRIALS_CSV),
        "best_config": exp.join(BEST_CONFIG),
        "plot": exp.join(PLOT),
        "num_trials": len(table),
        "max_epochs": cfg.optim.epochs,
        "trial_epochs": int(table["epochs_run"].sum()),
        "stopped_early": int(table["stopped_early"].sum()),
        "errored": int((table["status"] == "ERROR").sum()),
        "metric": metric,
        "mode": tune_mode(metric),
        # typed values: an int depth, float rates
        "best": _best_summary(best, base_values(best_cfg, searched, context.space), metric),
        "default": _default_summary(table, default_id, searched, metric),
        "best_is_default": bool(default_id is not None and best["trial_id"] == default_id),
    }
    exp.write_text(BEST_CONFIG, yaml.safe_dump(best_cfg.model_dump(mode="json"), sort_keys=False))
    exp.write_text(BEST_TRIAL, json.dumps(summary, indent=2, default=str))
    from transferkit.tuning.plot import plot_trials

    exp.write_bytes(PLOT, plot_trials(table, searched, cfg))
    _log_summary(cfg, context, summary)
    return summary


def _read_trials(cfg, exp: ExperimentDir, context: SearchContext):
    """Tune's saved state as ``(analysis, trials table, searched names, default trial id)``; the
    table is written to ``trials.csv`` and logged.

    Raises:
        SearchInterrupted: a trial had not finished.
    """
    import pandas as pd
    from ray import tune

    metric = cfg.tune.metric
    # Read the experiment back from storage: after Ctrl+C the in-memory trials all say TERMINATED,
    # while the saved state (what --resume continues) keeps an interrupted trial RUNNING.
    analysis = tune.ExperimentAnalysis(
        exp.uri, default_metric=metric, default_mode=tune_mode(metric)
    )
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
    return analysis, table, searched, default_id


def _best_summary(best: dict[str, Any], sample: dict[str, Any], metric: str) -> dict[str, Any]:
    """The best trial's line of the summary: id, typed values, figures at its best epoch."""
    line = {
        "trial_id": best["trial_id"],
        "config": sample,
        "val_acc": float(best["best_val_acc"]),
        "val_loss": float(best["best_val_loss"]),
    }
    line[metric] = float(best[score_column(metric)])
    line.update(epoch=int(best["best_epoch"]), checkpoint=best["checkpoint"])
    return line


def _log_summary(cfg, context: SearchContext, summary: dict[str, Any]) -> None:
    b, metric, n = summary["best"], summary["metric"], summary["num_trials"]
    log.info(
        f"{n} trials, {summary['trial_epochs']} trial-epochs of {n * cfg.optim.epochs} "
        f"possible; {summary['stopped_early']} stopped early, {summary['errored']} failed"
    )
    log.info(
        f"best trial {b['trial_id']}: {metric} {b[metric]:.4f} (val_acc "
        f"{b['val_acc']:.4f}) at epoch {b['epoch']} with {b['config']}"
    )
    log.info(f"{_default_line(summary)}")
    log.info(f"best checkpoint {b['checkpoint']}")
    log.info(f"wrote {summary['trials_csv']}, {summary['plot']}")
    if cfg.tune.tracking == "tensorboard":
        log.info(f"TensorBoard: tensorboard --logdir {summary['experiment']}")
    command = "distill" if isinstance(context.base, DistillConfig) else "finetune"
    log.info(f"reproduce it: transferkit {command} --config {summary['best_config']}")


def tune_mode(metric: str) -> str:
    """``"min"`` or ``"max"`` for ``metric`` (Tune's ``mode``)."""
    from transferkit.training.outcome import metric_mode  # the one owner of the rule

    return metric_mode(metric)


def score_column(metric: str) -> str:
    """The ``trials.csv`` column that ranks trials: ``best_<metric>``."""
    return f"best_{metric}"


def _score_cols(metric: str) -> list[str]:
    """``trials.csv``'s figures at each trial's best epoch: ``best_val_acc``, ``best_val_loss``
    and, when ``metric`` is another one, ``best_<metric>``."""
    cols = ["best_val_acc", "best_val_loss"]
    return cols if score_column(metric) in cols else [*cols, score_column(metric)]


def _best_epoch(df, metric: str):
    """One trial's best epoch (a row of its results, one per epoch): the highest ``metric``
    (the lowest for ``val_loss``), ties to the lower val loss, then to the earlier epoch. Results
    without a ``metric`` column are ranked by ``val_acc``."""
    key = metric if metric in df else "val_acc"
    if tune_mode(key) == "max":
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
    col = score_column(metric)
    if tune_mode(metric) == "max":
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
    out[metric] = num(row[score_column(metric)])
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
    scores = ["best_val_acc"] + ([score_column(metric)] if metric != "val_acc" else [])
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
