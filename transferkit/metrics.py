"""Classification metrics from a confusion matrix (numpy only: training, export checks, the
``evaluate`` command and the reports all use these, so a figure means the same everywhere).

Definitions follow scikit-learn's ``metrics`` module (``balanced_accuracy_score``,
``precision_recall_fscore_support`` with ``zero_division=0``): rows of the confusion matrix are the
true classes, columns the predicted ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["softmax", "confusion_matrix", "classification_metrics"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, in float64.

    Args:
        logits: ``[..., K]`` array of any float dtype.

    Returns:
        float64 ``[..., K]`` probabilities in [0, 1], summing to 1 along the last axis.
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as ``j``.

    Args:
        y_true / y_pred: class indices in ``0..num_classes-1`` (same length).

    Returns:
        int64 array ``[num_classes, num_classes]``.

    Raises:
        ValueError: lengths differ or an index is out of range.
    """
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred {p.size}")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def classification_metrics(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro F1 and per-class precision/recall/F1 of a confusion
    matrix.

    Balanced accuracy is the mean recall over the classes that occur (Brodersen et al. 2010;
    scikit-learn's ``balanced_accuracy_score``); macro F1 the unweighted mean F1 over the classes
    that occur or are predicted (scikit-learn's ``f1_score(average="macro")``, which takes the
    union of the labels in both). A class never predicted has precision 0 (scikit-learn's
    ``zero_division=0``).

    Args:
        confusion: ``[K, K]`` counts, rows = true class, columns = predicted.
        class_names: ``K`` names.

    Returns:
        ``{"accuracy", "balanced_accuracy", "macro_f1", "images", "classes", "per_class":
        {name: {"precision", "recall", "f1", "support"}}, "confusion_matrix": [[...], ...]}``
        (fractions in [0, 1]).

    Raises:
        ValueError: the matrix is not ``K x K``.
    """
    c = np.asarray(confusion, dtype=np.float64)
    k = len(class_names)
    if c.shape != (k, k):
        raise ValueError(f"confusion matrix is {c.shape}, expected ({k}, {k}) for {k} classes")
    tp = np.diag(c)
    support = c.sum(axis=1)
    predicted = c.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = support > 0
    n = c.sum()
    return {
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present | (predicted > 0)].mean()) if n else 0.0,
        "images": int(n),
        "classes": list(class_names),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": c.astype(np.int64).tolist(),
    }
