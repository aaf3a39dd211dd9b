"""The results of a search read back from Tune: each trial's best epoch, the best trial and the
default trial by ``tune.metric``, the summary and ``trials.csv``. Small hand-made frames and trial
stand-ins; no Ray cluster (``ExperimentAnalysis`` is replaced by a stand-in)."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from transferkit.config import Preprocessing, TuneConfig
from transferkit.data.folder import Splits
from transferkit.tuning import results
from transferkit.tuning.context import SearchContext, trial_base
from transferkit.tuning.plot import y_axis as _y_axis
from transferkit.tuning.results import (
    _default_line,
    _default_summary,
    _default_trial_id,
    _pick_best,
    _trial_row,
)
from transferkit.tuning.results import conclude as _conclude
from transferkit.tuning.storage import ExperimentDir

pytestmark = pytest.mark.usefixtures("no_ray_cluster")


def _trial(trial_id: str, tag: str, config: dict, status: str = "TERMINATED", wall: float = 12.34):
    return SimpleNamespace(
        trial_id=trial_id,
        experiment_tag=tag,
        config=config,
        status=status,
        last_result={"time_total_s": wall},
        error_file=None,
    )


def _epochs(rows: list[tuple]) -> pd.DataFrame:
    cols = ["epoch", "val_acc", "val_loss", "val_macro_f1", "val_balanced_acc", "checkpoint_path"]
    return pd.DataFrame(rows, columns=cols)


# Epoch 2 was reported twice (a trial restored from its epoch-1 checkpoint reports it again):
# the later report counts. Worked out by hand: macro F1 peaks at epoch 4 (0.86); accuracy ties at
# epochs 2 and 3 (0.90) and the lower val loss (0.35) picks 3; balanced accuracy and val loss
# both pick epoch 3. The stale epoch-2 row (F1 0.99) must not win.
FRAME = _epochs(
    [
        (1, 0.80, 0.60, 0.70, 0.78, "c1"),
        (2, 0.50, 0.90, 0.99, 0.50, "stale"),
        (2, 0.90, 0.40, 0.82, 0.88, "c2"),
        (3, 0.90, 0.35, 0.80, 0.91, "c3"),
        (4, 0.85, 0.45, 0.86, 0.84, "c4"),
    ]
)
CONFIG = {"freeze_depth": 2, "head_lr": 5e-3}


@pytest.mark.parametrize(
    "metric, epoch, acc, loss, extra",
    [
        ("val_macro_f1", 4, 0.85, 0.45, 0.86),
        ("val_balanced_acc", 3, 0.90, 0.35, 0.91),
        ("val_acc", 3, 0.90, 0.35, None),
        ("val_loss", 3, 0.90, 0.35, None),
    ],
)
def test_a_trials_best_epoch_follows_the_search_metric(metric, epoch, acc, loss, extra):
    row = _trial_row(_trial("t1", "0", CONFIG), FRAME, ["freeze_depth", "head_lr"], 6, metric)
    assert (row["best_epoch"], row["best_val_acc"], row["best_val_loss"]) == (epoch, acc, loss)
    assert row["checkpoint"] == f"c{epoch}" and row["epochs_run"] == 4
    assert row["stopped_early"] is True and row["wall_time_s"] == 12.3
    assert (row["freeze_depth"], row["head_lr"]) == (2, 5e-3)
    others = {"best_val_macro_f1", "best_val_balanced_acc"}
    if extra is None:  # val_acc and val_loss already have their columns
        assert not others & set(row)
    else:
        assert row[f"best_{metric}"] == extra and not (others - {f"best_{metric}"}) & set(row)


def test_a_trial_without_results_has_no_score():
    row = _trial_row(
        _trial("t2", "1", CONFIG, status="ERROR"), None, ["head_lr"], 4, "val_macro_f1"
    )
    assert math.isnan(row["best_val_macro_f1"]) and math.isnan(row["best_val_acc"])
    assert (row["epochs_run"], row["checkpoint"], row["stopped_early"]) == (0, "", False)


def test_a_trial_that_ran_its_budget_was_not_stopped_early():
    row = _trial_row(_trial("t1", "0", CONFIG), FRAME, [], 4, "val_macro_f1")
    assert row["stopped_early"] is False


TABLE = pd.DataFrame(
    {
        "trial_id": ["a", "b", "c"],
        "is_default": [True, False, False],
        "best_val_acc": [0.91, 0.92, 0.90],
        "best_val_loss": [0.30, 0.50, 0.40],
        "best_val_balanced_acc": [0.90, 0.93, 0.93],
    }
)


def test_the_best_trial_follows_the_search_metric():
    # balanced accuracy: b and c tie at 0.93, c has the lower val loss
    assert _pick_best(TABLE, "val_balanced_acc")["trial_id"] == "c"
    assert _pick_best(TABLE, "val_acc")["trial_id"] == "b"
    assert _pick_best(TABLE, "val_loss")["trial_id"] == "a"  # minimised


def test_a_tie_with_the_default_trial_keeps_the_default():
    tie = pd.DataFrame(
        {
            "trial_id": ["x", "y"],
            "is_default": [False, True],
            "best_val_acc": [0.95, 0.95],
            "best_val_loss": [0.2, 0.2],
            "best_val_macro_f1": [0.9, 0.9],
        }
    )
    assert _pick_best(tie, "val_macro_f1")["trial_id"] == "y"
    assert _pick_best(tie, "val_loss")["trial_id"] == "y"
    assert _pick_best(tie.drop(columns="is_default"), "val_macro_f1")["trial_id"] == "x"


def test_the_default_trial_is_the_first_created_that_holds_the_base_values():
    point = {"freeze_depth": 0, "head_lr": 5e-3}
    trials = [  # Optuna's trial ids are random: creation order is the tag's number
        _trial("0000abcd", "3_freeze_depth=0,head_lr=0.0050", {"freeze_depth": 0, "head_lr": 5e-3}),
        _trial(
            "ffff1111",
            "1_freeze_depth=0,head_lr=0.0050",
            {"freeze_depth": 0, "head_lr": 5e-3 * (1 + 1e-12)},
        ),
        _trial("aaaa2222", "2_freeze_depth=3,head_lr=0.0050", {"freeze_depth": 3, "head_lr": 5e-3}),
    ]
    assert _default_trial_id(trials, point) == "ffff1111"
    assert _default_trial_id(trials, None) is None  # a search from before seeding
    assert _default_trial_id(trials, {"freeze_depth": 7}) is None


# ----------------------------------------------------------------------------- the summary


def _frame(rows: list[tuple], ckpt: str = "") -> pd.DataFrame:
    cols = ["epoch", "val_acc", "val_loss", "val_balanced_acc"]
    df = pd.DataFrame(rows, columns=cols)
    df["checkpoint_path"] = [f"{ckpt}/checkpoint_{e:06d}" if ckpt else "" for e in df["epoch"]]
    return df


def test_conclude_compares_the_default_with_the_best_by_the_search_metric(
    tmp_path, monkeypatch, caplog
):
    caplog.set_level(logging.INFO, logger="transferkit")
    cfg = TuneConfig.model_validate(
        {
            "optim": {"epochs": 4},
            "output": str(tmp_path / "exp"),
            "tune": {"metric": "val_balanced_acc", "search": {"freeze_depth": [0, 3]}},
        }
    )
    exp = ExperimentDir(cfg.output)
    exp.claim(False)
    point = {"freeze_depth": 0, "backbone_lr": 2e-3, "head_lr": 5e-3}
    ckpt = tmp_path / "exp" / "abc_00001" / "train"
    (ckpt / "checkpoint_000003").mkdir(parents=True)
    trials = [
        # the default trial, stopped by ASHA after 2 of 4 epochs
        _trial("abc_00000", "0", {**point}),
        _trial(
            "abc_00001",
            "1_freeze_depth=3,backbone_lr=0.0004,head_lr=0.0100",
            {"freeze_depth": 3, "backbone_lr": 4e-4, "head_lr": 1e-2},
        ),
        _trial(
            "abc_00002",
            "2_freeze_depth=0,backbone_lr=0.0050,head_lr=0.0200",
            {"freeze_depth": 0, "backbone_lr": 5e-3, "head_lr": 2e-2},
            status="ERROR",
        ),
    ]
    frames = {
        "abc_00000": _frame([(1, 0.82, 0.50, 0.80), (2, 0.88, 0.40, 0.85)]),
        # accuracy peaks at epoch 4 (0.95), balanced accuracy at epoch 3 (0.93): epoch 3 is best
        "abc_00001": _frame(
            [
                (1, 0.70, 0.90, 0.68),
                (2, 0.85, 0.60, 0.84),
                (3, 0.94, 0.30, 0.93),
                (4, 0.95, 0.31, 0.92),
            ],
            ckpt=str(ckpt),
        ),
    }

    class Analysis:
        def __init__(self, path, default_metric, default_mode):
            assert (path, default_metric, default_mode) == (exp.uri, "val_balanced_acc", "max")
            self.trials, self.trial_dataframes = trials, frames

    import ray.tune

    monkeypatch.setattr(ray.tune, "ExperimentAnalysis", Analysis)
    monkeypatch.setattr(results, "wait_for_resources", lambda: None)
    context = SearchContext(
        trial_base(cfg), Splits(list("ab"), [], [], []), Preprocessing(), default_point=point
    )
    summary = _conclude(cfg, exp, context)

    assert summary["metric"] == "val_balanced_acc" and summary["mode"] == "max"
    assert (summary["num_trials"], summary["errored"], summary["stopped_early"]) == (3, 1, 1)
    assert summary["trial_epochs"] == 2 + 4 and summary["max_epochs"] == 4
    best = summary["best"]
    assert best["trial_id"] == "abc_00001" and best["epoch"] == 3
    assert (best["val_balanced_acc"], best["val_acc"], best["val_loss"]) == (0.93, 0.94, 0.30)
    assert best["config"] == {"freeze_depth": 3, "backbone_lr": 4e-4, "head_lr": 1e-2}
    assert best["checkpoint"] == str(ckpt / "checkpoint_000003")
    assert summary["default"] == {
        "trial_id": "abc_00000",
        "config": point,
        "val_balanced_acc": 0.85,
        "val_acc": 0.88,
        "val_loss": 0.40,
        "epoch": 2,
        "epochs_run": 2,
        "stopped_early": True,
        "status": "TERMINATED",
    }
    assert summary["best_is_default"] is False
    # best_trial.json is strict JSON (no numpy scalars turned into strings, no NaN)
    saved = json.loads(
        (tmp_path / "exp" / "best_trial.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"{c} in best_trial.json"),
    )
    assert saved == summary
    table = pd.read_csv(tmp_path / "exp" / "trials.csv")
    assert list(table["is_default"]) == [True, False, False]
    assert list(table["best_val_balanced_acc"].fillna(-1)) == [0.85, 0.93, -1]
    assert {"best_val_acc", "best_val_loss", "best_epoch", "epochs_run", "stopped_early"} <= set(
        table
    )
    assert (tmp_path / "exp" / "tune_plot.png").read_bytes()[:4] == b"\x89PNG"
    out = caplog.text  # the search's summary lines are log records (transferkit.logs)
    assert (
        "default values: val_balanced_acc 0.8500 (trial abc_00000, stopped early by the scheduler "
        "after 2 epochs) vs best 0.9300 (trial abc_00001)"
    ) in out


def test_the_default_line_when_the_default_is_best_failed_or_missing():
    table = pd.DataFrame(
        {
            "trial_id": ["d", "e"],
            "status": ["TERMINATED", "ERROR"],
            "is_default": [True, False],
            "head_lr": [5e-3, 1e-2],
            "best_val_acc": [0.99, math.nan],
            "best_val_loss": [0.1, math.nan],
            "best_epoch": [4, 0],
            "epochs_run": [4, 0],
            "stopped_early": [False, False],
        }
    )
    d = _default_summary(table, "d", ["head_lr"], "val_acc")
    assert d == {
        "trial_id": "d",
        "config": {"head_lr": 5e-3},
        "val_acc": 0.99,
        "val_loss": 0.1,
        "epoch": 4,
        "epochs_run": 4,
        "stopped_early": False,
        "status": "TERMINATED",
    }
    best = {"trial_id": "d", "val_acc": 0.99}
    line = _default_line({"default": d, "best": best, "metric": "val_acc", "best_is_default": True})
    assert (
        line
        == "default values: val_acc 0.9900 (trial d, 4 epochs) vs best 0.9900 (the default trial itself)"
    )
    failed = _default_summary(table, "e", ["head_lr"], "val_acc")
    assert failed["val_acc"] is None and failed["status"] == "ERROR"
    line = _default_line(
        {"default": failed, "best": best, "metric": "val_acc", "best_is_default": False}
    )
    assert (
        line == "default values: val_acc n/a (trial e, no result, ERROR) vs best 0.9900 (trial d)"
    )
    assert _default_summary(table, None, ["head_lr"], "val_acc") is None
    assert "no trial ran the base config's values" in _default_line(
        {"default": None, "best": best, "metric": "val_acc", "best_is_default": False}
    )


def test_the_plot_shows_the_search_metric():
    assert _y_axis("val_macro_f1") == ("best_val_macro_f1", 100.0, "best val macro F1 (%)")
    assert _y_axis("val_balanced_acc") == (
        "best_val_balanced_acc",
        100.0,
        "best val balanced accuracy (%)",
    )
    assert _y_axis("val_acc") == ("best_val_acc", 100.0, "best val accuracy (%)")
    assert _y_axis("val_loss") == ("best_val_loss", 1.0, "best val loss")
