"""``transferkit pipeline``: config mistakes fail fast naming the field; a pipeline killed during
distillation resumes there without re-tuning or re-training the teacher; the demo serves the
result. Real Ray, real digits, real ONNX Runtime and HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import run_cli


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _tk(*args, timeout=120, env=None):
    return run_cli(*args, timeout=timeout, env=env)


# An address where no Ray cluster listens: a command that reached Ray fails there instead of
# naming the field, so these tests prove the check ran before Ray started.
NO_RAY = {"RAY_ADDRESS": "127.0.0.1:1"}


def _tiny(digits_dir: Path, out: Path, **over) -> dict:
    cfg = {
        "output": str(out),
        "seed": 0,
        "data": {"dataset": str(digits_dir), "image_size": 16, "test_fraction": 0.2},
        "teacher": {
            "model": {"arch": "mobilenet_v2", "weights": "IMAGENET1K_V1", "freeze_depth": 2},
            "optim": {"epochs": 1},
            "scaling": {"num_workers": 2},
            "tune": {
                "num_samples": 2,
                "scheduler": "fifo",
                "epochs": 1,
                "search": {"freeze_depth": [2, 4], "backbone_lr": [2e-3]},
            },
        },
        "student": {
            "model": {"arch": "mobilenet_v3_small", "width_mult": 0.5},
            "optim": {"epochs": 4},
            "scaling": {"num_workers": 2},
        },
        "export": {"atol": 1e-3},  # 1-epoch, 16 px models: see tests/test_cli.py
        "evaluate": {"latency_runs": 5, "latency_batches": [1, 4]},
    }
    for dotted, value in over.items():
        node = cfg
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return cfg


@pytest.mark.parametrize(
    "override, field",
    [
        ({"student.model.arch": "mobilenet_v9"}, "student.model.arch"),
        ({"teacher.model.freeze_depth": 12}, "teacher.model.freeze_depth"),
        ({"teacher.tune.search": {"freeze_depth": [0, 30]}}, "teacher.tune.search.freeze_depth"),
        (
            {"teacher.tune.scheduler": "asha", "teacher.tune.grace_period": 1},
            "teacher.tune.grace_period",
        ),
        ({"data.test_fraction": 0.0}, "data.test_fraction"),
        ({"student.kd.temprature": 3}, "student.kd.temprature"),
    ],
)
def test_config_mistakes_fail_fast_naming_the_field(digits_dir, tmp_path, override, field):
    conf = _write(tmp_path / "p.yaml", _tiny(digits_dir, tmp_path / "out", **override))
    r = _tk("pipeline", conf, env=NO_RAY)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert field in r.stderr
    assert not (tmp_path / "out" / "stages").exists()  # nothing ran


def test_a_teacher_with_other_classes_is_refused(digits_dir, tmp_path):
    other = tmp_path / "other_teacher"
    other.mkdir()
    (other / "model.pt").write_bytes(b"not used: the classes are read from splits.json")
    (other / "splits.json").write_text(
        json.dumps({"class_names": ["cat", "dog"], "train": [], "val": [], "test": []})
    )
    conf = _write(
        tmp_path / "p.yaml", _tiny(digits_dir, tmp_path / "out", **{"teacher.run": str(other)})
    )
    r = _tk("pipeline", conf, env=NO_RAY)
    assert r.returncode == 2 and "teacher.run" in r.stderr and "'cat', 'dog'" in r.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, field",
    [
        ({"teacher.scaling.num_workers": 3}, "teacher.scaling"),
        (
            {"teacher.tune.scaling": {"num_workers": 2, "cpus_per_worker": 1.0}},
            "teacher.tune.scaling",
        ),
        ({"student.scaling.use_gpu": True}, "student.scaling.use_gpu"),
    ],
)
def test_budgets_that_cannot_fit_the_cluster_fail_before_any_worker(
    ray_cluster, digits_dir, tmp_path, override, field
):
    conf = _write(tmp_path / "p.yaml", _tiny(digits_dir, tmp_path / "out", **override))
    r = _tk("pipeline", conf)
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert field in r.stderr
    assert not (tmp_path / "out" / "stages").exists()  # no stage, so no worker, started


def _mtimes(paths):
    return {str(p): p.stat().st_mtime_ns for p in paths}


@pytest.mark.slow
def test_killed_during_distillation_resumes_there_and_the_demo_serves_the_student(
    ray_cluster, digits_dir, tmp_path
):
    out = tmp_path / "pipe"
    conf = _write(tmp_path / "p.yaml", _tiny(digits_dir, out))
    demo = [sys.executable, "-m", "transferkit.demo", "--config", str(conf)]
    proc = subprocess.Popen(demo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    # Kill once Ray Train has registered a checkpoint of the student (its snapshot file lists it).
    while (
        not (out / "student" / "checkpoint_manager_snapshot.json").is_file()
        and proc.poll() is None
        and time.monotonic() < deadline
    ):
        time.sleep(0.5)
    proc.kill()  # SIGKILL mid-distillation: no chance to clean up
    first, _ = proc.communicate(timeout=60)
    assert list((out / "student").glob("checkpoint_*")), first[-4000:]
    assert json.loads((out / "stages" / "student.json").read_text())["status"] == "running"
    upstream = _mtimes(
        [
            out / "teacher" / "model.pt",
            out / "tune-teacher" / "trials.csv",
            out / "stages" / "teacher.json",
            out / "stages" / "tune-teacher.json",
        ]
    )

    r = subprocess.run(demo, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-3000:]
    said = r.stdout + r.stderr  # log lines go to stderr (transferkit.logs), data to stdout
    assert "stage tune-teacher: up to date" in said and "stage teacher: up to date" in said
    assert "stage student: running (resuming an interrupted run)" in said
    assert "resumed from epoch" in r.stdout + r.stderr  # a worker's line (Ray forwards it)
    assert _mtimes([Path(p) for p in upstream]) == upstream  # not re-tuned, not re-trained
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"teacher", "student"}
    n_test = len(json.loads((out / "teacher" / "splits.json").read_text())["test"])
    for m in report["models"].values():  # scored on the teacher's test split, with ORT
        assert 0 < m["test_acc"] <= 1 and m["test_images"] == n_test > 300
        assert m["latency_ms"]["1"]["p50"] > 0
    md = (out / "report.md").read_text()
    assert "| teacher |" in md and "| student |" in md and (out / "training_curves.png").is_file()
    assert "served over HTTP" in r.stdout + r.stderr and "report:" in r.stdout + r.stderr
    # A third run has nothing to do.
    r3 = _tk("pipeline", conf, timeout=300)
    assert r3.returncode == 0 and (r3.stdout + r3.stderr).count("up to date") == 5, r3.stderr[
        -3000:
    ]
