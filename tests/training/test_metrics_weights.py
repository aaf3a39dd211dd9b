"""Imbalance tools: class weights (vs scikit-learn), confusion-based metrics (vs scikit-learn),
and the confusion matrix summed in the training loop's evaluation."""

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.metrics import confusion_matrix as sk_cm
from sklearn.utils.class_weight import compute_class_weight

from transferkit.metrics import classification_metrics, confusion_matrix
from transferkit.training.evaluate import confusion_from_sums, eval_sums, sums_to_metrics
from transferkit.training.objectives import CrossEntropyObjective, class_weights


def test_balanced_class_weights_match_scikit_learn():
    labels = [0] * 70 + [1] * 25 + [2] * 5 + [-1] * 9  # -1: unlabelled, ignored
    known = np.array([y for y in labels if y >= 0])
    ref = compute_class_weight("balanced", classes=np.arange(3), y=known)
    assert class_weights("balanced", labels, 3).numpy() == pytest.approx(ref, rel=1e-6)
    assert class_weights("sqrt_balanced", labels, 3).numpy() == pytest.approx(
        np.sqrt(ref), rel=1e-6
    )
    assert class_weights("none", labels, 3) is None
    assert class_weights([1.0, 2.0, 3.0], labels, 3).tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="one per class"):
        class_weights([1.0, 2.0], labels, 3)
    with pytest.raises(ValueError, match="no training images"):
        class_weights("balanced", [0, 0, 1], 3)


def test_weighted_cross_entropy_is_the_weighted_mean():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    w = torch.tensor([1.0, 3.0])
    obj = CrossEntropyObjective(0.0, w)
    loss, _ = obj(lambda x: x, logits, labels)
    nll = -torch.log_softmax(logits, 1)[torch.arange(3), labels]
    expected = (w[labels] * nll).sum() / w[labels].sum()  # PyTorch's documented weighted mean
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_classification_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, 4, 300))
    p[p == 3] = 2  # class 3 is never predicted: precision 0 by zero_division=0
    cm = confusion_matrix(y, p, 4)
    assert cm.tolist() == sk_cm(y, p, labels=range(4)).tolist()
    m = classification_metrics(cm, ["a", "b", "c", "d"])
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    prec, rec, f1, sup = precision_recall_fscore_support(y, p, labels=range(4), zero_division=0)
    for i, name in enumerate("abcd"):
        assert m["per_class"][name] == pytest.approx(
            {"precision": prec[i], "recall": rec[i], "f1": f1[i], "support": sup[i]}
        )


def test_macro_f1_counts_a_predicted_class_that_never_occurs_like_scikit_learn():
    y, p = [0, 0, 1, 1], [0, 2, 1, 1]
    m = classification_metrics(confusion_matrix(y, p, 3), ["a", "b", "c"])
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p))


def test_eval_sums_carry_the_confusion_matrix_and_shards_add_up():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 3).eval()
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    pred = model(x).argmax(1)
    full = eval_sums(model, [(x[:40], y[:40]), (x[40:], y[40:])], torch.device("cpu"), 3)
    shards = eval_sums(model, [(x[:40], y[:40])], torch.device("cpu"), 3) + eval_sums(
        model, [(x[40:], y[40:])], torch.device("cpu"), 3
    )
    assert torch.equal(full, shards)
    assert confusion_from_sums(full, 3).tolist() == sk_cm(y, pred, labels=range(3)).tolist()
    m = sums_to_metrics(full, 3, "val")
    assert m["val_acc"] == pytest.approx(accuracy_score(y, pred))
    assert m["val_balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
    empty = eval_sums(model, [], torch.device("cpu"), 3)  # a worker with an empty val shard
    assert empty.shape == full.shape and float(empty.sum()) == 0.0


def test_eval_sums_runs_the_model_without_autograd():
    """Validation must not build a graph: with autograd on, the running sums tensor kept every
    batch's graph alive (a 2-worker ELPV run reached 10 GB per worker and was OOM-killed)."""
    model = torch.nn.Linear(5, 3).eval()
    seen: list[bool] = []
    model.register_forward_hook(lambda m, i, o: seen.append(o.requires_grad))
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    sums = eval_sums(model, [(x, y), (x, y)], torch.device("cpu"), 3)
    assert seen == [False, False]
    assert not sums.requires_grad
