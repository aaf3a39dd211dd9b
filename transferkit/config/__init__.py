"""Typed configuration for every stage: pydantic models, YAML load/merge/save.

The package imports neither torch, ray nor onnxruntime, and of transferkit only
:mod:`transferkit.preprocessing` (pydantic alone), so the CLI can validate a config in well under a
second and a serving install can read preprocessing metadata.

One module per stage, each composing the sections it needs: :mod:`~transferkit.config.base`
(strict base, :class:`ConfigError`, YAML), :mod:`~transferkit.config.data`,
:mod:`~transferkit.config.model`, :mod:`~transferkit.config.training` (optimizer, scaling,
``finetune``), :mod:`~transferkit.config.distill`, :mod:`~transferkit.config.tune`,
:mod:`~transferkit.config.export`, :mod:`~transferkit.config.serve` and
:mod:`~transferkit.config.pipeline`. Every public name is importable from here.

A wrong value raises :class:`ConfigError`, whose message names the field (dotted path, as in the
YAML file), the bad value, and what is allowed.
"""

from transferkit.config.base import (
    ConfigError,
    Metric,
    Strict,
    as_config,
    deep_merge,
    load_config,
    load_yaml,
    save_config,
    validate,
    with_defaults,
)
from transferkit.config.data import AugmentConfig, DataConfig
from transferkit.config.distill import DistillConfig, KDConfig
from transferkit.config.export import (
    EvaluateConfig,
    ExportConfig,
    ExportSettings,
    PipelineExport,
    QuantizeSettings,
)
from transferkit.config.model import ModelConfig, StudentModel
from transferkit.config.pipeline import (
    PipelineConfig,
    PipelineStudent,
    PipelineTeacher,
    PublishedResult,
    ReportConfig,
)
from transferkit.config.serve import ServeConfig
from transferkit.config.training import (
    FinetuneConfig,
    OptimConfig,
    ScalingConf,
    StudentOptim,
    TrialScaling,
)
from transferkit.config.tune import (
    Choice,
    DistillTuneConfig,
    Range,
    SearchSpace,
    StageTune,
    TuneConfig,
    TuneSettings,
)
from transferkit.preprocessing import Interpolation, Preprocessing

__all__ = [
    "ConfigError",
    "Strict",
    "Metric",
    "Interpolation",
    "Preprocessing",
    "DataConfig",
    "AugmentConfig",
    "ModelConfig",
    "StudentModel",
    "OptimConfig",
    "StudentOptim",
    "ScalingConf",
    "TrialScaling",
    "FinetuneConfig",
    "KDConfig",
    "DistillConfig",
    "ExportSettings",
    "ExportConfig",
    "ServeConfig",
    "Range",
    "Choice",
    "SearchSpace",
    "TuneSettings",
    "TuneConfig",
    "DistillTuneConfig",
    "StageTune",
    "PipelineTeacher",
    "PipelineStudent",
    "PipelineExport",
    "QuantizeSettings",
    "EvaluateConfig",
    "PipelineConfig",
    "PublishedResult",
    "ReportConfig",
    "validate",
    "as_config",
    "with_defaults",
    "load_yaml",
    "load_config",
    "deep_merge",
    "save_config",
]
