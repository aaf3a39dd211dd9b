"""bench/summary.py on synthetic result files: every named row is in the one table, a missed goal
reads as not met, a missing result as "not run", a failed script as "failed: reason"."""

import json
import os
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

import _common  # noqa: E402
import summary  # noqa: E402

NAMED = ["serving", "soak", "slow clients", "teacher vs student", "Ray Train vs plain loop"]
MACHINE = {"cpu": "Test CPU", "cores": 2, "ram_gib": 24.0, "gpus": [], "platform": "x"}


def _write(results: Path, name: str, doc: dict) -> None:
    doc = {"date": "2026-12-02T13:00:00+00:00", "machine": MACHINE, **doc}
    (results / name).write_text(json.dumps(doc))


def _new_style(results: Path, stem: str, passed: bool = True) -> None:
    c = _common.check("1.00", "<= 2", passed)
    r = _common.reference("p50 / p99 ms", "1.0 / 2.0 ms")
    _write(results, f"{stem}.json", {"checks": {f"{stem} figure": c}, "references": [r]})


def _distill(acc_student: float) -> dict:
    t = {"arch": "mobilenet_v2", "parameters": 2_236_682, "test_acc": 0.99, "test_images": 359}
    s = {"arch": "mobilenet_v3_small", "parameters": 409_394, "test_acc": acc_student}
    t.update(p50_ms_b1=0.5, p50_ms_b32=12.0)
    s.update(test_images=359, p50_ms_b1=0.25, p50_ms_b32=4.0)
    return {"teacher": t, "student": s}


def _all_results(results: Path) -> None:
    for stem in ("serve", "soak", "slow_clients", "train_overhead"):
        _new_style(results, stem)
    _write(results, "distill-20261202-130000.json", _distill(0.985))
    fp32 = {"test_acc": 0.99, "p50_ms_b32": 12.0}
    variant = {"test_acc": 0.99, "p50_ms_b32": 6.0}
    verdict = {"accuracy_drop": 0.0, "latency_ratio": 0.5, "passed": True}
    _write(
        results,
        "quantize-demo-teacher.json",
        {
            "gate": {"max_accuracy_drop": 0.01, "max_latency_ratio": 0.67},
            "fp32": fp32,
            "variants": {"qdq": variant},
            "verdicts": {"qdq": verdict},
            "shipped": "qdq",
            "run": "/x/runs/demo/teacher",
        },
    )
    embedded = {"embedded": "/x/e.onnx", "images": 359, "top1_agreement": 1.0}
    _write(results, "embedded-demo-teacher.json", {**embedded, "max_abs_prob_diff": 1e-7})
    rows = [{"model": "teacher", "fp32": 10.0, "bf16": 12.0, "speedup": 1.2}]
    _write(results, "precision.json", {"native_bf16": False, "rows": rows})
    m = {"images": 656, "accuracy": 0.89, "balanced_accuracy": 0.85}
    _write(results, "elpv_holdout.json", {"pipeline": "/x/p7", "models": {"teacher": m}})


def _rows(text: str) -> list[list[str]]:
    """The table's lines as cells (header and separator dropped)."""
    lines = [x for x in text.splitlines() if x.startswith("| ")][1:]
    return [[c.strip() for c in x.strip("|").split(" | ")] for x in lines]


def test_every_named_row_is_in_one_table_with_machine_and_date(tmp_path):
    _all_results(tmp_path)
    text = summary.render(tmp_path)
    assert text.count("| row | figure | measured | goal | met? | machine | date |") == 1
    rows = _rows(text)
    names = [r[0] for r in rows]
    for name in NAMED + ["quantize", "embedded preprocessing", "precision", "elpv held-out"]:
        assert name in names, name
    assert all(len(r) == 7 for r in rows)
    named = [r for r in rows if r[0] in NAMED]
    assert all(r[5] == "Test CPU, 2 cores, 24 GiB, no GPU" for r in named)
    assert all(r[6] == "2026-12-02 13:00 UTC" for r in named)
    assert {r[4] for r in rows} <= {"yes", "-"}  # every goal met, references have none
    elpv = next(r for r in rows if r[0] == "elpv held-out")
    assert "from the last pipeline run" in elpv[1]


