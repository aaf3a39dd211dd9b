"""Every search's first trial is the base config's values (Tune's ``points_to_evaluate``), for
both searchers, also where a base value lies outside its domain; a restored searcher does not run
it again. The searchers are Ray's own (``BasicVariantGenerator``, ``OptunaSearch``), built by
``_tune_config`` and driven directly: no Ray cluster."""

from __future__ import annotations

import pytest

from transferkit.config import TuneConfig
from transferkit.tuning.search import _tune_config
from transferkit.tuning.space import param_space, seed_with_base

pytestmark = pytest.mark.usefixtures("no_ray_cluster")

# Base values outside the searched domains: freeze depth 1 is not listed, backbone lr 5e-2 is
# above its range; head lr 5e-3 (the default) lies inside its default range.
OUTSIDE = {
    "model": {"freeze_depth": 1},
    "optim": {"backbone_lr": 5e-2, "epochs": 2},
    "tune": {
        "num_samples": 12,
        "search": {"freeze_depth": [3, 5], "backbone_lr": {"low": 1e-4, "high": 1e-2}},
    },
}
POINT = {"freeze_depth": 1, "backbone_lr": 5e-2, "head_lr": 5e-3}


def _search(searcher: str, data: dict = OUTSIDE):
    cfg = TuneConfig.model_validate({**data, "tune": {**data["tune"], "searcher": searcher}})
    space, point = seed_with_base(param_space(cfg.tune.search, 9, True, distill=False), cfg)
    return cfg, space, point, _tune_config(cfg, 1, point)


def _in_domain(config: dict) -> bool:
    return (
        config["freeze_depth"] in (1, 3, 5)
        and 1e-4 <= config["backbone_lr"] <= 1e-2
        and 1e-3 <= config["head_lr"] <= 3e-2
    )


# ----------------------------------------------------------------------------- random search


def _trials(generator, n: int) -> list:
    out = []
    for _ in range(n):
        trial = generator.next_trial()
        if trial is None:
            break
        generator.on_trial_complete(trial.trial_id)
        out.append(trial)
    return out


def _random_generator(tmp_path, data: dict = OUTSIDE):
    from ray.tune.experiment import Experiment

    cfg, space, point, tune_cfg = _search("random", data)

    def trainable(config):  # never run: the generator only creates trials
        raise AssertionError

    exp = Experiment(
        "search",
        trainable,
        config=space,
        num_samples=cfg.tune.num_samples,
        storage_path=str(tmp_path / "storage"),
    )
    gen = tune_cfg.search_alg
    gen.add_configurations([exp])
    return cfg, space, point, gen


def test_random_search_runs_the_base_values_first_even_outside_the_domains(tmp_path):
    cfg, space, point, gen = _random_generator(tmp_path)
    assert point == POINT and space["freeze_depth"].categories == [1, 3, 5]
    trials = _trials(gen, 100)
    assert len(trials) == cfg.tune.num_samples  # the point is one of the num_samples trials
    first, rest = trials[0], trials[1:]
    assert {k: first.config[k] for k in POINT} == POINT
    assert first.trial_id.endswith("_00000") and first.experiment_tag.split("_")[0] == "0"
    # The others are samples, inside the ranges (the backbone lr never again 5e-2).
    assert all(_in_domain(t.config) and t.config["backbone_lr"] != 5e-2 for t in rest)


def test_a_restored_random_search_does_not_run_the_base_values_again(tmp_path):
    cfg, _, point, gen = _random_generator(tmp_path)
    first = _trials(gen, 1)[0]
    assert {k: first.config[k] for k in point} == point
    gen.save_to_dir(str(tmp_path), "s1")
    # Tuner.restore: the pickled (unused) searcher reloads its saved state; Tune does not call
    # add_configurations on a resumed run.
    fresh = _search("random")[3].search_alg
    assert fresh.has_checkpoint(str(tmp_path))
    fresh.restore_from_dir(str(tmp_path))
    rest = _trials(fresh, 100)
    assert len(rest) == cfg.tune.num_samples - 1
    assert not any({k: t.config[k] for k in point} == point for t in rest)


# ----------------------------------------------------------------------------- Optuna


def _optuna(data: dict = OUTSIDE):
    cfg, space, point, tune_cfg = _search("optuna", data)
    searcher = tune_cfg.search_alg
    # What Tune does with a searcher built without a space: hand it the space, metric and mode.
    assert searcher.set_search_properties(tune_cfg.metric, tune_cfg.mode, space)
    return cfg, point, searcher


def test_optuna_runs_the_base_values_first_even_outside_the_domains():
    cfg, point, searcher = _optuna()
    configs = []
    for i in range(cfg.tune.num_samples):
        # Optuna warns about the backbone lr outside its range and runs it as given.
        configs.append(searcher.suggest(f"t{i}"))
        searcher.on_trial_complete(f"t{i}", {"val_acc": 0.5 + 0.01 * i, "training_iteration": 1})
    assert configs[0] == POINT == point
    # 11 more trials: past TPE's 10 start-up trials, so the model fitted to the out-of-range
    # first trial also samples inside the ranges.
    assert all(_in_domain(c) and c["backbone_lr"] != 5e-2 for c in configs[1:])


def test_a_restored_optuna_search_does_not_run_the_base_values_again(tmp_path):
    _, point, searcher = _optuna()
    assert searcher.suggest("t0") == point
    searcher.on_trial_complete("t0", {"val_acc": 0.9, "training_iteration": 1})
    searcher.save(str(tmp_path / "searcher.pkl"))
    # Tune.restore: set_search_properties on the pickled searcher enqueues the point in a new
    # study, then the saved state (whose queue is empty) replaces it.
    _, _, fresh = _optuna()
    fresh.restore(str(tmp_path / "searcher.pkl"))
    later = [fresh.suggest(f"t{i}") for i in range(1, 4)]
    assert point not in later and all(_in_domain(c) for c in later)


def test_the_search_objective_and_its_direction_follow_tune_metric():
    for metric, mode in (("val_macro_f1", "max"), ("val_balanced_acc", "max"), ("val_loss", "min")):
        data = {**OUTSIDE, "tune": {**OUTSIDE["tune"], "metric": metric}}
        for searcher in ("random", "optuna"):
            tune_cfg = _search(searcher, data)[3]
            assert (tune_cfg.metric, tune_cfg.mode) == (metric, mode)


def test_base_values_inside_the_space_leave_it_as_it_is():
    _, point, searcher = _optuna({"tune": {"search": {"freeze_depth": [0, 2]}}})
    assert (
        searcher.suggest("t0") == point == {"freeze_depth": 0, "backbone_lr": 2e-3, "head_lr": 5e-3}
    )


def test_optuna_refuses_a_categorical_value_outside_its_choices_which_is_why_lists_gain_it():
    """Why :func:`seed_with_base` extends a list: Optuna cannot run a point outside it."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    cfg = TuneConfig.model_validate(OUTSIDE)
    unseeded = param_space(cfg.tune.search, 9, True, distill=False)  # depths [3, 5], no 1
    searcher = OptunaSearch(points_to_evaluate=[POINT], sampler=optuna.samplers.TPESampler(seed=0))
    searcher.set_search_properties("val_acc", "max", unseeded)
    with pytest.raises(ValueError, match="not in"):
        searcher.suggest("t0")
