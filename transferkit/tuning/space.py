"""Search spaces: :class:`~transferkit.config.SearchSpace` -> Ray Tune ``param_space``, and a
trial's sampled values -> a typed training config.

The ``param_space`` is flat (``{"freeze_depth": tune.choice([...]), "backbone_lr":
tune.loguniform(...)}``): the keys are the field names of the search space, which the table, the
plot and Optuna show; each names the typed config field it sets (``SearchSpace.paths()``). It is
the one place where configuration travels as a string-keyed dict: a trial applies its sample to
the search's typed base config (:func:`apply_sample`).

Every search's first trial is the base config's own values of the searched names
(:func:`seed_with_base`, passed to the searcher as Ray Tune's ``points_to_evaluate``), so the
search reports how the defaults did and its best is never worse than them on the search's metric.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

from pydantic import BaseModel

from transferkit.config import ConfigError, Range, SearchSpace
from transferkit.config.tune import config_value, with_values
from transferkit.models.registry import check_freeze_depth

__all__ = [
    "param_space",
    "apply_sample",
    "default_freeze_depths",
    "seed_with_base",
    "base_values",
    "same_value",
]

C = TypeVar("C", bound=BaseModel)


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


def param_space(
    space: SearchSpace, num_stages: int, pretrained: bool, distill: bool, arch: str = "the model"
) -> dict[str, Any]:
    """The flat Ray Tune ``param_space`` for ``space``.

    Args:
        space: the ``tune.search`` section.
        num_stages: the model's number of named stages (freeze depths range over 0..num_stages).
        pretrained: the model starts from weights (otherwise freeze depth is not searched unless
            listed explicitly).
        distill: a distillation search (KD parameters allowed).
        arch: the architecture, named in a freeze-depth error.

    Returns:
        ``{name: domain or constant}`` for the searched names (at least one is a domain).

    Raises:
        ConfigError: a freeze depth beyond ``num_stages``; KD parameters in a fine-tuning search;
            nothing to search.
    """
    from ray import tune

    out: dict[str, Any] = {}
    depths = (
        space.freeze_depth
        if space.freeze_depth is not None
        else default_freeze_depths(num_stages, pretrained)
    )
    if depths is not None:
        check_freeze_depth(depths, num_stages, arch, field="tune.search.freeze_depth")
        out["freeze_depth"] = depths[0] if len(depths) == 1 else tune.choice(sorted(set(depths)))
    for name in type(space).paths():
        value = getattr(space, name)
        if name == "freeze_depth" or value is None:
            continue
        if type(space).distill_only(name) and not distill:
            raise ConfigError(
                f"tune.search.{name}: KD parameters are searched only in a distillation search "
                "(give a teacher: --teacher RUN or `teacher:` in the config)"
            )
        out[name] = _domain(value)
    if not any(isinstance(v, tune.search.sample.Domain) for v in out.values()):
        raise ConfigError(
            "tune.search: nothing to search (every field is fixed); give at least one "
            "range or list of two or more values"
        )
    return out


def apply_sample(base: C, sample: dict[str, Any], space: type[SearchSpace] = SearchSpace) -> C:
    """``base`` (a typed config) with a trial's sampled values set at their config fields.

    The sections a sample touches are re-validated with their new values (``3.0`` becomes the int
    freeze depth ``3``); ``base`` itself is not modified.

    Args:
        base: the search's base config (a :class:`~transferkit.config.FinetuneConfig` or
            :class:`~transferkit.config.DistillConfig`).
        sample: ``{search name: value}`` as Tune passes it to the trial.
        space: the search space type whose fields name the config paths.

    Raises:
        KeyError: a sampled name that is not a field of ``space``.
        ConfigError: a value the config field refuses.
    """
    paths = space.paths()
    return with_values(
        base,  # .item(): numpy scalars from a searcher become Python numbers
        {paths[k]: v.item() if hasattr(v, "item") else v for k, v in sample.items()},
    )


def base_values(
    base: BaseModel, names: list[str] | tuple[str, ...], space: type[SearchSpace] = SearchSpace
) -> dict[str, Any]:
    """The base config's own values of ``names`` (search names), read at their config fields.

    Args:
        base: the search's typed base config.
        names: fields of ``space``.
        space: the search space type whose fields name the config paths.
    """
    paths = space.paths()
    return {name: config_value(base, paths[name]) for name in names}


def same_value(a: Any, b: Any) -> bool:
    """``a == b``, or equal numbers within a relative 1e-9 (a YAML-rounded learning rate)."""
    return a == b or (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    )


def seed_with_base(
    space: dict[str, Any], base: BaseModel, search: type[SearchSpace] = SearchSpace
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The search's first trial: the base config's values of every searched (non-fixed) name.

    The point goes to the searcher as ``points_to_evaluate=[point]``; both searchers
    (``BasicVariantGenerator``, ``OptunaSearch``) run it as their first trial and count it among
    ``tune.num_samples``. Where a base value lies outside its domain:

    * a list (``tune.choice``; freeze depths or an explicit list of values) gains the base value,
      so later trials may sample it too. This is needed for Optuna, whose categorical
      distribution refuses a value outside its choices (``ValueError: '0' not in (2, 3)``).
      Freeze depths stay sorted; other lists keep their order with the base value appended.
    * a range (``tune.uniform``/``tune.loguniform``) is kept as it is: the first trial runs the
      base value once, outside the range, and the searcher samples only inside it. Both searchers
      accept this and log a warning (Ray: "Pre-set value ... is not within valid values";
      Optuna 5: "Fixed parameter ... is out of range for distribution"); Optuna's TPE then keeps
      sampling within the range (checked with optuna 5.0).

    Fixed entries of ``space`` (a one-value list or a range with ``low == high``) are not part of
    the point: they apply to every trial, the first one included.

    Args:
        space: a :func:`param_space` result.
        base: the search's typed base config.
        search: the search space type whose fields name the config paths.

    Returns:
        ``(space, point)``: the space with base values added to the lists that lacked them (a new
        dict; the input is not modified) and ``{name: base value}`` for each searched name.
    """
    from ray import tune
    from ray.tune.search.sample import Categorical, Domain

    out = dict(space)
    point: dict[str, Any] = {}
    for name, domain in space.items():
        if not isinstance(domain, Domain):
            continue
        value = base_values(base, [name], search)[name]
        if isinstance(domain, Categorical):
            same = [c for c in domain.categories if same_value(c, value)]
            if same:
                value = same[0]  # the list's own spelling of it, which Optuna's index lookup needs
            else:
                cats = list(domain.categories) + [value]
                out[name] = tune.choice(sorted(cats) if name == "freeze_depth" else cats)
        point[name] = value
    return out, point
