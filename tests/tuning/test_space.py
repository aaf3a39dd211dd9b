"""Search spaces and resource planning: pure functions, no Ray cluster."""

from typing import Annotated

import pytest
from ray import tune

from transferkit.config import (
    Choice,
    ConfigError,
    DistillConfig,
    DistillTuneConfig,
    FinetuneConfig,
    Range,
    SearchSpace,
    TuneConfig,
)
from transferkit.config.tune import Searches
from transferkit.tuning.resources import plan_concurrency
from transferkit.tuning.space import apply_sample, param_space, seed_with_base


def test_default_space_covers_every_freeze_depth_and_both_learning_rates():
    space = param_space(SearchSpace(), num_stages=9, pretrained=True, distill=False)
    assert space["freeze_depth"].categories == list(range(10))
    for name in ("backbone_lr", "head_lr"):
        dom = space[name]
        assert isinstance(dom.get_sampler(), tune.search.sample.LogUniform)
        assert 0 < dom.lower < dom.upper
    assert "weight_decay" not in space and "temperature" not in space


def test_from_scratch_models_do_not_search_freezing_unless_asked():
    assert "freeze_depth" not in param_space(SearchSpace(), 7, pretrained=False, distill=True)
    space = param_space(SearchSpace(freeze_depth=[0, 2]), 7, pretrained=False, distill=True)
    assert space["freeze_depth"].categories == [0, 2]


def test_freeze_depth_beyond_the_stages_names_the_field():
    with pytest.raises(ConfigError, match=r"tune.search.freeze_depth.*\[12\].*0..9"):
        param_space(SearchSpace(freeze_depth=[0, 12]), 9, pretrained=True, distill=False)


def test_kd_parameters_need_a_teacher():
    with pytest.raises(ConfigError, match="tune.search.temperature.*teacher"):
        param_space(SearchSpace(temperature=Range(low=1, high=8)), 9, True, distill=False)
    space = param_space(
        SearchSpace(temperature=[2.0, 4.0], soft_weight=Range(low=0.5, high=0.9, log=False)),
        7,
        False,
        distill=True,
    )
    assert space["temperature"].categories == [2.0, 4.0]
    assert isinstance(space["soft_weight"].get_sampler(), tune.search.sample.Uniform)


def test_a_space_with_nothing_to_search_is_refused():
    fixed = SearchSpace(freeze_depth=[3], backbone_lr=[1e-3], head_lr=Range(low=1e-2, high=1e-2))
    with pytest.raises(ConfigError, match="nothing to search"):
        param_space(fixed, 9, True, distill=False)


def test_ranges_are_checked_when_built():
    with pytest.raises(ValueError, match="low .* <= high"):
        Range(low=1e-2, high=1e-3)
    with pytest.raises(ValueError, match="log range needs low > 0"):
        Range(low=0.0, high=1.0)


def test_a_sample_lands_on_its_config_fields():
    base = FinetuneConfig()
    out = apply_sample(base, {"freeze_depth": 3.0, "backbone_lr": 1e-4, "head_lr": 2e-2})
    assert type(out) is FinetuneConfig
    assert out.model.freeze_depth == 3 and isinstance(out.model.freeze_depth, int)
    assert out.optim.backbone_lr == 1e-4 and out.optim.head_lr == 2e-2
    assert base.model.freeze_depth == 0 and base.optim.head_lr == 5e-3  # the base is unchanged
    assert out.data is base.data  # sections the sample does not touch are shared, not copied


def test_a_sampled_value_the_config_field_refuses_names_the_field():
    with pytest.raises(
        ConfigError, match=r"optim\.head_lr: Input should be greater than 0; got -1\.0"
    ):
        apply_sample(FinetuneConfig(), {"head_lr": -1.0})


def test_a_sample_is_checked_section_by_section_not_value_by_value():
    """KDConfig refuses hard and soft weights both 0; a sample that moves the weight from one to
    the other passes through no such state."""
    base = DistillConfig.model_validate({"teacher": "t", "kd": {"hard_weight": 0.0}})
    out = apply_sample(base, {"soft_weight": 0.0, "hard_weight": 1.0})
    assert (out.kd.hard_weight, out.kd.soft_weight) == (1.0, 0.0)
    with pytest.raises(
        ConfigError, match="kd: Value error, hard_weight and soft_weight are both 0"
    ):
        apply_sample(base, {"soft_weight": 0.0})


