"""Hinton KD loss and the fixed-teacher contract (no Ray needed)."""

import pytest
import torch
from torch.nn import functional as F

from transferkit.config import ModelConfig, Preprocessing
from transferkit.models import build_model, set_train_mode
from transferkit.models.portable import save_portable
from transferkit.training.kd import UNLABELED, HintPair, KDObjective, kd_loss, make_kd_objective


@pytest.mark.parametrize("T", [0.5, 1.0, 4.0, 20.0])
def test_soft_term_is_zero_when_student_equals_teacher(T):
    logits = torch.randn(8, 10)
    _, parts = kd_loss(logits.clone(), logits.clone(), None, T, 0.0, 1.0)
    assert abs(float(parts["soft"])) < 1e-6


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_soft_gradient_matches_the_closed_form(T):
    torch.manual_seed(0)
    s = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 5, dtype=torch.float64)
    loss, _ = kd_loss(s, t, None, T, hard_weight=0.0, soft_weight=1.0)
    loss.backward()
    expected = T * (F.softmax(s.detach() / T, 1) - F.softmax(t / T, 1)) / s.shape[0]
    torch.testing.assert_close(s.grad.double(), expected.double(), rtol=1e-5, atol=1e-7)


def test_soft_term_carries_t_squared():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    T = 3.0
    kl = (F.softmax(t / T, 1) * (F.log_softmax(t / T, 1) - F.log_softmax(s / T, 1))).sum(1).mean()
    _, parts = kd_loss(s, t, None, T, 0.0, 1.0)
    torch.testing.assert_close(parts["soft"], kl * T**2)


def test_the_two_weights_do_what_their_names_say():
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 2, 1, 1])
    ce = F.cross_entropy(s, y)
    _, parts = kd_loss(s, t, y, 2.0, 1.0, 1.0)
    only_hard, _ = kd_loss(s, t, y, 2.0, 0.7, 0.0)
    only_soft, _ = kd_loss(s, t, y, 2.0, 0.0, 0.3)
    both, _ = kd_loss(s, t, y, 2.0, 0.7, 0.3)
    torch.testing.assert_close(only_hard, 0.7 * ce)
    torch.testing.assert_close(only_soft, 0.3 * parts["soft"])
    torch.testing.assert_close(both, 0.7 * ce + 0.3 * parts["soft"])


def test_unlabelled_samples_only_contribute_the_soft_term():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, UNLABELED, 2, UNLABELED])
    _, parts = kd_loss(s, t, y, 2.0, 1.0, 1.0)
    torch.testing.assert_close(parts["hard"], F.cross_entropy(s[[0, 2]], y[[0, 2]]))
    _, none_labelled = kd_loss(s, t, torch.full((4,), UNLABELED), 2.0, 1.0, 1.0)
    assert float(none_labelled["hard"]) == 0.0


def test_temperature_must_be_positive():
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 3), None, 0.0, 1.0, 1.0)


def _smoothed_ce(logits, labels, eps, weight=None):
    """Label-smoothed CE written out (Szegedy et al. 2016; torch's weighted mean convention)."""
    logp = F.log_softmax(logits, 1)
    k = logits.shape[1]
    w = torch.ones(k) if weight is None else weight
    per = (
        -(1 - eps) * logp.gather(1, labels[:, None])[:, 0] - eps / k * (w * logp).sum(1) / w[labels]
    )
    return (w[labels] * per).sum() / w[labels].sum()


def test_hard_term_smooths_labels_like_the_label_only_objective():
    torch.manual_seed(0)
    s, t, y = torch.randn(6, 4), torch.randn(6, 4), torch.tensor([0, 1, 2, 3, UNLABELED, 1])
    _, parts = kd_loss(s, t, y, 2.0, 1.0, 0.0, label_smoothing=0.2)
    keep = y != UNLABELED
    assert parts["hard"] == pytest.approx(_smoothed_ce(s[keep], y[keep], 0.2).item(), rel=1e-5)


@pytest.mark.parametrize("class_weighted", [False, True])
def test_distillation_config_label_smoothing_reaches_the_hard_term(tmp_path, class_weighted):
    from transferkit.config import DistillConfig

    teacher = _teacher_file(tmp_path)
    cfg = DistillConfig.model_validate(
        {"teacher": str(teacher), "data": {"dataset": "digits"}, "optim": {"label_smoothing": 0.3}}
    )
    obj = make_kd_objective(cfg)
    obj.hard_weight, obj.soft_weight = 1.0, 0.0
    weight = torch.tensor([2.0] + [1.0] * 9) if class_weighted else None
    obj.class_weight = weight
    obj.setup(torch.device("cpu"))
    torch.manual_seed(2)  # any student with non-uniform logits will do: the hard term is checked
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 3, 0, 9])
    loss, logits = obj(student, x, y)
    assert loss.item() == pytest.approx(_smoothed_ce(logits, y, 0.3, weight).item(), rel=1e-5)


def _teacher_file(tmp_path):
    torch.manual_seed(1)
    t = build_model(ModelConfig(arch="mobilenet_v3_small", weights=None, width_mult=0.5), 10).model
    # make BN statistics non-trivial so that a moving statistic would be visible
    t.train()
    with torch.no_grad():
        t(torch.randn(8, 3, 32, 32))
    return save_portable(
        tmp_path / "teacher.pt",
        t,
        "mobilenet_v3_small",
        [str(i) for i in range(10)],
        Preprocessing(input_size=32),
        width_mult=0.5,
    )


