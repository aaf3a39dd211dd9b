"""Fine-tuning on real Ray Train (2 DDP workers) with real digits and real ImageNet weights."""

import json
import shutil

import pytest
import torch
from pydantic import ValidationError

from transferkit.config import ConfigError, FinetuneConfig, ModelConfig, load_config
from transferkit.models import FreezeDepthError, build_model
from transferkit.models.portable import load_portable
from transferkit.training.trainer import RunExistsError, finetune, prepare_run

pytestmark = pytest.mark.slow


def _cfg(dataset, output, **over):
    d = {
        "data": {"dataset": str(dataset), "image_size": 32},
        "model": {"arch": "mobilenet_v2", "weights": "IMAGENET1K_V1", "freeze_depth": 2},
        "optim": {"epochs": 3},
        "scaling": {"num_workers": 2},
        "output": str(output),
    }
    for k, v in over.items():
        d.setdefault(k, {}).update(v) if isinstance(v, dict) else d.__setitem__(k, v)
    return FinetuneConfig.model_validate(d)


def test_run_folder_holds_config_metrics_model_and_test_evaluation(trained_run):
    for name in (
        "config.yaml",
        "versions.json",
        "splits.json",
        "metrics.jsonl",
        "model.pt",
        "test_metrics.json",
    ):
        assert (trained_run / name).is_file(), name
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    for key in ("train_loss", "val_loss", "val_acc", "val_top5", "images_per_s"):
        assert all(key in r for r in rows)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]  # it learns
    test = json.loads((trained_run / "test_metrics.json").read_text())
    assert test["test_acc"] > 0.85  # 3 epochs at 32 px on real digits
    versions = json.loads((trained_run / "versions.json").read_text())
    assert versions["torch"] == "2.14.1" and versions["ray"] == "2.60.0"


def test_model_pt_is_portable_and_loads_weights_only(trained_run):
    obj = torch.load(trained_run / "model.pt", weights_only=True)
    assert obj["arch"] == "mobilenet_v2" and obj["class_names"] == [str(i) for i in range(10)]
    assert obj["preprocessing"]["input_size"] == 32
    assert not any(k.startswith("module.") for k in obj["state_dict"])  # DDP prefix stripped
    built, info = load_portable(trained_run)
    fresh = build_model(ModelConfig(arch="mobilenet_v2", weights=None), 10).model
    fresh.load_state_dict(obj["state_dict"])
    fresh.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), built.model(x))


def test_validation_metrics_are_reduced_over_all_workers(trained_run):
    """val_acc must be a fraction of the *whole* val split, not of one worker's half."""
    splits = json.loads((trained_run / "splits.json").read_text())
    n_val = len(splits["val"])
    rows = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        correct = r["val_acc"] * n_val
        assert abs(correct - round(correct)) < 1e-6


def test_existing_run_folder_is_refused_without_resume(trained_run):
    with pytest.raises(RunExistsError, match="--resume"):
        prepare_run(_cfg("digits", trained_run))


def test_resume_continues_from_the_last_checkpoint(trained_run, tmp_path):
    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    before = (run / "metrics.jsonl").read_text().splitlines()
    saved = load_config(FinetuneConfig, trained_run / "config.yaml")  # what the run recorded
    cfg = saved.model_copy(
        update={"output": str(run), "optim": saved.optim.model_copy(update={"epochs": 4})}
    )
    finetune(cfg, resume=True)
    after = (run / "metrics.jsonl").read_text().splitlines()
    assert len(after) == 4
    assert after[:3] == before  # epochs 1-3 were not trained again
    assert json.loads(after[3])["epoch"] == 4


def test_mistakes_fail_before_any_worker_starts(tmp_path, digits_dir):
    with pytest.raises(FreezeDepthError, match="allowed 0..9"):
        prepare_run(_cfg(digits_dir, tmp_path / "r1", model={"freeze_depth": 12}))
    with pytest.raises(ConfigError, match=r"optim.class_weight: 3 weights for 10 classes"):
        prepare_run(_cfg(digits_dir, tmp_path / "r3", optim={"class_weight": [1.0, 2.0, 3.0]}))


def test_workers_that_do_not_fit_the_cluster_are_refused(ray_cluster, digits_dir, tmp_path):
    with pytest.raises(ConfigError, match="num_workers"):
        finetune(_cfg(digits_dir, tmp_path / "r2", scaling={"num_workers": 3}))
    assert not (tmp_path / "r2").exists()  # no half-made run folder left behind


