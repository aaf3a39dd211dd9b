"""Model registry, builders, pretrained weights, named stages and freezing.

Names are resolved lazily so that ``transferkit.models.registry`` (architecture names) can be used
without importing torch.
"""

from importlib import import_module

_EXPORTS = {
    "BuiltModel": "build",
    "FreezeDepthError": "registry",
    "check_freeze_depth": "registry",
    "stages_of": "build",
    "build_model": "build",
    "count_parameters": "build",
    "freeze_stages": "build",
    "head_module": "build",
    "param_groups": "build",
    "set_train_mode": "build",
    "ArchSpec": "registry",
    "Stage": "registry",
    "UnknownArchError": "registry",
    "get_arch": "registry",
    "list_archs": "registry",
    "model_stages": "registry",
    "WeightsUnavailableError": "weights",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"transferkit.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'transferkit.models' has no attribute {name!r}")
