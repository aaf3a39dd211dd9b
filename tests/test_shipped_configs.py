"""The configs we ship validate as they are, and `configs/elpv.yaml` also validates the way it is
checked from outside: `data.dataset` replaced by a folder `functional|defective/<type>_cellNNNN.png`
(no Ray: these are the checks `validate_pipeline` runs before it starts a cluster)."""

import shutil
from pathlib import Path

import pytest

from transferkit.config import PipelineConfig, load_config
from transferkit.data.bundled import elpv_cells, elpv_label
from transferkit.pipeline_plan import (
    _check_class_options,
    _check_models,
    _dataset_classes,
    stage_configs,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_validates(name):
    cfg = load_config(PipelineConfig, ROOT / "configs" / name)
    assert stage_configs(cfg)["teacher"] is not None


@pytest.fixture(scope="module")
def elpv_folder(tmp_path_factory) -> Path:
    """20 real cells of each class, copied as the outside check lays them out."""
    root = tmp_path_factory.mktemp("elpv75")
    taken = {"functional": 0, "defective": 0}
    for cell in elpv_cells():
        label = elpv_label(cell, "defect")
        if taken[label] < 20:
            (root / label).mkdir(exist_ok=True)
            shutil.copyfile(cell.path, root / label / cell.file_name)
            taken[label] += 1
    return root


def test_elpv_config_runs_on_a_folder_and_its_class_weights_favour_defects(elpv_folder):
    cfg = load_config(
        PipelineConfig,
        ROOT / "configs" / "elpv.yaml",
        {"data": {"dataset": str(elpv_folder)}, "output": "/tmp/unused"},
    )
    classes, n_test = _dataset_classes(cfg)
    assert classes == ["defective", "functional"] and n_test > 0
    stages = stage_configs(cfg)
    _check_class_options(cfg, stages, classes)
    _check_models(cfg, stages, len(classes))
    # an explicit list is in class order: the rarer, costlier class must get the larger weight
    weights = dict(zip(classes, stages["teacher"].optim.class_weight))
    assert weights["defective"] > weights["functional"]
    assert cfg.report.positive_class in classes


def test_a_student_input_size_reaches_the_student_alone():
    """``student.image_size`` sets the student's input; the teacher (and its search) keep
    ``data.image_size``."""
    cfg = PipelineConfig.model_validate(
        {
            "data": {"dataset": "digits", "image_size": 32},
            "teacher": {"tune": {"num_samples": 2}},
            "student": {"image_size": 48},
            "output": "/tmp/unused",
        }
    )
    stages = stage_configs(cfg)
    assert stages["student"].data.image_size == 48
    assert stages["teacher"].data.image_size == 32
    assert stages["tune-teacher"].data.image_size == 32
    default = stage_configs(
        cfg.model_copy(update={"student": cfg.student.model_copy(update={"image_size": None})})
    )
    assert default["student"].data.image_size == 32


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_search_fits_this_2_cpu_machine(name):
    """The pre-flight check a pipeline runs against ``ray.cluster_resources()``, here against
    this machine's 2 CPUs: a partial ``tune.scaling`` that fills in 1 CPU per worker fails it."""
    from transferkit.tuning.resources import plan_concurrency

    cfg = load_config(PipelineConfig, ROOT / "configs" / name)
    for who in ("teacher", "student"):
        search = stage_configs(cfg)[f"tune-{who}"]
        if search is not None:
            assert plan_concurrency(search, {"CPU": 2.0}, f"{who}.tune") >= 1
