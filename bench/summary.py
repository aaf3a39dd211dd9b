"""One table of every benchmark figure beside its goal: ``bench/results/SUMMARY.md``.

Reads the newest result of each bench script in ``--results`` (default ``bench/results``): the
stable ``<stem>.json`` where the script writes one, else the newest ``<stem>-*.json``. Each
figure is a line of one markdown table ``| row | figure | measured | goal | met? | machine |
date |``, with the machine and date the file records (a file without a date: its modification
time). Scripts that write ``checks`` (``_common.check``: measured, goal, pass) and
``references`` (figures without a goal, shown with the goal "-") are shown as they wrote them;
for the older scripts the goals are stated here (``GOALS``). A script without a result is "not
run"; with ``--status`` (written by ``bench/run_all.py``), a script that failed is "failed:
reason".

Usage: ``.venv/bin/python bench/summary.py [--results DIR] [--status FILE] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _common import REPO, RESULTS, describe_machine

#: A table line: figure, measured, goal, met (None: a figure without a goal).
Line = tuple[str, str, str, bool | None]

#: Goals of the scripts that write no ``checks`` of their own, and where each comes from.
GOALS = {
    # DistilBERT keeps 97% of its teacher's score (shared NOTES, anchor facts)
    "student_accuracy_ratio": 0.97,
    # the export's own check of an embedded-preprocessing file (README, "Preprocessing inside")
    "embedded_agreement": 0.995,
    "embedded_prob_diff": 0.05,
    # Deitsch et al. (2019) on ELPV: fine-tuned VGG-19 on a GPU, SVM on hand-crafted features
    "elpv_teacher_accuracy": 0.8842,
    "elpv_student_accuracy": 0.8244,
}


def find_result(results: Path, stem: str) -> Path | None:
    """The stable ``<stem>.json``, else the newest ``<stem>-*.json``; None when neither exists."""
    stable = results / f"{stem}.json"
    if stable.is_file():
        return stable
    found = sorted(results.glob(f"{stem}-*.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def date_of(doc: dict[str, Any], path: Path) -> str:
    """The file's recorded date, else its modification time: ``YYYY-MM-DD HH:MM UTC``."""
    if doc.get("date"):
        when = datetime.fromisoformat(doc["date"])
    else:
        when = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def written_lines(doc: dict[str, Any]) -> list[Line]:
    """A new-style result: its ``checks``, then its ``references``."""
    out: list[Line] = [
        (name, c["measured"], c["goal"], bool(c["pass"]))
        for name, c in doc.get("checks", {}).items()
    ]
    out += [(r["figure"], r["measured"], "-", None) for r in doc.get("references", [])]
    return out


def _ratio_line(figure: str, s: float, t: float, unit: str, goal: float, faster: bool) -> Line:
    ratio = s / t
    met = ratio < goal if faster else ratio >= goal
    sign = "<" if faster else ">="
    return (figure, f"{ratio:.3f} ({s:.4g} vs {t:.4g}{unit})", f"{sign} {goal:g}", met)


def distill_lines(doc: dict[str, Any]) -> list[Line]:
    """Teacher vs student (``bench/distill.py``): accuracy kept, speed and size."""
    t, s = doc["teacher"], doc["student"]
    n = s.get("test_images", "?")
    return [
        _ratio_line(
            f"student / teacher test accuracy ({n} held-out images)",
            s["test_acc"],
            t["test_acc"],
            "",
            GOALS["student_accuracy_ratio"],
            faster=False,
        ),
        _ratio_line("student / teacher ORT p50 at batch 1", s["p50_ms_b1"], t["p50_ms_b1"], " ms", 1, True),
        _ratio_line("student / teacher ORT p50 at batch 32", s["p50_ms_b32"], t["p50_ms_b32"], " ms", 1, True),
        (
            f"parameters: student ({s['arch']}) / teacher ({t['arch']})",
            f"{s['parameters'] / t['parameters']:.3f} ({s['parameters']:,} vs {t['parameters']:,})",
            "-",
            None,
        ),
    ]  # fmt: skip


def quantize_lines(doc: dict[str, Any]) -> list[Line]:
    """INT8 (``bench/quantize.py``): the variant the gate ships, against fp32."""
    g, fp32, shipped = doc["gate"], doc["fp32"], doc.get("shipped")
    goal = (
        f"a variant passes: accuracy >= fp32 - {100 * g['max_accuracy_drop']:g} pt, "
        f"batch-32 p50 <= {g['max_latency_ratio']:g}x fp32"
    )
    run = "/".join(Path(str(doc.get("run", "?"))).parts[-2:])
    if shipped:
        v = doc["variants"][shipped]
        measured = (
            f"{shipped}: {v['p50_ms_b32']:.2f} vs {fp32['p50_ms_b32']:.2f} ms "
            f"({v['p50_ms_b32'] / fp32['p50_ms_b32']:.2f}x), accuracy {100 * v['test_acc']:.2f}% "
            f"vs {100 * fp32['test_acc']:.2f}%"
        )
    else:
        measured = "refused: " + ", ".join(
            f"{n} {100 * -x['accuracy_drop']:+.2f} pt, {x['latency_ratio']:.2f}x"
            for n, x in doc["verdicts"].items()
        )
    return [(f"INT8 shipped by the gate (run {run})", measured, goal, bool(shipped))]


def embedded_lines(doc: dict[str, Any]) -> list[Line]:
    """Preprocessing in the graph (``bench/embedded.py``) against the server's answers."""
    agree, diff = doc["top1_agreement"], doc["max_abs_prob_diff"]
    name = Path(doc["embedded"]).name
    return [
        (
            f"top-1 agreement with the server, {doc['images']} images ({name})",
            f"{100 * agree:.2f}%",
            f">= {100 * GOALS['embedded_agreement']:g}%",
            agree >= GOALS["embedded_agreement"],
        ),
        (
            "largest probability difference from the server",
            f"{diff:.2e}",
            f"<= {GOALS['embedded_prob_diff']:g}",
            diff <= GOALS["embedded_prob_diff"],
        ),
    ]