def test_a_distillation_sample_keeps_the_student_sections():
    out = apply_sample(DistillConfig(teacher="t"), {"temperature": 2, "head_lr": 1e-3})
    assert type(out) is DistillConfig and out.kd.temperature == 2.0
    assert out.model.arch == "mobilenet_v3_small" and out.optim.epochs == 30


class _WithLabelSmoothing(SearchSpace):
    """A search space with one more searchable parameter, added in this one place only."""

    label_smoothing: Annotated[Range | Choice | None, Searches("optim.label_smoothing")] = None


def test_a_parameter_added_to_the_search_space_alone_is_sampled_into_its_config_field():
    space = _WithLabelSmoothing.model_validate(
        {"label_smoothing": {"low": 0.0, "high": 0.3, "log": False}, "head_lr": None}
    )
    domains = param_space(space, num_stages=7, pretrained=False, distill=False)
    assert set(domains) == {"label_smoothing", "backbone_lr"}
    sample = {name: domain.sample() for name, domain in domains.items()}
    assert 0.0 <= sample["label_smoothing"] <= 0.3
    cfg = apply_sample(FinetuneConfig(), sample, _WithLabelSmoothing)
    assert cfg.optim.label_smoothing == sample["label_smoothing"]
    assert cfg.optim.backbone_lr == sample["backbone_lr"]
    seeded, point = seed_with_base(domains, FinetuneConfig(), _WithLabelSmoothing)
    assert point == {"label_smoothing": 0.1, "backbone_lr": 2e-3}  # OptimConfig's own values


def test_tune_defaults_to_one_worker_per_trial_that_fits_beside_the_trial_cpu():
    cfg = TuneConfig.model_validate({"scaling": {"num_workers": 2}})
    assert cfg.scaling.cpus_per_worker == 0.99 and cfg.tune.trial_cpu == 0.01
    assert DistillTuneConfig(teacher="t").scaling.num_workers == 1


TWO_CPUS = {"CPU": 2.0}


def test_two_single_worker_trials_run_side_by_side_on_two_cpus():
    assert plan_concurrency(TuneConfig(), TWO_CPUS) == 2
    two = TuneConfig.model_validate({"scaling": {"num_workers": 2}})
    assert plan_concurrency(two, TWO_CPUS) == 1
    few = TuneConfig.model_validate({"tune": {"num_samples": 1}})
    assert plan_concurrency(few, TWO_CPUS) == 1


def test_a_trial_that_cannot_fit_is_refused_with_the_fix():
    # 0.01 token + 2 x 1.0 CPU = 2.01 on 2 CPUs would wait forever (shared NOTES).
    cfg = TuneConfig.model_validate({"scaling": {"num_workers": 2, "cpus_per_worker": 1.0}})
    with pytest.raises(ConfigError, match=r"2.01 CPUs.*has 2.*cpus_per_worker <= 0.99"):
        plan_concurrency(cfg, TWO_CPUS)
    gpu = TuneConfig.model_validate({"scaling": {"use_gpu": True}})
    with pytest.raises(ConfigError, match="scaling.use_gpu"):
        plan_concurrency(gpu, TWO_CPUS)


def test_too_many_concurrent_trial_drivers_are_refused():
    cfg = TuneConfig.model_validate(
        {"scaling": {"num_workers": 2}, "tune": {"max_concurrent_trials": 8}}
    )
    with pytest.raises(ConfigError, match=r"tune.max_concurrent_trials.*allowed: 1..2"):
        plan_concurrency(cfg, TWO_CPUS)


def test_autoscaling_clusters_skip_the_fit_check():
    cfg = TuneConfig.model_validate({"scaling": {"num_workers": 8, "autoscale": True}})
    assert plan_concurrency(cfg, TWO_CPUS) is None


# ----------------------------------------------------------------------------- the default point


def _base(**sections) -> FinetuneConfig:
    return FinetuneConfig.model_validate(sections)


def test_the_default_point_is_the_base_configs_values_of_the_searched_names():
    space = param_space(SearchSpace(), num_stages=9, pretrained=True, distill=False)
    seeded, point = seed_with_base(space, _base())
    # OptimConfig's own defaults (2e-3, 5e-3) lie inside the default ranges; depth 0 is listed.
    assert point == {"freeze_depth": 0, "backbone_lr": 2e-3, "head_lr": 5e-3}
    assert seeded["freeze_depth"].categories == list(range(10))
    assert seeded["backbone_lr"] is space["backbone_lr"] and seeded["head_lr"] is space["head_lr"]
    assert all(seeded[k].is_valid(v) for k, v in point.items())


