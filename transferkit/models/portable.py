"""The portable ``model.pt``: weights plus everything needed to rebuild and feed the model.

A plain dict of strings, numbers, lists and tensors, so ``torch.load(path, weights_only=True)``
reads it; independent of the number of workers that trained it (no ``module.`` prefixes).

Keys: ``format`` ("transferkit.model/1"), ``arch``, ``width_mult``, ``num_classes``,
``keep_stages`` / ``head_hidden`` (a cut backbone, ``None`` otherwise), ``class_names``,
``preprocessing`` (dict of :class:`~transferkit.config.Preprocessing`),
``state_dict``, ``source`` (where it came from), ``metrics`` (dict of floats).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferkit.config import ModelConfig, Preprocessing
from transferkit.errors import TransferkitError
from transferkit.filetype import not_checkpoint_reason
from transferkit.models.build import BuiltModel, build_model

__all__ = ["FORMAT", "save_portable", "load_portable", "PortableModelError"]

FORMAT = "transferkit.model/1"


class PortableModelError(TransferkitError, ValueError):
    """A file that is not a transferkit ``model.pt`` (or a run folder without one)."""


def save_portable(
    path: str | Path,
    model: nn.Module,
    arch: str,
    class_names: list[str],
    preprocessing: Preprocessing,
    width_mult: float = 1.0,
    source: str = "",
    metrics: dict[str, float] | None = None,
    keep_stages: int | None = None,
    head_hidden: int | None = None,
) -> Path:
    """Write ``model.pt`` (weights of ``model``, unwrapped from DDP if needed); ``keep_stages`` /
    ``head_hidden`` describe a cut backbone (see :class:`~transferkit.config.ModelConfig`)."""
    inner = getattr(model, "module", model)
    obj = {
        "format": FORMAT,
        "arch": arch,
        "width_mult": float(width_mult),
        "keep_stages": keep_stages,
        "head_hidden": head_hidden,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "preprocessing": preprocessing.model_dump(mode="json"),
        "state_dict": {k: v.detach().cpu().clone() for k, v in inner.state_dict().items()},
        "source": source,
        "metrics": {k: float(v) for k, v in (metrics or {}).items()},
    }
    path = Path(path)
    torch.save(obj, path)
    return path


def resolve_model_file(path: str | Path) -> Path:
    """A run folder -> its ``model.pt``; a file -> itself.

    Raises:
        PortableModelError: nothing loadable there.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise PortableModelError(
            f"{path} is neither a run folder holding model.pt nor a model.pt file "
            "(did the run finish? `transferkit finetune` writes model.pt at the end)"
        )
    return p


def load_portable(path: str | Path) -> tuple[BuiltModel, dict[str, Any]]:
    """Rebuild the model of a ``model.pt`` (or a run folder) in eval mode on the CPU.

    Returns:
        ``(built model with its preprocessing, the raw dict without the state dict)``.

    Raises:
        PortableModelError: not a transferkit model file.
    """
    p = resolve_model_file(path)
    reason = not_checkpoint_reason(p)
    if reason is not None:  # before torch.load, whose unpickler text names no fix
        raise PortableModelError(reason)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise PortableModelError(f"cannot read {p}: {exc}") from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise PortableModelError(f"{p} is not a transferkit model.pt (format {FORMAT})")
    cfg = ModelConfig(
        arch=obj["arch"],
        weights=None,
        width_mult=obj.get("width_mult", 1.0),
        keep_stages=obj.get("keep_stages"),
        head_hidden=obj.get("head_hidden"),
    )
    built = build_model(cfg, int(obj["num_classes"]))
    built.model.load_state_dict(obj["state_dict"])
    built.model.eval()
    built.preprocessing = Preprocessing.model_validate(obj["preprocessing"])
    built.weights_source = str(p.resolve())
    info = {k: v for k, v in obj.items() if k != "state_dict"}
    info["path"] = str(p.resolve())
    return built, info
