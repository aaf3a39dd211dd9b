"""Search spaces: :class:`~transferkit.config.SearchSpace` -> Ray Tune ``param_space``, and a
trial's sampled values -> a full training config.

The ``param_space`` is flat (``{"freeze_depth": tune.choice([...]), "backbone_lr":
tune.loguniform(...)}``): the keys are the field names the table, the plot and Optuna show.
"""

from __future__ import annotations

from typing import Any

from transferkit.config import ConfigError, Range, SearchSpace

__all__ = ["PARAM_PATHS", "FINETUNE_PARAMS", "KD_PARAMS", "param_space", "apply_sample",
           "default_freeze_depths"]

# Flat search key -> the dotted path of the config field it sets.
PARAM_PATHS: dict[str, tuple[str, str]] = {
    "freeze_depth": ("model", "freeze_depth"),
    "backbone_lr": ("optim", "backbone_lr"),
    "head_lr": ("optim", "head_lr"),
    "weight_decay": ("optim", "weight_decay"),
    "temperature": ("kd", "temperature"),
    "hard_weight": ("kd", "hard_weight"),
    "soft_weight": ("kd", "soft_weight"),
}
FINETUNE_PARAMS = ("freeze_depth", "backbone_lr", "head_lr", "weight_decay")
KD_PARAMS = ("temperature", "hard_weight", "soft_weight")


def default_freeze_depths(num_stages: int, pretrained: bool) -> list[int] | None:
    """Every depth from 0 (train all) to ``num_stages`` (linear probe) for a pretrained model;
    ``None`` (keep the base value) for a model trained from scratch, where freezing random
    weights only hurts."""
    return list(range(num_stages + 1)) if pretrained else None


def _domain(value: Range | list[float]):
    from ray import tune

    if isinstance(value, Range):
        if value.low == value.high:
            return value.low
        return (tune.loguniform if value.log else tune.uniform)(value.low, value.high)
    return value[0] if len(value) == 1 else tune.choice(list(value))


def param_space(space: SearchSpace, num_stages: int, pretrained: bool, distill: bool) -> dict[str, Any]:
    """The flat Ray Tune ``param_space`` for ``space``.

    Args:
        space: the ``tune.search`` section.
        num_stages: the model's number of named stages (freeze depths range over 0..num_stages).
        pretrained: the model starts from weights (otherwise freeze depth is not searched unless
            listed explicitly).
        distill: a distillation search (KD parameters allowed).

    Returns:
        ``{name: domain or constant}`` for the searched names (at least one is a domain).

    Raises:
        ConfigError: a freeze depth beyond ``num_stages``; KD parameters in a fine-tuning search;
            nothing to search.
    """
    from ray import tune

    out: dict[str, Any] = {}
    depths = space.freeze_depth if space.freeze_depth is not None else default_freeze_depths(
        num_stages, pretrained)
    if depths is not None:
        bad = [d for d in depths if d > num_stages]
        if bad:
            raise ConfigError(
                f"tune.search.freeze_depth: {bad} exceed the model's {num_stages} stages "
                f"(allowed: 0..{num_stages})")
        out["freeze_depth"] = depths[0] if len(depths) == 1 else tune.choice(sorted(set(depths)))
    for name in FINETUNE_PARAMS[1:] + KD_PARAMS:
        value = getattr(space, name)
        if value is None:
            continue
        if name in KD_PARAMS and not distill:
            raise ConfigError(
                f"tune.search.{name}: KD parameters are searched only in a distillation search "
                "(give a teacher: --teacher RUN or `teacher:` in the config)")
        out[name] = _domain(value)
    if not any(isinstance(v, tune.search.sample.Domain) for v in out.values()):
        raise ConfigError("tune.search: nothing to search (every field is fixed); give at least one "
                          "range or list of two or more values")
    return out


def apply_sample(base: dict[str, Any], sample: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a config as a dict) with a trial's sampled values set at their config paths.

    Args:
        base: ``cfg.model_dump(mode="json")`` of the search's base config.
        sample: ``{flat name: value}`` as Tune passes it to the trial.

    Raises:
        KeyError: a sampled name that is not in :data:`PARAM_PATHS`.
    """
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for name, value in sample.items():
        section, field = PARAM_PATHS[name]
        out.setdefault(section, {})[field] = int(value) if field == "freeze_depth" else float(value)
    return out
