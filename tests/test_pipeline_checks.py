"""Pipeline options that depend on the data's classes are refused before any stage (and before
Ray starts), naming the field."""

import pytest

from transferkit.config import ConfigError, PipelineConfig, validate
from transferkit.pipeline import validate_pipeline


def _cfg(dataset, **over):
    base = {"data": {"dataset": str(dataset), "image_size": 32}, "student": None}
    for k, v in over.items():
        base[k] = v
    return validate(PipelineConfig, base)


@pytest.mark.parametrize(
    "over,field",
    [
        (
            {"teacher": {"optim": {"class_weight": [1.0, 2.0, 3.0]}}},
            "teacher.optim.class_weight: 3 weights for 10 classes",
        ),
        (
            {"student": {"optim": {"class_weight": [1.0, 2.0]}}},
            "student.optim.class_weight: 2 weights for 10 classes",
        ),
        ({"teacher": {"model": {"weights": "teacher"}}}, "teacher.model.weights"),
        (
            {"report": {"positive_class": "defect"}},
            "report.positive_class: 'defect' is not a class",
        ),
    ],
)
def test_class_dependent_mistakes_name_the_field_before_ray(digits_dir, over, field, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started before the check"))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate_pipeline(_cfg(digits_dir, **over))