@pytest.mark.parametrize(
    "hints,mixup", [([], 0.0), ([HintPair("stage3", "stage4")], 0.0), ([], 0.5)]
)
def test_teacher_stays_fixed_during_distillation_steps(tmp_path, hints, mixup):
    obj = KDObjective(
        str(_teacher_file(tmp_path)), 4.0, 0.5, 0.5, hints, 1.0 if hints else 0.0, mixup_alpha=mixup
    )
    obj.setup(torch.device("cpu"))
    before = {k: v.clone() for k, v in obj.teacher.state_dict().items()}
    built = build_model(ModelConfig(arch="mobilenet_v3_small", weights=None, width_mult=0.5), 10)
    student = built.model
    extras = obj.extra_modules(student, built.spec, (3, 32, 32)) if hints else None
    params = list(student.parameters()) + (list(extras.parameters()) if extras else [])
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(3):
        set_train_mode(student, [])
        x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
        loss, logits = obj(student, x, y, extras) if hints else obj(student, x, y)
        assert logits.shape == (8, 10)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert not obj.teacher.training
    for k, v in obj.teacher.state_dict().items():
        assert torch.equal(v, before[k]), f"teacher {k} changed"
    assert all(p.grad is None and not p.requires_grad for p in obj.teacher.parameters())
    if hints:
        assert all(p.grad is not None for p in extras.parameters())


def test_mixup_feeds_teacher_and_student_the_same_mixed_images(tmp_path):
    obj = KDObjective(str(_teacher_file(tmp_path)), 2.0, 1.0, 1.0, mixup_alpha=1.0)
    obj.setup(torch.device("cpu"))
    seen = []
    obj.teacher.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    student = build_model(
        ModelConfig(arch="mobilenet_v3_small", weights=None, width_mult=0.5), 10
    ).model
    student.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    x = torch.randn(6, 3, 32, 32)
    torch.manual_seed(3)
    obj(student.train(), x, torch.tensor([0, 1, 2, UNLABELED, 4, 5]))
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[0], x)


def test_distillation_reuses_the_teachers_splits_for_a_bundled_dataset(tmp_path):
    """A teacher trained on `--dataset digits`: the student must see the same test images, and
    nothing may be written into the (not yet created) student run folder before its checks."""
    import yaml

    from transferkit.config import DistillConfig
    from transferkit.data import resolve_splits
    from transferkit.training.distillation import _resolve_student_splits

    teacher = tmp_path / "teacher"
    teacher.mkdir()
    splits = resolve_splits("digits", 0.1, 0.1, seed=0)
    (teacher / "splits.json").write_text(splits.to_json())
    (teacher / "config.yaml").write_text(yaml.safe_dump({"data": {"dataset": "digits"}}))
    run = tmp_path / "student"
    cfg = DistillConfig(teacher=str(teacher), output=str(run))
    got = _resolve_student_splits(cfg)
    assert got.test == splits.test and got.train == splits.train
    assert not run.exists()


def test_a_missing_transfer_folder_names_the_option(tmp_path):
    from transferkit.config import ConfigError, DistillConfig
    from transferkit.training.distillation import _resolve_student_splits

    cfg = DistillConfig(
        teacher=str(tmp_path), unlabeled=str(tmp_path / "nope"), output=str(tmp_path / "s")
    )
    with pytest.raises(ConfigError, match=r"unlabeled \(--unlabeled\)"):
        _resolve_student_splits(cfg)


def test_tta_targets_are_the_teachers_logits_averaged_over_the_d4_views(digits_dir):
    """``kd.teacher_tta: d4``: each training image's target is the teacher's logits averaged
    over its 8 rotations and flips, computed here independently (torchvision preprocessing, the
    views written out with torch.rot90 / torch.flip), and a batch's targets are its rows."""
    from helpers import torchvision_eval_transform
    from PIL import Image

    samples = [(str(p), int(p.parent.name)) for p in sorted(digits_dir.rglob("*.png"))[::180]]
    obj = KDObjective("unused.pt", 2.0, 0.0, 1.0, teacher_tta="d4")
    torch.manual_seed(0)  # a teacher whose answer depends on where the pixels are
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10)).eval()
    obj.teacher = teacher
    prep = Preprocessing(input_size=32)
    obj.cache_targets(samples, prep)
    tf = torchvision_eval_transform(prep)
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p, _ in samples])
    views = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
    views += [torch.flip(v, dims=(3,)) for v in views]
    with torch.no_grad():
        expected = torch.stack([teacher(v) for v in views]).mean(0)
    assert torch.allclose(obj.teacher.table, expected, atol=1e-4)
    assert (expected - teacher(x).detach()).abs().max() > 0.1  # the views matter

    torch.manual_seed(1)  # a student whose answers differ per image, so rows cannot be swapped
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    idx = torch.tensor([3, 0, 7])
    loss, logits = obj(student, (x[idx], idx), torch.tensor([samples[i][1] for i in idx]))
    want, _ = kd_loss(logits, expected[idx], None, 2.0, 0.0, 1.0)
    assert loss.item() == pytest.approx(want.item(), rel=1e-5)


def test_tta_targets_refuse_hints_and_mixup():
    from transferkit.config import ConfigError, DistillConfig, validate

    with pytest.raises(ConfigError, match=r"teacher_tta.*mixup"):
        validate(DistillConfig, {"teacher": "t", "kd": {"teacher_tta": "d4"}})
    ok = validate(DistillConfig, {"teacher": "t", "kd": {"teacher_tta": "d4", "mixup_alpha": 0}})
    assert ok.kd.teacher_tta == "d4"
