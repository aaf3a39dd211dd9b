"""``cluster.yaml`` against Ray's own cluster-launcher schema and validator, offline."""

import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cluster_config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_passes_rays_validator(cluster_config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster_config))
    validate_config(prepared)
    gpu = prepared["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["node_config"]["InstanceType"].startswith("g")
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1
    assert (
        prepared["available_node_types"][prepared["head_node_type"]]["resources"].get("GPU", 0) == 0
    )
    setup = "\n".join(prepared["setup_commands"])
    assert "torch==2.14.1" in setup and "torchvision==0.29.1" in setup and "transferkit" in setup


def test_a_head_node_type_that_does_not_exist_fails(cluster_config):
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(cluster_config)
    broken["head_node_type"] = "no_such_node_type"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))


def test_the_gpu_config_is_a_valid_pipeline_for_the_cluster():
    from transferkit.config import PipelineConfig, load_config
    from transferkit.pipeline import stage_configs

    cfg = load_config(PipelineConfig, ROOT / "configs" / "imagenet-style-gpu.yaml")
    stages = stage_configs(cfg)
    assert stages["teacher"].model.arch == "resnet50" and stages["teacher"].scaling.use_gpu
    assert stages["student"].model.arch.startswith("mobilenet_v3")
    assert stages["tune-teacher"].output.startswith("s3://")
