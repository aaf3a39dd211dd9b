"""``make bench``: every bench script in one go, then ``bench/results/SUMMARY.md``.

1. The models: the demo's teacher and student (``runs/demo/{teacher,student}.onnx`` and the
   teacher's run folder, as ``make demo`` leaves them); when missing, ``transferkit pipeline
   configs/demo-digits.yaml --output runs/demo`` makes them (12.9 minutes measured on 2 cores; it
   starts Ray).
2. Each script in turn, its output in ``bench/results/logs/<script>.log``, one line each with its
   outcome and seconds; a failing script does not stop the others (its row in the summary then
   says "failed: " and the last line it printed). The settings keep the whole run within 30
   minutes on a 2-core machine: 14.8 minutes measured with the models present (soak 5.5, serving
   about 4, Ray Train vs plain loop about 2.5, the others 1 or less each).
3. ``bench/summary.py`` with the outcome of each script; the total time.

``bench/elpv_holdout.py`` needs an hour-long ELPV pipeline run: only its quick mode
(``--make-split``, the stratified 75/25 split) runs here, and the summary shows the last
pipeline run's ``bench/results/elpv_holdout.json`` with its date.

Usage: ``.venv/bin/python bench/run_all.py [--only serve,soak] [--serve-duration 8]
[--soak-duration 300] [--demo runs/demo]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import REPO, RESULTS, provenance

log = logging.getLogger("transferkit.bench")
BENCH = REPO / "bench"
CLI = [sys.executable, "-m", "transferkit.cli"]


@dataclass
class Step:
    """One bench script: the commands it takes (run in order; the last is the script itself),
    its time limit in seconds, and whether it needs the demo models."""

    name: str
    commands: list[list[str]]
    timeout_s: float
    needs_models: bool = True


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and everything it started (its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_logged(cmd: list[str], log_path: Path, timeout_s: float) -> str | None:
    """Run ``cmd`` from the repository root with its output appended to ``log_path``.

    Returns:
        None when it exits 0; otherwise why not (the last line it printed, or the time-out).
    """
    with open(log_path, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        # its own process group, so that a time-out also stops the servers it started
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return f"timed out after {timeout_s:.0f} s"
        except BaseException:  # Ctrl+C: the group is not in the terminal's foreground
            _kill_group(proc)
            raise
    if rc == 0:
        return None
    lines = [x for x in log_path.read_text(errors="replace").splitlines() if x.strip()]
    return f"exit {rc}: {lines[-1].strip()[:200] if lines else 'no output'}"


def demo_models(demo: Path, config: Path, logs: Path) -> str | None:
    """Make sure ``demo`` holds teacher.onnx, student.onnx and the teacher's run folder; runs
    the demo pipeline when not. Returns None when ready, else why not."""
    needed = [demo / "teacher.onnx", demo / "student.onnx", demo / "teacher" / "splits.json"]
    if all(p.is_file() for p in needed):
        log.info(f"bench: using the demo models in {demo}")
        return None
    log.info(f"bench: no demo models in {demo}: running the demo pipeline (13 min on 2 cores)")
    cmd = [*CLI, "pipeline", str(config), "--output", str(demo)]
    why = run_logged(cmd, logs / "pipeline.log", 1800)
    if why is None and not all(p.is_file() for p in needed):
        why = f"the pipeline left no {', '.join(p.name for p in needed if not p.is_file())}"
    return why


def held_out(run: Path, dest: Path) -> Path:
    """The run's test split as an ImageFolder of links, ``dest/<class>/<file>``."""
    from transferkit.data.folder import Splits

    splits = Splits.from_json((run / "splits.json").read_text())
    for path, label in splits.test:
        d = dest / splits.class_names[label]
        d.mkdir(parents=True, exist_ok=True)
        (d / Path(path).name).symlink_to(path)
    return dest


