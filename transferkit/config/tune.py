"""``transferkit tune``: the search space, the ``tune:`` section and the search configs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from transferkit.config.base import ConfigError, Metric, Strict
from transferkit.config.distill import DistillConfig
from transferkit.config.training import FinetuneConfig, ScalingConf, TrialScaling

__all__ = [
    "Range",
    "Choice",
    "SearchSpace",
    "Searches",
    "config_value",
    "with_values",
    "TuneSettings",
    "TuneConfig",
    "DistillTuneConfig",
    "StageTune",
]

M = TypeVar("M", bound=BaseModel)


class Range(Strict):
    """A continuous search range ``[low, high]``, sampled uniformly or, with ``log``, log-uniformly
    (learning rates and weight decay: Bergstra & Bengio 2012)."""

    low: float
    high: float
    log: bool = True

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0; got {self.low} (or set log: false)")
        return self


Choice = list[float]
"""An explicit list of values, sampled uniformly (a grid when the searcher is random)."""


@dataclass(frozen=True)
class Searches:
    """Marks a :class:`SearchSpace` field as searchable and names the config field it sets: its
    dotted path in a :class:`FinetuneConfig` or :class:`DistillConfig` (``optim.head_lr``). A path
    outside :class:`FinetuneConfig` (``kd.*``) is searched only in a distillation search."""

    path: str


class SearchSpace(Strict):
    """What a search varies: the one table of searchable parameters.

    Each field is one parameter: its name is the key in ``tune.search``, Ray Tune's
    ``param_space``, ``trials.csv`` and the plot; its :class:`Searches` marker names the typed
    config field a sampled value sets; its default is the domain searched when the YAML omits it.
    Adding a searchable hyperparameter is one more field here. A field set to ``None`` keeps the
    base config's value.

    Attributes:
        freeze_depth: candidate freeze depths; ``None`` = every depth from 0 to the model's number
            of stages (``transferkit models ARCH`` lists them) for a pretrained model.
        backbone_lr / head_lr: learning rates of the unfrozen backbone and of the head.
        weight_decay: decoupled weight decay (AdamW) or L2 (SGD).
        temperature / hard_weight / soft_weight: the KD loss (distillation searches only).
    """

    freeze_depth: Annotated[list[int] | None, Searches("model.freeze_depth")] = None
    backbone_lr: Annotated[Range | Choice | None, Searches("optim.backbone_lr")] = Field(
        default_factory=lambda: Range(low=1e-4, high=1e-2)
    )
    head_lr: Annotated[Range | Choice | None, Searches("optim.head_lr")] = Field(
        default_factory=lambda: Range(low=1e-3, high=3e-2)
    )
    weight_decay: Annotated[Range | Choice | None, Searches("optim.weight_decay")] = None
    temperature: Annotated[Range | Choice | None, Searches("kd.temperature")] = None
    hard_weight: Annotated[Range | Choice | None, Searches("kd.hard_weight")] = None
    soft_weight: Annotated[Range | Choice | None, Searches("kd.soft_weight")] = None

    @field_validator("*")
    @classmethod
    def _non_empty(cls, v, info):
        if isinstance(v, list) and (not v or any(x < 0 for x in v)):
            what = "depths" if info.field_name == "freeze_depth" else "values"
            raise ValueError(f"a non-empty list of {what} >= 0 is needed; got {v}")
        return v

    @classmethod
    def paths(cls) -> dict[str, str]:
        """``{search name: dotted config path}`` of every searchable field, in table order."""
        return {
            name: marker.path
            for name, field in cls.model_fields.items()
            for marker in field.metadata
            if isinstance(marker, Searches)
        }

    @classmethod
    def distill_only(cls, name: str) -> bool:
        """The parameter sets a field that only a distillation config has (the KD loss)."""
        return cls.paths()[name].split(".")[0] not in FinetuneConfig.model_fields

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _check_paths(cls)


def _check_paths(space: type[SearchSpace]) -> None:
    """A searchable field must name a field of the distillation config (a superset of the
    fine-tuning one): a mistyped path fails on import, not in the first trial."""
    for name, path in space.paths().items():
        model: Any = DistillConfig
        for part in path.split("."):
            fields = getattr(model, "model_fields", {})
            if part not in fields:
                raise TypeError(f"{space.__name__}.{name}: {path!r} is not a config field")
            model = fields[part].annotation


_check_paths(SearchSpace)


def config_value(cfg: BaseModel, path: str) -> Any:
    """The value at a dotted ``path`` of a typed config (``optim.head_lr``)."""
    value: Any = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def with_values(cfg: M, values: dict[str, Any]) -> M:
    """A copy of ``cfg`` with the field at each dotted path of ``values`` set (``{"optim.head_lr":
    1e-3}``). Each section on a path is rebuilt once from its fields and validated as a whole, so
    ``3.0`` becomes the int ``3`` of an int field, a value outside the field's range raises, and
    the section's own checks see all its new values together. Sections off the paths are shared;
    ``cfg`` itself is not modified.

    Raises:
        ConfigError: a value is not valid there (the message names its dotted path).
    """
    return _with_values(cfg, values, "")


def _with_values(obj: M, values: dict[str, Any], where: str) -> M:
    fields = dict(obj)  # the field values as they are (sections stay objects)
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, dot, rest = path.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            fields[head] = value
    for head, sub in nested.items():
        fields[head] = _with_values(getattr(obj, head), sub, f"{where}{head}.")
    try:
        return type(obj)(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = (where + ".".join(str(p) for p in err["loc"])).rstrip(".")
        got = "" if isinstance(err["input"], dict) else f"; got {err['input']!r}"
        raise ConfigError(f"{loc}: {err['msg']}{got}") from None


class TuneSettings(Strict):
    """The ``tune:`` section: search space, scheduler, searcher, concurrency, tracking.

    Attributes:
        num_samples: number of trials.
        scheduler: ``asha`` (Li et al. 2020, asynchronous successive halving: stops a trial whose
            ``metric`` at a rung is below the top ``1/reduction_factor`` of the trials seen
            there) or ``fifo`` (every trial runs its full budget).
        grace_period: epochs every trial runs before ASHA may stop it.
        reduction_factor: ASHA's eta (keeps the best ``1/eta`` at each rung).
        searcher: ``random`` (Bergstra & Bengio 2012) or ``optuna`` (TPE, Bergstra et al. 2011).
        metric: what "best" means: ``val_acc``, ``val_balanced_acc``, ``val_macro_f1`` (max) or
            ``val_loss`` (min). Every search also runs the base config's own values first
            (Ray Tune's ``points_to_evaluate``), so its best is never worse than the defaults
            on this metric within the trial budget.
        max_concurrent_trials: ``None`` = as many as the cluster's CPUs/GPUs fit.
        trial_cpu: the CPU reserved by each trial's driver function (the workers hold the rest).
        tracking: ``local`` (CSV/JSON/TensorBoard files in each trial folder), ``tensorboard``
            (the same, and says where to point TensorBoard), ``mlflow`` (also logs to MLflow).
        tracking_uri: MLflow tracking URI (default: ``mlruns/`` in the experiment folder).
        max_failures: times a failing trial is retried (from its last checkpoint).
    """

    search: SearchSpace = Field(default_factory=SearchSpace)
    num_samples: int = Field(8, ge=1, le=100000)
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(1, ge=1)
    reduction_factor: float = Field(2.0, gt=1.0)
    searcher: Literal["random", "optuna"] = "random"
    metric: Metric = "val_acc"
    max_concurrent_trials: int | None = Field(None, ge=1)
    trial_cpu: float = Field(0.01, gt=0.0, le=64.0)
    tracking: Literal["local", "tensorboard", "mlflow"] = "local"
    tracking_uri: str | None = None
    max_failures: int = Field(0, ge=0, le=100)


class TuneConfig(FinetuneConfig):
    """``transferkit tune``: a Ray Tune search over fine-tuning runs.

    The fields of :class:`FinetuneConfig` are the base every trial starts from (``optim.epochs`` is
    the per-trial budget, ``--max-epochs``; ``scaling`` is per trial, default 1 worker at 0.99
    CPU); ``tune`` says what varies and how trials are scheduled. ``output`` is the experiment
    folder (a local path, or an ``s3://``/``gs://`` URI as Ray accepts it).
    """

    scaling: TrialScaling = Field(default_factory=TrialScaling)
    output: str = "runs/tune"
    tune: TuneSettings = Field(default_factory=TuneSettings)


class DistillTuneConfig(DistillConfig):
    """``transferkit tune --teacher RUN``: a search over distillation runs (the student's optimizer
    and the KD temperature and weights); fields as :class:`DistillConfig` plus ``tune``."""

    scaling: TrialScaling = Field(default_factory=TrialScaling)
    output: str = "runs/tune-student"
    baseline: bool = False
    tune: TuneSettings = Field(default_factory=TuneSettings)


class StageTune(TuneSettings):
    """A search stage of a pipeline: :class:`TuneSettings` plus the trials' own resources and
    epoch budget (the fine-tune/distill stage after it uses its own ``scaling`` and ``optim``).

    Attributes:
        scaling: per trial (default 1 worker at 0.99 CPU). A partial section fills in from
            :class:`ScalingConf`'s defaults (1 CPU per worker), as it always has here, unlike
            ``transferkit tune``'s ``scaling`` (:class:`TrialScaling`).
        epochs: per-trial budget; ``None`` = the stage's ``optim.epochs``.
    """

    scaling: ScalingConf = Field(default_factory=TrialScaling)
    epochs: int | None = Field(None, ge=1, le=10000)