def test_a_base_freeze_depth_missing_from_the_list_joins_the_choices():
    space = param_space(SearchSpace(freeze_depth=[5, 3]), 9, pretrained=True, distill=False)
    seeded, point = seed_with_base(space, _base(model={"freeze_depth": 4}))
    assert point["freeze_depth"] == 4
    assert seeded["freeze_depth"].categories == [3, 4, 5]
    assert space["freeze_depth"].categories == [3, 5]  # the input space is not modified


def test_a_base_learning_rate_outside_its_range_runs_once_and_the_range_stays():
    space = param_space(SearchSpace(backbone_lr=Range(low=1e-4, high=1e-3)), 9, True, distill=False)
    seeded, point = seed_with_base(space, _base(optim={"backbone_lr": 2e-3}))
    assert point["backbone_lr"] == 2e-3
    dom = seeded["backbone_lr"]
    assert (dom.lower, dom.upper) == (1e-4, 1e-3) and not dom.is_valid(2e-3)


def test_a_list_of_values_gains_the_base_value_at_its_end_and_reuses_a_listed_spelling():
    space = param_space(SearchSpace(head_lr=[1e-2, 1e-7]), 9, True, distill=False)
    seeded, point = seed_with_base(space, _base(optim={"head_lr": 5e-3}))
    assert seeded["head_lr"].categories == [1e-2, 1e-7, 5e-3] and point["head_lr"] == 5e-3
    # a base value equal to a listed one up to float noise takes the listed value (Optuna looks
    # a categorical value up by equality)
    seeded, point = seed_with_base(space, _base(optim={"head_lr": 1e-2 * (1 + 1e-12)}))
    assert seeded["head_lr"].categories == [1e-2, 1e-7] and point["head_lr"] == 1e-2


def test_fixed_values_are_not_part_of_the_point():
    space = param_space(
        SearchSpace(freeze_depth=[9], backbone_lr=[1e-3], head_lr=[5e-3, 1e-7]),
        9,
        True,
        distill=False,
    )
    seeded, point = seed_with_base(space, _base())
    assert point == {"head_lr": 5e-3}
    assert seeded["freeze_depth"] == 9 and seeded["backbone_lr"] == 1e-3


def test_the_default_point_of_a_distillation_search_holds_the_kd_values():
    cfg = DistillTuneConfig(teacher="t")
    space = param_space(
        SearchSpace(temperature=[2.0, 8.0], head_lr=None, backbone_lr=[3e-3]),
        7,
        pretrained=False,
        distill=True,
    )
    seeded, point = seed_with_base(space, cfg)
    assert point == {"temperature": cfg.kd.temperature} == {"temperature": 4.0}
    assert seeded["temperature"].categories == [2.0, 8.0, 4.0]


def test_a_freeze_depth_out_of_range_reads_the_same_from_the_model_and_the_search():
    """One check (the models layer's) with one message, whoever asks."""
    from transferkit.config import ModelConfig
    from transferkit.models import FreezeDepthError, build_model

    with pytest.raises(FreezeDepthError) as built:
        build_model(ModelConfig(arch="resnet18", weights=None, freeze_depth=6), 2)
    with pytest.raises(FreezeDepthError) as searched:
        param_space(SearchSpace(freeze_depth=[0, 6]), 5, True, distill=False, arch="resnet18")
    body = "is out of range for resnet18: allowed 0..5 (0 trains everything, 5 is a linear probe"
    assert str(built.value) == (
        f"model.freeze_depth: 6 {body}; stages: stem, layer1, layer2, layer3, layer4)"
    )
    assert str(searched.value) == f"tune.search.freeze_depth: [6] {body})"


def test_a_pipeline_search_that_cannot_fit_names_its_own_fields_throughout():
    cfg = TuneConfig.model_validate({"scaling": {"num_workers": 2, "cpus_per_worker": 1.0}})
    with pytest.raises(ConfigError) as e:
        plan_concurrency(cfg, TWO_CPUS, "teacher.tune", "teacher.tune.scaling")
    msg = str(e.value)
    assert msg.startswith("teacher.tune.scaling: one trial needs 0.01 CPU (teacher.tune.trial_cpu)")
    assert "set teacher.tune.scaling.cpus_per_worker <= 0.99" in msg


def test_a_searchable_field_must_name_a_config_field():
    with pytest.raises(TypeError, match=r"optim\.label_smothing' is not a config field"):

        class _Typo(SearchSpace):
            label_smoothing: Annotated[Range | None, Searches("optim.label_smothing")] = None
