"""The optimizer a worker builds from ``optim:`` (no Ray: the loop's own builder, one step)."""

import pytest
import torch

from transferkit.config import FinetuneConfig, ModelConfig
from transferkit.models import build_model
from transferkit.training.loop import make_optimizer


def _step(optim: dict) -> torch.optim.Optimizer:
    cfg = FinetuneConfig.model_validate({"optim": optim})
    built = build_model(ModelConfig(arch="mobilenet_v3_small", weights=None, width_mult=0.5), 3)
    opt = make_optimizer(cfg, built, built.model)
    built.model.train()
    built.model(torch.randn(2, 3, 32, 32)).sum().backward()
    opt.step()
    return opt


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, True)])
def test_sgd_is_nesterov_with_momentum_and_plain_sgd_without(momentum, nesterov):
    """``optim.momentum: 0`` is plain SGD; it used to reach torch as Nesterov with no momentum,
    which torch refuses ("Nesterov momentum requires a momentum") inside every worker."""
    opt = _step({"optimizer": "sgd", "momentum": momentum})
    assert isinstance(opt, torch.optim.SGD)
    assert {(g["momentum"], g["nesterov"]) for g in opt.param_groups} == {(momentum, nesterov)}
