"""Compact students cut from a backbone (``model.keep_stages`` / ``head_hidden``): sizes, shapes,
weight transfer from a full model, portable round trip, and the errors."""

import pytest
import torch

from transferkit.config import ConfigError, ModelConfig, validate
from transferkit.models import FreezeDepthError, build_model, count_parameters
from transferkit.models.portable import load_portable, save_portable
from transferkit.models.weights import WeightsUnavailableError


def _full_teacher_file(tmp_path):
    torch.manual_seed(0)
    full = build_model(ModelConfig(weights=None), 2)
    path = save_portable(
        tmp_path / "teacher.pt", full.model, "mobilenet_v2", ["a", "b"], full.preprocessing
    )
    return full, path


def test_cut_keeps_the_first_stages_and_a_new_head():
    full = build_model(ModelConfig(weights=None), 2)
    cut = build_model(ModelConfig(weights=None, keep_stages=5), 2)
    assert [s.name for s in cut.stages] == [s.name for s in full.stages[:5]]
    assert cut.stages[-1].out_channels == 64
    x = torch.randn(2, 3, 64, 64)
    assert cut.model.eval()(x).shape == (2, 2)
    # the kept stages' parameters plus Linear(64 -> 2): counted independently from the full model
    kept = sum(
        p.numel()
        for s in full.stages[:5]
        for m in s.modules
        for p in full.model.get_submodule(m).parameters()
    )
    assert count_parameters(cut.model) == kept + 64 * 2 + 2


def test_head_hidden_adds_a_1x1_conv_stage():
    cut = build_model(ModelConfig(weights=None, keep_stages=5, head_hidden=512), 2)
    assert cut.stages[-1].out_channels == 512 and len(cut.stages) == 6
    base = build_model(ModelConfig(weights=None, keep_stages=5), 2)
    # conv 64x512 (no bias) + BN(512) scale/shift, and a head 512 -> 2 instead of 64 -> 2
    assert (
        count_parameters(cut.model) - count_parameters(base.model)
        == 64 * 512 + 2 * 512 + (512 - 64) * 2
    )


def test_cut_student_starts_from_the_teachers_own_weights(tmp_path):
    full, path = _full_teacher_file(tmp_path)
    cut = build_model(ModelConfig(weights=str(path), keep_stages=5, head_hidden=128), 2)
    own = cut.model.state_dict()
    teacher = full.model.state_dict()
    kept = [k for k in own if k.startswith("features.") and int(k.split(".")[1]) <= 10]
    assert kept and all(torch.equal(own[k], teacher[k]) for k in kept)
    assert cut.preprocessing == full.preprocessing  # from the model.pt's metadata


def test_cut_model_round_trips_through_model_pt(tmp_path):
    cut = build_model(ModelConfig(weights=None, keep_stages=4, head_hidden=32), 3)
    path = save_portable(
        tmp_path / "m.pt",
        cut.model,
        "mobilenet_v2",
        ["a", "b", "c"],
        cut.preprocessing,
        keep_stages=4,
        head_hidden=32,
    )
    built, info = load_portable(path)
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(built.model(x), cut.model.eval()(x))
    assert info["keep_stages"] == 4 and info["head_hidden"] == 32


def test_cut_errors_name_the_field_and_the_range():
    with pytest.raises(FreezeDepthError, match=r"keep_stages=12 .*allowed 1\.\.9"):
        build_model(ModelConfig(weights=None, keep_stages=12), 2)
    with pytest.raises(ValueError, match="resnet18 cannot be cut"):
        build_model(ModelConfig(arch="resnet18", weights=None, keep_stages=2), 2)
    with pytest.raises(ConfigError, match="head_hidden"):
        validate(ModelConfig, {"head_hidden": 64})
    with pytest.raises(WeightsUnavailableError, match="only for the student of a distillation"):
        build_model(ModelConfig(weights="teacher"), 2)
