"""What a search hands its trials: the typed base config and the data every trial trains on.

The trials receive these objects as they are (Ray pickles them); only the experiment's
``search_context.json`` (for ``--resume``) holds them as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from transferkit.config import (
    DistillConfig,
    DistillTuneConfig,
    FinetuneConfig,
    Preprocessing,
    SearchSpace,
    TuneConfig,
    as_config,
    validate,
)
from transferkit.data.folder import Splits

__all__ = ["SearchContext", "trial_base"]


def trial_base(cfg: TuneConfig | DistillTuneConfig, **update: Any) -> FinetuneConfig:
    """The config every trial starts from: ``cfg`` without its search settings, as a
    :class:`FinetuneConfig` (a :class:`DistillConfig` for a distillation search), ranking its
    epochs (and keeping its checkpoints) by the search's own metric."""
    target = DistillConfig if isinstance(cfg, DistillTuneConfig) else FinetuneConfig
    return as_config(cfg, target, metric=cfg.tune.metric, **update)


@dataclass
class SearchContext:
    """What every trial trains on, resolved once on the driver and handed to the trials as it is
    (Ray pickles it); ``search_context.json`` keeps it for ``--resume``.

    Attributes:
        base: the trials' base config (:func:`trial_base`); its type says what a trial runs.
        splits: the file lists every trial trains and validates on.
        preprocessing: the student's (or the fine-tuned model's) preprocessing.
        teacher_preprocessing: the teacher's, when it differs from ``preprocessing``.
        num_stages: the model's named stages.
        default_point: the base config's values of the searched names (the first trial).
        experiment: the experiment folder or URI.
        space: the search space type whose fields name the config paths.
    """

    base: FinetuneConfig
    splits: Splits
    preprocessing: Preprocessing
    teacher_preprocessing: Preprocessing | None = None
    num_stages: int = 0
    default_point: dict[str, Any] = field(default_factory=dict)
    experiment: str = ""
    space: type[SearchSpace] = SearchSpace

    def to_json(self) -> str:
        """The file form (JSON loses the config's type, so ``kind`` records it)."""
        t_prep = self.teacher_preprocessing
        return json.dumps(
            {
                "base": self.base.model_dump(mode="json"),
                "kind": "distill" if isinstance(self.base, DistillConfig) else "finetune",
                "splits": self.splits.to_json(),
                "preprocessing": self.preprocessing.model_dump(mode="json"),
                "teacher_preprocessing": t_prep.model_dump(mode="json") if t_prep else None,
                "num_stages": self.num_stages,
                "default_point": self.default_point,
                "experiment": self.experiment,
            }
        )

    @classmethod
    def from_json(cls, text: str, source: str) -> SearchContext:
        """Read :meth:`to_json`'s form back (also a search saved before searches were seeded).

        Raises:
            ConfigError: the saved base config is not valid any more (named fields).
        """
        data = json.loads(text)
        kind = DistillConfig if data.get("kind") == "distill" else FinetuneConfig
        t_prep = data.get("teacher_preprocessing")
        return cls(
            base=validate(kind, data["base"], source=source),
            splits=Splits.from_json(data["splits"]),
            preprocessing=Preprocessing.model_validate(data["preprocessing"]),
            teacher_preprocessing=Preprocessing.model_validate(t_prep) if t_prep else None,
            num_stages=data.get("num_stages", 0),
            default_point=data.get("default_point") or {},
            experiment=data.get("experiment", ""),
        )