def test_corrupt_images_in_the_training_folder_are_skipped(digits_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(digits_dir, data)
    (data / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (data / "5" / "empty.png").write_bytes(b"")
    plan = prepare_run(_cfg(data, tmp_path / "r3"))
    assert len(plan.splits.skipped) == 2
    assert any("broken.png" in s for s in plan.splits.skipped)
    all_paths = [p for p, _ in plan.splits.train + plan.splits.val + plan.splits.test]
    assert len(all_paths) == 1797 and not any("broken" in p or "empty" in p for p in all_paths)


def test_the_run_config_records_absolute_paths(tmp_path, digits_dir, monkeypatch):
    """A run given relative paths records them resolved, so ``--config RUN/config.yaml
    --resume`` finds the same data and run folder from any directory; a bundled name stays one."""
    (tmp_path / "work").mkdir()
    shutil.copytree(digits_dir, tmp_path / "work" / "imgs")
    monkeypatch.chdir(tmp_path / "work")
    prepare_run(_cfg("imgs", "runs/a"))
    prepare_run(_cfg("digits", "runs/b"))
    monkeypatch.chdir(tmp_path)  # elsewhere: the saved configs still name the same places
    a = load_config(FinetuneConfig, tmp_path / "work" / "runs" / "a" / "config.yaml")
    assert a.data.dataset == str(tmp_path / "work" / "imgs")
    assert a.output == str(tmp_path / "work" / "runs" / "a")
    assert a.model.weights == "IMAGENET1K_V1"
    b = load_config(FinetuneConfig, tmp_path / "work" / "runs" / "b" / "config.yaml")
    assert b.data.dataset == "digits"
    plan = prepare_run(a, resume=True)  # continues the recorded folder
    assert plan.run_dir == tmp_path / "work" / "runs" / "a"


def test_unreadable_images_are_counted_over_the_whole_dataset(tmp_path, digits_dir, caplog):
    """Two corrupt files among a folder's images: one warning names each, and the summary counts
    them against every image of the dataset, not one split's."""
    from transferkit.training.trainer import load_splits

    root = tmp_path / "d"
    for c in ("0", "1"):
        (root / c).mkdir(parents=True)
        for f in sorted((digits_dir / c).glob("*.png"))[:20]:
            shutil.copy(f, root / c / f.name)
    (root / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    (root / "1" / "empty.png").write_bytes(b"")
    with caplog.at_level("WARNING", logger="transferkit"):
        splits = load_splits(_cfg(root, tmp_path / "run"))
    assert sorted(s.split(":")[0] for s in splits.skipped) == sorted(
        [str(root / "0" / "broken.png"), str(root / "1" / "empty.png")]
    )
    assert "skipped 2 unreadable image(s) of 42" in caplog.text
    assert len(splits.train) + len(splits.val) + len(splits.test) == 40


def test_bf16_precision_on_the_cpu_still_learns(ray_cluster, digits_80_20, tmp_path):
    """``scaling.precision: bf16`` autocasts the workers' passes on the CPU; the weights stay
    float32 and the run learns digits as a float32 run does."""
    cfg = _cfg(digits_80_20[0], tmp_path / "bf16", scaling={"num_workers": 2, "precision": "bf16"})
    finetune(cfg)
    rows = [json.loads(x) for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    test = json.loads((tmp_path / "bf16" / "test_metrics.json").read_text())
    assert test["test_acc"] > 0.85  # the float32 run's bar: 3 epochs at 32 px on real digits
    state = torch.load(tmp_path / "bf16" / "model.pt", weights_only=True)
    weights = state["state_dict"] if "state_dict" in state else state
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}


def test_data_background_becomes_the_models_preprocessing(digits_dir, tmp_path):
    """``data.background`` is the colour under transparent pixels in training and, through the
    run's preprocessing (saved in model.pt and the ONNX metadata), in serving."""
    plan = prepare_run(_cfg(digits_dir, tmp_path / "bg", data={"background": [255, 255, 255]}))
    assert plan.preprocessing.background == (255, 255, 255)
    assert prepare_run(_cfg(digits_dir, tmp_path / "b0")).preprocessing.background == (0, 0, 0)
    with pytest.raises(ValidationError, match="background"):
        _cfg(digits_dir, tmp_path / "b1", data={"background": [0, 0, 256]})
