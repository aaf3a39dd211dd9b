"""A training worker killed mid-run (a real SIGKILL of its pid): Ray Train restarts the workers
from the last checkpoint (``max_failures``, default 1), the run finishes, and its test accuracy
matches the undisturbed run's (the session's ``trained_run``, the same config and seed). And a
damaged checkpoint file is refused, not loaded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import wait_until

from transferkit.training.state import CheckpointError, load_state, save_state


def _registered_checkpoints(run: Path) -> int:
    snapshot = run / "checkpoint_manager_snapshot.json"
    try:
        return len(json.loads(snapshot.read_text()).get("checkpoint_results", []))
    except (OSError, ValueError):
        return 0


def _train_workers() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(
        filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")], timeout=10
    )
    return [a.pid for a in actors if a.pid]


@pytest.mark.slow
def test_a_killed_worker_restarts_from_the_checkpoint_and_matches_an_undisturbed_run(
    ray_cluster, trained_run: Path, digits_80_20, tmp_path: Path
) -> None:
    run = tmp_path / "killed"
    cfg = {  # the session's trained_run config, another folder
        "data": {"dataset": str(digits_80_20[0]), "image_size": 32},  # conftest.SMALL
        "model": {"arch": "mobilenet_v2", "weights": "IMAGENET1K_V1", "freeze_depth": 2},
        "optim": {"epochs": 3},
        "scaling": {"num_workers": 2},
        "output": str(run),
        "seed": 0,
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    log = (tmp_path / "finetune.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "transferkit.cli", "finetune", "--config", tmp_path / "cfg.yaml"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # a checkpoint folder appears when its upload starts; it counts once Ray Train has
        # registered it in the run's checkpoint manager snapshot
        wait_until(
            lambda: _registered_checkpoints(run) >= 1,
            "the first epoch's checkpoint, registered",
            deadline_s=240,
            interval_s=0.2,
        )
        pids = wait_until(_train_workers, "two live Ray Train workers", deadline_s=30)
        victim = pids[-1]
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=300) == 0, (tmp_path / "finetune.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "finetune.log").read_text()
    assert "resumed from epoch" in text, text[-3000:]
    assert text.count('"epoch": 1,') == 1, "epoch 1 was trained again: the restart began afresh"
    epochs = [
        json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()
    ]
    assert epochs[-1] == 3 and sorted(set(epochs)) == [1, 2, 3]
    got = json.loads((run / "test_metrics.json").read_text())["test_acc"]
    want = json.loads((trained_run / "test_metrics.json").read_text())["test_acc"]
    assert abs(got - want) <= 0.01, (got, want)


def test_a_damaged_checkpoint_is_refused_not_loaded(tmp_path: Path) -> None:
    state = {"model": {"w": torch.arange(1000.0)}, "epoch": 2, "history": [{"epoch": 1}]}
    path = save_state(tmp_path / "ckpt", state)
    assert not (tmp_path / "ckpt" / "state.pt.partial").exists()  # written aside, then moved
    assert torch.equal(load_state(tmp_path / "ckpt")["model"]["w"], state["model"]["w"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a torn copy
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_state(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="no state.pt"):
        load_state(tmp_path / "empty")
