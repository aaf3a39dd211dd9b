"""Registry of torchvision classifiers with named stages and a known head.

Every architecture exposes the same three things so the rest of transferkit treats them alike:
``stages`` (ordered, named groups of backbone modules; ``freeze_depth=k`` freezes the first k),
``head`` (the classifier module replaced for the dataset's classes) and a torchvision builder.
Stage grouping follows the papers: ResNet's ``stem`` + ``layer1..4`` (He et al. 2016); for
MobileNetV2/V3, EfficientNet and ConvNeXt, ``features[0]`` is the ``stem`` and the following blocks
are grouped into stages by their output width (the "stages" of Sandler et al. 2018, Howard et al.
2019, Tan & Le 2019, Liu et al. 2022).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from transferkit.config import ConfigError
from transferkit.errors import TransferkitError

if TYPE_CHECKING:  # torch stays out of name lookups (the CLI checks names before importing it)
    from torch import nn

__all__ = [
    "ArchSpec",
    "Stage",
    "register",
    "get_arch",
    "list_archs",
    "model_stages",
    "UnknownArchError",
    "FreezeDepthError",
    "check_freeze_depth",
]


class UnknownArchError(TransferkitError, ValueError):
    """An architecture name that is not registered; the message lists the known names."""


@dataclass(frozen=True)
class Stage:
    """A named group of backbone modules (qualified names inside the model)."""

    name: str
    modules: tuple[str, ...]
    out_channels: int | None = None


@dataclass(frozen=True)
class ArchSpec:
    """How to build and dissect one architecture.

    Attributes:
        name: registry name (= torchvision builder name).
        family: ``resnet`` | ``features`` (models with a ``features`` Sequential).
        head: qualified name of the classifier module (``fc`` or ``classifier``).
        supports_width_mult: the builder accepts ``width_mult``.
        default_input_size: the weights' training resolution, pixels.
    """

    name: str
    family: str
    head: str
    supports_width_mult: bool = False
    default_input_size: int = 224


_REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    """Add ``spec``; a duplicate name raises ``ValueError``."""
    if spec.name in _REGISTRY:
        raise ValueError(f"architecture {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


for _n in ("resnet18", "resnet34", "resnet50", "resnet101", "wide_resnet50_2", "resnext50_32x4d"):
    register(ArchSpec(_n, "resnet", "fc"))
for _n in ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"):
    register(ArchSpec(_n, "features", "classifier", supports_width_mult=True))
for _n, _s in (("efficientnet_b0", 224), ("efficientnet_b1", 240), ("efficientnet_b2", 288)):
    register(ArchSpec(_n, "features", "classifier", default_input_size=_s))
for _n in ("convnext_tiny", "convnext_small"):
    register(ArchSpec(_n, "features", "classifier"))


def list_archs() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def get_arch(name: str) -> ArchSpec:
    """Look up an architecture.

    Raises:
        UnknownArchError: unknown name; lists close matches and all known names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownArchError(
            f"unknown architecture {name!r}.{hint} Known: {', '.join(list_archs())}"
        ) from None


def _out_channels(module: nn.Module) -> int | None:
    from torch import nn

    out = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out = m.out_channels
        elif isinstance(m, nn.Linear):
            out = m.out_features
    return out


def model_stages(model: nn.Module, spec: ArchSpec) -> list[Stage]:
    """The ordered named stages of ``model`` (a model built for ``spec``).

    Returns:
        ``[Stage(...), ...]``; ``freeze_depth`` ranges over ``0..len(stages)``.
    """
    if spec.family == "resnet":
        stem = Stage("stem", ("conv1", "bn1"), model.conv1.out_channels)
        return [stem] + [
            Stage(f"layer{i}", (f"layer{i}",), _out_channels(getattr(model, f"layer{i}")))
            for i in range(1, 5)
        ]
    feats = model.features
    stages = [Stage("stem", ("features.0",), _out_channels(feats[0]))]
    groups: list[tuple[int, list[int]]] = []
    for i in range(1, len(feats)):
        ch = _out_channels(feats[i])
        if groups and groups[-1][0] == ch:
            groups[-1][1].append(i)
        else:
            groups.append((ch, [i]))
    for k, (ch, idxs) in enumerate(groups, start=1):
        stages.append(Stage(f"stage{k}", tuple(f"features.{i}" for i in idxs), ch))
    return stages


class FreezeDepthError(ConfigError):
    """``freeze_depth`` outside ``0..number of stages`` (the message gives the range)."""


def check_freeze_depth(
    depth: int | Sequence[int],
    stages: int | Sequence[Stage],
    arch: str,
    field: str = "model.freeze_depth",
) -> None:
    """The one range check of freeze depths: each must lie in ``0..number of stages``.

    Args:
        depth: a freeze depth, or the candidate depths of a search.
        stages: the model's named stages (their names go into the message), or their number.
        arch: the architecture, for the message.
        field: the config field the depth came from (``teacher.model.freeze_depth``,
            ``tune.search.freeze_depth``), named first in the message.

    Raises:
        FreezeDepthError: naming ``field``, the bad depth(s) and the allowed range.
    """
    n = stages if isinstance(stages, int) else len(stages)
    bad = [d for d in ([depth] if isinstance(depth, int) else depth) if not 0 <= d <= n]
    if not bad:
        return
    shown = bad[0] if isinstance(depth, int) else bad
    names = "" if isinstance(stages, int) else f"; stages: {', '.join(s.name for s in stages)}"
    raise FreezeDepthError(
        f"{field}: {shown} is out of range for {arch}: allowed 0..{n} "
        f"(0 trains everything, {n} is a linear probe{names})"
    )