def precision_lines(doc: dict[str, Any]) -> list[Line]:
    """Training-step speed, bf16 autocast vs fp32 (``bench/precision.py``): no goal."""
    native = doc.get("native_bf16", doc.get("machine", {}).get("native_bf16"))
    return [
        (
            f"training images/s, bf16 / fp32: {r['model']} (native bf16: {native})",
            f"{r['speedup']:.2f}x ({r['bf16']:.1f} vs {r['fp32']:.1f} images/s)",
            "-",
            None,
        )
        for r in doc["rows"]
    ]


def elpv_lines(doc: dict[str, Any]) -> list[Line]:
    """ELPV held-out cells served over HTTP (``bench/elpv_holdout.py``), from the last pipeline
    run (``make bench`` cannot rerun that hour-long pipeline)."""
    out: list[Line] = []
    source = f"from the last pipeline run, {doc.get('pipeline', '?')}"
    for who, key in (("teacher", "elpv_teacher_accuracy"), ("student", "elpv_student_accuracy")):
        m = doc["models"].get(who)
        if m:
            out.append(
                (
                    f"{who} accuracy on {m['images']} held-out cells ({source})",
                    f"{100 * m['accuracy']:.2f}% (balanced {100 * m['balanced_accuracy']:.2f}%)",
                    f">= {100 * GOALS[key]:.2f}% (Deitsch et al. 2019)",
                    m["accuracy"] >= GOALS[key],
                )
            )
    return out


@dataclass(frozen=True)
class Row:
    """One row of the table.

    Attributes:
        name: the row's name.
        stem: the script's result stem (``serve`` for ``serve.json`` / ``serve-*.json``).
        build: the row's lines from its result document.
        rerun: whether ``make bench`` writes the result anew; if not (the ELPV pipeline), the
            last result is shown and a failed quick check is added as a line of its own.
    """

    name: str
    stem: str
    build: Callable[[dict[str, Any]], list[Line]]
    rerun: bool = True


#: The table's rows, in order.
ROWS = [
    Row("serving", "serve", written_lines),
    Row("soak", "soak", written_lines),
    Row("slow clients", "slow_clients", written_lines),
    Row("teacher vs student", "distill", distill_lines),
    Row("Ray Train vs plain loop", "train_overhead", written_lines),
    Row("quantize", "quantize", quantize_lines),
    Row("embedded preprocessing", "embedded", embedded_lines),
    Row("precision", "precision", precision_lines),
    Row("elpv held-out", "elpv_holdout", elpv_lines, rerun=False),
]
_MET = {True: "yes", False: "**no**", None: "-"}


def row_cells(row: Row, results: Path, scripts: dict[str, Any]) -> list[list[str]]:
    """The table lines of one row: its figures, or one line saying it failed or did not run.

    Args:
        row: the row.
        results: the results folder.
        scripts: ``bench/run_all.py``'s outcome per script stem (``ok``, ``reason``); may be empty.
    """
    state = scripts.get(row.stem) or {}
    failed = f"failed: {state.get('reason', '?')}" if state and not state.get("ok") else None
    path = find_result(results, row.stem)
    if failed and row.rerun:
        return [[row.name, "-", failed, "-", _MET[False], "-", "-"]]
    if path is None:
        return [[row.name, "-", failed or "not run", "-", "-", "-", "-"]]
    try:
        doc = json.loads(path.read_text())
        lines = row.build(doc)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        why = f"unreadable result {path.name}: {type(exc).__name__} {exc}"
        return [[row.name, "-", why, "-", _MET[False], "-", "-"]]
    if failed:
        lines.append(("quick check of the script", failed, "runs", False))
    machine, date = describe_machine(doc.get("machine")), date_of(doc, path)
    return [[row.name, f, m, g, _MET[ok], machine, date] for f, m, g, ok in lines]


def render(results: Path, status: dict[str, Any] | None = None) -> str:
    """The markdown document: a heading, where the figures come from, the one table."""
    status = status or {}
    scripts = status.get("scripts", {})
    head = ["row", "figure", "measured", "goal", "met?", "machine", "date"]
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in ROWS:
        for cells in row_cells(row, results, scripts):
            table.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    where = results.resolve()
    shown = where.relative_to(REPO) if where.is_relative_to(REPO) else where
    intro = (
        f"Written by `bench/summary.py` on {now} from the newest result file of each script in "
        f"`{shown}/`; machine and date are those each file records."
    )
    if "total_s" in status:
        ran = status.get("ran", list(scripts))
        failed = sum(not scripts.get(n, {}).get("ok") for n in ran)
        intro += (
            f" Its last call, `bench/run_all.py`, ran {len(ran)} script(s) in "
            f"{status['total_s'] / 60:.1f} min ({failed} failed)."
        )
    full = status.get("last_full_run")
    if full:
        intro += (
            f" The last run of every script (`make bench`, {full['scripts']} scripts) took "
            f"{full['total_s'] / 60:.1f} min, on {full['date'][:16].replace('T', ' ')} UTC."
        )
    return "\n".join(["# Benchmarks", "", intro, "", *table, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--status", type=Path, default=None, help="bench/run_all.py's status file")
    p.add_argument("--out", type=Path, default=None, help="default: RESULTS/SUMMARY.md")
    a = p.parse_args(argv)
    status = json.loads(a.status.read_text()) if a.status else None
    out = a.out or a.results / "SUMMARY.md"
    out.write_text(render(a.results, status))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
