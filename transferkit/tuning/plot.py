"""``tune_plot.png``: each trial's best ``tune.metric`` against each searched value."""

from __future__ import annotations

from transferkit.config import Range
from transferkit.tuning.results import score_column

_LABELS = {
    "val_acc": "val accuracy",
    "val_balanced_acc": "val balanced accuracy",
    "val_macro_f1": "val macro F1",
    "val_loss": "val loss",
}


def y_axis(metric: str) -> tuple[str, float, str]:
    """The plot's y axis for ``metric``: ``(trials.csv column, scale, label)``; accuracy-like
    metrics in percent."""
    scale = 1.0 if metric == "val_loss" else 100.0
    label = f"best {_LABELS.get(metric, metric)}" + (" (%)" if scale == 100.0 else "")
    return score_column(metric), scale, label


def plot_trials(table, searched: list[str], cfg) -> bytes:
    """PNG: each trial's best ``tune.metric`` against each searched value (log axis for log
    ranges); crosses mark trials that ASHA stopped early, a star the default trial."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    col, scale, ylabel = y_axis(cfg.tune.metric)
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