def test_a_missed_goal_reads_not_met(tmp_path):
    _all_results(tmp_path)
    _new_style(tmp_path, "soak", passed=False)
    _write(tmp_path, "distill-20261202-130000.json", _distill(0.90))  # 0.909x < 0.97x
    rows = _rows(summary.render(tmp_path))
    soak = [r for r in rows if r[0] == "soak" and r[3] != "-"]
    assert [r[4] for r in soak] == ["**no**"]
    accuracy = next(r for r in rows if r[0] == "teacher vs student" and "accuracy" in r[1])
    assert accuracy[4] == "**no**" and accuracy[3] == ">= 0.97"


def test_a_missing_result_reads_not_run(tmp_path):
    _all_results(tmp_path)
    (tmp_path / "train_overhead.json").unlink()
    rows = _rows(summary.render(tmp_path))
    assert [r[2] for r in rows if r[0] == "Ray Train vs plain loop"] == ["not run"]
    assert [r[2] for r in _rows(summary.render(tmp_path / "empty"))][:5] == ["not run"] * 5


def test_a_failed_script_reads_failed_with_its_reason(tmp_path):
    _all_results(tmp_path)
    status = {
        "scripts": {
            "serve": {"ok": False, "reason": "exit 1: RuntimeError: server exited"},
            "elpv_holdout": {"ok": False, "reason": "exit 1: no elpv"},
        }
    }
    rows = _rows(summary.render(tmp_path, status))
    serving = [r for r in rows if r[0] == "serving"]
    assert [r[2] for r in serving] == ["failed: exit 1: RuntimeError: server exited"]
    assert serving[0][4] == "**no**"
    elpv = [r for r in rows if r[0] == "elpv held-out"]  # the last pipeline run still shows
    assert len(elpv) == 2 and elpv[1][2] == "failed: exit 1: no elpv"


def test_the_stable_file_wins_else_the_newest(tmp_path):
    for i, name in enumerate(["serve-20261201-000000.json", "serve-20261202-000000.json"]):
        (tmp_path / name).write_text("{}")
        os.utime(tmp_path / name, (1e9 + i, 1e9 + i))
    assert summary.find_result(tmp_path, "serve").name == "serve-20261202-000000.json"
    stamped = _common.write_json("serve", {"checks": {}}, tmp_path)
    assert summary.find_result(tmp_path, "serve").name == "serve.json"
    assert json.loads(stamped.read_text()) == json.loads((tmp_path / "serve.json").read_text())
    assert summary.find_result(tmp_path, "soak") is None


def test_main_writes_summary_md(tmp_path):
    _all_results(tmp_path)
    assert summary.main(["--results", str(tmp_path)]) == 0
    assert (tmp_path / "SUMMARY.md").read_text().startswith("# Benchmarks")


def test_a_partial_run_keeps_the_other_outcomes_and_the_last_full_runs_time(tmp_path):
    """``run_all.py --only serve`` after a full run: the summary still says how long the full
    run took (the figure ``make bench``'s 30-minute limit is about) and keeps the other scripts'
    outcomes; a second full run replaces both."""
    import run_all

    path = tmp_path / "run_all.json"
    ok = {"ok": True, "seconds": 1.0, "reason": None, "log": "x"}
    bad = {"ok": False, "seconds": 1.0, "reason": "exit 1: boom", "log": "x"}
    full = run_all.merged_status(path, {"serve": ok, "soak": bad}, 1662.0, full=True)
    path.write_text(json.dumps(full))
    part = run_all.merged_status(path, {"serve": ok}, 216.0, full=False)
    assert part["scripts"]["soak"] == bad and part["ran"] == ["serve"]
    assert part["last_full_run"]["total_s"] == 1662.0 and part["last_full_run"]["scripts"] == 2
    _all_results(tmp_path)
    intro = summary.render(tmp_path, part).splitlines()[2]
    assert "ran 1 script(s) in 3.6 min (0 failed)" in intro
    assert "(`make bench`, 2 scripts) took 27.7 min" in intro
    path.write_text(json.dumps(part))
    again = run_all.merged_status(path, {"serve": ok}, 900.0, full=True)
    assert again["scripts"] == {"serve": ok} and again["last_full_run"]["total_s"] == 900.0
