"""Config validation: a bad value names the field, the value and what is allowed."""

import pytest

from transferkit.config import ConfigError, FinetuneConfig, Preprocessing, load_config, save_config


def test_unknown_optimizer_names_field_and_allowed_values():
    with pytest.raises(ConfigError) as e:
        load_config(FinetuneConfig, None, {"optim": {"optimizer": "adam"}})
    msg = str(e.value)
    assert "optim.optimizer" in msg and "adamw" in msg and "sgd" in msg and '"adam"' in msg


def test_negative_learning_rate_is_refused():
    with pytest.raises(ConfigError, match=r"optim\.head_lr"):
        load_config(FinetuneConfig, None, {"optim": {"head_lr": -1.0}})


def test_typo_in_yaml_is_an_error(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match=r"optim\.epocs: unknown field"):
        load_config(FinetuneConfig, p)


def test_flags_override_file_and_none_keeps_file_value(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  epochs: 3\n  batch_size: 8\nmodel:\n  arch: resnet18\n")
    cfg = load_config(FinetuneConfig, p, {"optim": {"epochs": 5, "batch_size": None}})
    assert (cfg.optim.epochs, cfg.optim.batch_size, cfg.model.arch) == (5, 8, "resnet18")


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(FinetuneConfig, None, {"model": {"freeze_depth": 3}, "seed": 7})
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(FinetuneConfig, tmp_path / "c.yaml") == cfg


def test_weights_none_string_means_random_init():
    cfg = load_config(FinetuneConfig, None, {"model": {"weights": "none"}})
    assert cfg.model.weights is None


def test_preprocessing_mean_std_length_must_match_channels():
    with pytest.raises(ValueError, match="one value per channel"):
        Preprocessing(channels=1, mean=(0.5, 0.5, 0.5), std=(0.5,))


def test_missing_config_file_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(FinetuneConfig, tmp_path / "nope.yaml")


def test_flags_not_given_never_reach_validation():
    """Nested ``None`` overrides (options not given) are dropped even without a config file."""
    cfg = load_config(
        FinetuneConfig,
        None,
        {"data": {"dataset": None, "augment": {"hflip": None}}, "model": {"arch": "resnet18"}},
    )
    assert cfg.data.dataset == "digits" and cfg.model.arch == "resnet18"


def test_a_section_written_as_a_plain_value_is_an_error_even_with_empty_overrides(tmp_path):
    """``model: resnet18`` (instead of ``model: {arch: resnet18}``) must not silently fall back
    to the default model when the CLI passes its (all-None) nested overrides."""
    p = tmp_path / "c.yaml"
    p.write_text("model: resnet18\n")
    with pytest.raises(ConfigError, match=r"model: Input should be a valid dictionary"):
        load_config(FinetuneConfig, p, {"model": {"arch": None, "weights": None}})


def test_a_misspelled_key_suggests_the_field_it_resembles():
    from transferkit.config import PipelineConfig, validate

    with pytest.raises(
        ConfigError,
        match=r"student\.kd\.temprature: unknown field; did you mean "
        r"student\.kd\.temperature\?.*known here: temperature",
    ):
        validate(PipelineConfig, {"student": {"kd": {"temprature": 3}}})
    with pytest.raises(
        ConfigError, match=r"teacher\.tune\.serch: .*did you mean teacher\.tune\.search\?"
    ):
        validate(PipelineConfig, {"teacher": {"tune": {"serch": {}}}})


def test_a_partial_student_section_keeps_the_student_defaults_and_the_fields_limits():
    from transferkit.config import DistillConfig, PipelineConfig, validate

    cfg = validate(DistillConfig, {"teacher": "t", "model": {"freeze_depth": 1}, "optim": {}})
    assert (cfg.model.arch, cfg.model.weights, cfg.model.width_mult) == (
        "mobilenet_v3_small",
        None,
        0.5,
    )
    cfg = validate(DistillConfig, {"teacher": "t", "model": {"arch": "resnet18"}})
    assert (cfg.model.arch, cfg.model.weights) == ("resnet18", None)
    assert (cfg.optim.epochs, cfg.optim.head_lr, cfg.optim.label_smoothing) == (30, 3e-3, 0.0)
    student = validate(PipelineConfig, {"student": {"optim": {"epochs": 4}}}).student
    assert (student.optim.epochs, student.optim.weight_decay, student.model.width_mult) == (
        4,
        0.05,
        0.5,
    )
    with pytest.raises(ConfigError, match=r"model\.width_mult: Input should be less than or equal"):
        validate(DistillConfig, {"teacher": "t", "model": {"width_mult": 5}})


def test_configs_with_stage_defaults_pickle_with_their_types():
    import pickle

    from transferkit.config import DistillTuneConfig

    cfg = DistillTuneConfig.model_validate({"teacher": "t", "scaling": {"num_workers": 2}})
    assert cfg.scaling.cpus_per_worker == 0.99  # a partial trial scaling keeps 0.99 CPU
    back = pickle.loads(pickle.dumps(cfg))
    assert back == cfg and type(back.model).__name__ == "StudentModel"


def test_the_students_half_width_belongs_to_the_default_student():
    """MobileNetV3-small x0.5 is the default student; naming another architecture without a
    width gives the standard 1.0 (resnet18 has no other), in a file and on the command line."""
    from transferkit.config import DistillConfig, DistillTuneConfig

    assert DistillConfig(teacher="t").model.width_mult == 0.5
    for cls in (DistillConfig, DistillTuneConfig):
        assert (
            cls.model_validate({"teacher": "t", "model": {"arch": "resnet18"}}).model.width_mult
            == 1.0
        )
    given = DistillConfig.model_validate(
        {"teacher": "t", "model": {"arch": "mobilenet_v2", "width_mult": 0.75}}
    )
    assert given.model.width_mult == 0.75