def steps(demo: Path, work: Path, a: argparse.Namespace) -> list[Step]:
    """Every bench script with the settings of ``make bench``, writing into ``a.results``."""

    def script(name: str, *args: object, out: bool = True) -> list[str]:
        tail = ["--out", str(a.results)] if out else []
        return [sys.executable, str(BENCH / f"{name}.py"), *map(str, args), *tail]

    t, s = demo / "teacher.onnx", demo / "student.onnx"
    hold, emb = work / "held-out", work / "emb.onnx"
    export = [*CLI, "export", str(demo / "teacher"), "--embed-preprocessing", "--output", str(emb)]
    return [
        Step("serve", [script("serve", t, s, "--duration", a.serve_duration)], 1200),
        Step("soak", [script("soak", t, s, "--duration", a.soak_duration)], a.soak_duration + 300),
        Step("slow_clients", [script("slow_clients", s)], 300),
        Step("distill", [script("distill", "--teacher", t, "--student", s, "--images", hold, "--runs", 100)], 600),
        Step("quantize", [script("quantize", "--run", demo / "teacher", "--name", "demo-teacher", "--runs", 30)], 600),
        Step("embedded", [export, script("embedded", "--embedded", emb, "--model", t, "--images", hold, "--name", "demo-teacher")], 600),
        Step("precision", [script("precision")], 600, needs_models=False),
        Step("train_overhead", [script("train_overhead")], 900, needs_models=False),
        Step("elpv_holdout", [script("elpv_holdout", "--make-split", work / "elpv", out=False)], 300, needs_models=False),
    ]  # fmt: skip


def run_step(step: Step, logs: Path, models_missing: str | None) -> dict:
    """Run one step; its outcome ``{"ok", "seconds", "reason", "log"}``, logged in one line."""
    path = logs / f"{step.name}.log"
    path.write_text("")
    t0 = time.perf_counter()
    why = f"no demo models ({models_missing})" if step.needs_models and models_missing else None
    for cmd in step.commands if why is None else []:
        why = run_logged(cmd, path, step.timeout_s)
        if why:
            break
    seconds = time.perf_counter() - t0
    if why is None:
        log.info(f"bench {step.name}: ok in {seconds:.0f} s")
    else:
        log.warning(f"bench {step.name}: failed after {seconds:.0f} s: {why} (log: {path})")
    return {"ok": why is None, "seconds": seconds, "reason": why, "log": str(path)}


def merged_status(path: Path, outcome: dict[str, dict], total: float, full: bool) -> dict:
    """This run's status for ``run_all.json``: with ``--only`` (``full`` False) the scripts it did
    not run keep their outcome from the previous status; ``last_full_run`` (date, seconds and
    scripts of the newest run of every script, the figure ``make bench``'s time limit is about)
    is this run's when full, else carried over."""
    previous = json.loads(path.read_text()) if path.is_file() else {}
    head = provenance()
    scripts = outcome if full else {**previous.get("scripts", {}), **outcome}
    last_full = (
        {"date": head["date"], "total_s": total, "scripts": len(outcome)}
        if full
        else previous.get("last_full_run")
    )
    return {**head, "total_s": total, "ran": sorted(outcome), "scripts": scripts,
            "last_full_run": last_full}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--demo", type=Path, default=REPO / "runs" / "demo")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "demo-digits.yaml")
    p.add_argument("--only", default=None, help="comma-separated script names (default: all)")
    p.add_argument("--serve-duration", type=float, default=8.0, help="seconds per serve cell")
    p.add_argument("--soak-duration", type=float, default=300.0, help="seconds")
    p.add_argument("--results", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    from transferkit.logs import setup_console

    setup_console()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # the scripts' logs fill as they run
    t0 = time.perf_counter()
    logs = a.results / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    demo = a.demo.resolve()
    outcome: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        chosen = [s for s in steps(demo, work, a) if not a.only or s.name in a.only.split(",")]
        missing = None
        if any(s.needs_models for s in chosen):
            missing = demo_models(demo, a.config, logs)
            if missing is None:
                held_out(demo / "teacher", work / "held-out")
        for step in chosen:
            outcome[step.name] = run_step(step, logs, missing)
    total = time.perf_counter() - t0
    status_path = a.results / "run_all.json"
    status = merged_status(status_path, outcome, total, full=not a.only)
    status_path.write_text(json.dumps(status, indent=2) + "\n")
    import summary

    summary.main(["--results", str(a.results), "--status", str(status_path)])
    failed = [n for n, o in outcome.items() if not o["ok"]]
    log.info(
        f"bench: {len(outcome) - len(failed)} of {len(outcome)} scripts ran"
        + (f" ({', '.join(failed)} failed)" if failed else "")
        + f"; total {total / 60:.1f} min; summary in {a.results / 'SUMMARY.md'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
