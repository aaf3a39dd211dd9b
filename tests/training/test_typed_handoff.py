"""Configs cross Ray as the typed objects they are: they survive Ray's pickling with their type,
and the worker picks its objective from that type (no Ray cluster needed)."""

import pytest
import ray.cloudpickle as cloudpickle

from transferkit.config import (
    DistillConfig,
    FinetuneConfig,
    PipelineConfig,
    Preprocessing,
    validate,
)
from transferkit.data.folder import Splits
from transferkit.pipeline import stage_configs
from transferkit.training.kd import KDObjective
from transferkit.training.objectives import CrossEntropyObjective, make_objective


@pytest.mark.parametrize(
    "cfg",
    [
        FinetuneConfig.model_validate({"optim": {"epochs": 3}, "model": {"freeze_depth": 2}}),
        DistillConfig.model_validate({"teacher": "t", "model": {"arch": "resnet18"}}),
    ],
)
def test_a_loop_config_survives_rays_pickling_with_its_types(cfg):
    loop_config = {
        "cfg": cfg,
        "splits": Splits(["a", "b"], [("x.png", 0)], [("y.png", 1)], []),
        "preprocessing": Preprocessing(input_size=32),
    }
    back = cloudpickle.loads(cloudpickle.dumps(loop_config))
    assert type(back["cfg"]) is type(cfg) and back["cfg"] == cfg
    assert type(back["cfg"].model) is type(cfg.model)  # StudentModel stays StudentModel
    assert back["splits"] == loop_config["splits"]
    assert back["preprocessing"] == loop_config["preprocessing"]


def test_the_worker_objective_follows_the_config_type():
    ce = make_objective(FinetuneConfig.model_validate({"optim": {"label_smoothing": 0.2}}), None)
    assert isinstance(ce, CrossEntropyObjective)
    kd = make_objective(
        DistillConfig.model_validate({"teacher": "t", "kd": {"temperature": 2}}), None
    )
    assert isinstance(kd, KDObjective)


def test_pipeline_stages_are_typed_configs_sharing_the_pipelines_sections():
    cfg = validate(
        PipelineConfig,
        {
            "teacher": {"tune": {"epochs": 2}},
            "student": {"tune": {}, "model": {"arch": "resnet18"}},
        },
    )
    stages = stage_configs(cfg)
    assert stages["teacher"].data is cfg.data and stages["teacher"].model is cfg.teacher.model
    assert stages["tune-teacher"].optim.epochs == 2 and cfg.teacher.optim.epochs == 10
    assert stages["tune-teacher"].scaling.cpus_per_worker == 0.99
    student = stages["student"]
    assert isinstance(student, DistillConfig) and student.model is cfg.student.model
    assert student.model.weights is None and student.optim.epochs == 30  # student defaults
    assert student.model.width_mult == 1.0  # resnet18: the 0.5 width is the default student's
    assert stages["tune-student"].baseline is False


def test_the_trainer_hands_its_workers_typed_objects(tmp_path):
    """What ``make_trainer`` gives Ray Train as ``train_loop_config`` is the config object itself,
    not a dict made from it (building a TorchTrainer needs no cluster)."""
    from transferkit.training.trainer import make_trainer

    cfg = FinetuneConfig.model_validate({"output": str(tmp_path / "run")})
    splits = Splits(["a", "b"], [("x.png", 0)], [("y.png", 1)], [])
    trainer = make_trainer(cfg, splits, Preprocessing(input_size=32), "run", str(tmp_path))
    handed = trainer.train_loop_config  # what Ray Train sends every worker
    assert handed["cfg"] is cfg and handed["splits"] is splits
    assert isinstance(handed["preprocessing"], Preprocessing)
    assert not [k for k, v in handed.items() if isinstance(v, dict)]


def test_serve_replicas_get_the_typed_serve_config(serving_onnx):
    """``serve --ray``: each replica is built from a typed spec (the ServeConfig itself)."""
    pytest.importorskip("ray.serve")
    from transferkit.config import ServeConfig
    from transferkit.serving.ray_serve import ReplicaSpec, build_deployment

    cfg = ServeConfig(models=[str(serving_onnx)], max_batch_size=4)
    app = build_deployment(cfg)
    (spec,) = app._bound_deployment.init_args
    assert isinstance(spec, ReplicaSpec) and spec.cfg is cfg
    assert [s.path for s in spec.sources] == [serving_onnx.resolve()]
