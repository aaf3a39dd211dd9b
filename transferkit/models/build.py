"""One build path for every architecture: construct, load pretrained weights, swap the head,
freeze the first k stages (weights *and* BatchNorm statistics), and split parameters into
backbone / head groups for the optimizer.

Transfer from weights follows timm's ``load_pretrained``: tensors whose shapes differ from the new
model (the 1000-class head) are dropped, missing and unexpected keys are logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from transferkit.config import ModelConfig, Preprocessing
from transferkit.errors import UsageError
from transferkit.models.registry import (
    ArchSpec,
    FreezeDepthError,
    Stage,
    check_freeze_depth,
    get_arch,
    model_stages,
)
from transferkit.models.weights import WeightsUnavailableError, load_state_dict_for

__all__ = [
    "BuiltModel",
    "build_model",
    "freeze_stages",
    "set_train_mode",
    "param_groups",
    "FreezeDepthError",
    "KeepStagesError",
    "head_module",
    "count_parameters",
    "stages_of",
]

log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    """A model ready for training plus what the rest of transferkit needs to know about it.

    Attributes:
        model: the ``nn.Module`` (input float32 ``[N, C, H, W]``, output logits ``[N, classes]``).
        spec: the registry entry.
        stages: named stages, in order.
        frozen: qualified names of frozen modules (kept in eval mode during training).
        preprocessing: what the weights expect (ImageNet statistics for torchvision enums).
        weights_source: where the weights came from (``None`` for random init).
    """

    model: nn.Module
    spec: ArchSpec
    stages: list[Stage]
    frozen: list[str] = field(default_factory=list)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    weights_source: str | None = None


def head_module(model: nn.Module, spec: ArchSpec) -> nn.Linear:
    """The final ``nn.Linear`` of the head (``fc`` or the last Linear in ``classifier``)."""
    head = model.get_submodule(spec.head)
    if isinstance(head, nn.Linear):
        return head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return linears[-1]


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (all, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


class KeepStagesError(FreezeDepthError):
    """``keep_stages`` outside ``1..number of stages`` or on an architecture that cannot be cut."""


def _cut(model: nn.Module, spec: ArchSpec, cfg: ModelConfig, num_classes: int) -> list[str]:
    """Keep the first ``cfg.keep_stages`` stages of ``model.features`` (in place), optionally add
    a 1x1 conv of ``cfg.head_hidden`` channels, and give it a pooling + dropout + linear head.

    Returns:
        Qualified-name prefixes of the new modules (trained from scratch).
    """
    from torchvision.ops.misc import Conv2dNormActivation

    if spec.family != "features" or spec.name.startswith("convnext"):
        raise KeepStagesError(
            f"model.keep_stages: {spec.name} cannot be cut into fewer stages "
            "(only mobilenet_v2, mobilenet_v3_*, efficientnet_*); leave it unset"
        )
    stages = model_stages(model, spec)
    k = cfg.keep_stages
    if not 1 <= k <= len(stages):
        raise KeepStagesError(
            f"model.keep_stages={k} is out of range for {spec.name}: allowed "
            f"1..{len(stages)} (stages: {', '.join(s.name for s in stages)})"
        )
    last = int(stages[k - 1].modules[-1].split(".")[1])
    feats = list(model.features.children())[: last + 1]
    channels = stages[k - 1].out_channels
    new = []
    if cfg.head_hidden is not None:
        feats.append(
            Conv2dNormActivation(
                channels, cfg.head_hidden, kernel_size=1, activation_layer=nn.ReLU6
            )
        )
        new.append(f"features.{len(feats) - 1}.")
        channels = cfg.head_hidden
    model.features = nn.Sequential(*feats)
    p = cfg.dropout if cfg.dropout is not None else 0.2
    setattr(model, spec.head, nn.Sequential(nn.Dropout(p), nn.Linear(channels, num_classes)))
    return new


def _construct(spec: ArchSpec, cfg: ModelConfig, num_classes: int) -> tuple[nn.Module, list[str]]:
    from torchvision.models import get_model

    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if cfg.width_mult != 1.0:
        if not spec.supports_width_mult:
            raise UsageError(
                f"model.width_mult={cfg.width_mult} is not supported by {spec.name} "
                "(only mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large); use 1.0"
            )
        kwargs["width_mult"] = cfg.width_mult
    model = get_model(spec.name, weights=None, **kwargs)
    new = _cut(model, spec, cfg, num_classes) if cfg.keep_stages is not None else []
    if cfg.dropout is not None:
        for m in model.get_submodule(spec.head).modules():
            if isinstance(m, nn.Dropout):
                m.p = cfg.dropout
    momentum = (
        cfg.bn_momentum if cfg.bn_momentum is not None else (0.1 if cfg.weights is None else None)
    )
    if momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = momentum
    return model, new


def _load_pretrained(
    model: nn.Module,
    spec: ArchSpec,
    sd: dict[str, torch.Tensor],
    new: tuple[str, ...] = (),
    cut: bool = False,
) -> None:
    """Load ``sd`` into ``model``: the head (and the ``new`` modules) may differ or be missing;
    a cut backbone (``cut``) ignores the weights of the stages it dropped."""
    own = model.state_dict()
    head_prefix = spec.head + "."
    fresh = (head_prefix, *new)
    if cut:
        cut_away = [k for k in sd if k not in own and not k.startswith(head_prefix)]
        sd = {k: v for k, v in sd.items() if k not in cut_away}
        if cut_away:
            log.info("cut backbone: %d tensors of the dropped stages not loaded", len(cut_away))
    dropped = [k for k, v in sd.items() if k in own and own[k].shape != v.shape]
    body_mismatch = [k for k in dropped if not k.startswith(fresh)]
    if body_mismatch:
        raise WeightsUnavailableError(
            f"pretrained weights do not fit {spec.name} (shape mismatch in {len(body_mismatch)} "
            f"backbone tensors, e.g. {body_mismatch[0]}); a width_mult other than 1.0 has no "
            "pretrained weights: use --weights none"
        )
    sd = {k: v for k, v in sd.items() if k not in dropped}
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(fresh)]
    if missing:
        raise WeightsUnavailableError(
            f"weights lack {len(missing)} backbone tensors of {spec.name} (e.g. {missing[0]}); "
            "are they for another architecture?"
        )
    if dropped:
        log.info("new head for %s: dropped %s", spec.name, ", ".join(dropped))
    if result.unexpected_keys:
        log.warning("ignored unexpected keys: %s", ", ".join(result.unexpected_keys))


def build_model(cfg: ModelConfig, num_classes: int, load_weights: bool = True) -> BuiltModel:
    """Build ``cfg.arch`` for ``num_classes`` classes, load weights, freeze stages.

    Args:
        cfg: architecture, weights, freeze depth, width multiplier.
        num_classes: size of the new head (>= 2).
        load_weights: ``False`` skips loading (e.g. when a checkpoint is loaded next) but still
            resolves the weights' preprocessing metadata where it needs no download.

    Returns:
        A :class:`BuiltModel`.

    Raises:
        UnknownArchError: ``cfg.arch`` is not registered.
        WeightsUnavailableError: weights cannot be downloaded/read, or do not fit.
        FreezeDepthError: ``cfg.freeze_depth`` is larger than the number of stages.
        KeepStagesError: ``cfg.keep_stages`` out of range or on an architecture that cannot be cut.
    """
    spec = get_arch(cfg.arch)
    model, new = _construct(spec, cfg, num_classes)
    prep = Preprocessing(input_size=spec.default_input_size)
    source = None
    if cfg.weights is not None and load_weights:
        sd, info = load_state_dict_for(spec.name, cfg.weights)
        _load_pretrained(model, spec, sd, tuple(new), cut=cfg.keep_stages is not None)
        if "preprocessing" in info and isinstance(info["preprocessing"], dict):
            prep = Preprocessing.model_validate(info["preprocessing"])
        source = info.get("source")
    stages = model_stages(model, spec)
    built = BuiltModel(model, spec, stages, preprocessing=prep, weights_source=source)
    freeze_stages(built, cfg.freeze_depth)
    return built


def stages_of(cfg: ModelConfig) -> list[Stage]:
    """The named stages of the model ``cfg`` describes (architecture, width, cut), from a build on
    the ``meta`` device: no weights read, no memory used, so a config check costs nothing.

    Raises:
        UnknownArchError, KeepStagesError, ValueError: as :func:`build_model` for ``cfg``.
    """
    spec = get_arch(cfg.arch)
    with torch.device("meta"):
        model, _ = _construct(spec, cfg, num_classes=2)
    return model_stages(model, spec)


def freeze_stages(built: BuiltModel, depth: int) -> None:
    """Freeze the first ``depth`` stages: ``requires_grad=False`` and BatchNorm kept in eval mode
    (see :func:`set_train_mode`), so neither weights nor running statistics move.

    Raises:
        FreezeDepthError: ``depth`` not in ``0..len(stages)``.
    """
    check_freeze_depth(depth, built.stages, built.spec.name)
    built.frozen = [m for s in built.stages[:depth] for m in s.modules]
    for name in built.frozen:
        for p in built.model.get_submodule(name).parameters():
            p.requires_grad_(False)


def set_train_mode(model: nn.Module, frozen: list[str]) -> None:
    """``model.train()`` but frozen modules stay in eval mode (their BatchNorm statistics fixed).

    ``model`` may be wrapped in DDP (``.module`` is used)."""
    inner = getattr(model, "module", model)
    inner.train()
    for name in frozen:
        inner.get_submodule(name).eval()


def _named_trainable(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    for n, p in model.named_parameters():
        if p.requires_grad:
            yield n, p


def param_groups(
    model: nn.Module, spec: ArchSpec, backbone_lr: float, head_lr: float, weight_decay: float
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: backbone/head x decay/no-decay.

    Frozen parameters are left out (no update, no weight decay); biases and normalisation
    parameters (1-D tensors) get no weight decay.
    """
    inner = getattr(model, "module", model)
    head_prefix = spec.head + "."
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for n, p in _named_trainable(inner):
        part = "head" if n.startswith(head_prefix) else "backbone"
        groups.setdefault((part, p.ndim > 1), []).append(p)
    out = []
    for (part, decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": head_lr if part == "head" else backbone_lr,
                "weight_decay": weight_decay if decay else 0.0,
                "name": f"{part}{'' if decay else '_no_decay'}",
            }
        )
    return out
