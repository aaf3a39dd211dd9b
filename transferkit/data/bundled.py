"""Bundled real datasets, shipped by installed packages (no download at run time).

``digits``: scikit-learn's copy of the UCI handwritten digits (Alpaydin & Kaynak 1998): 1,797
greyscale 8x8 images, 10 classes, pixel values 0..16.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["BUNDLED", "materialize", "load_digits_arrays"]


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return ``(images uint8 [1797, 8, 8] in 0..255, labels int64 [1797], class names '0'..'9')``.

    Pixel values 0..16 are scaled by 255/16 and rounded (ink is bright, background dark).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, d.target.astype(np.int64), [str(c) for c in d.target_names]


BUNDLED = {"digits": load_digits_arrays}


def materialize(name: str, out_dir: str | Path, overwrite: bool = False) -> dict[str, int]:
    """Write a bundled dataset as an ImageFolder: ``out_dir/<class>/<name>_<index>.png``.

    Args:
        name: a key of :data:`BUNDLED`.
        out_dir: destination folder (created).
        overwrite: allow a non-empty destination.

    Returns:
        Number of images written per class.

    Raises:
        ValueError: unknown name (the message lists the known ones).
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
    """
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled dataset {name!r}; known: {', '.join(sorted(BUNDLED))}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose another folder or pass --overwrite")
    images, labels, classes = BUNDLED[name]()
    counts: dict[str, int] = {}
    for idx, (img, label) in enumerate(zip(images, labels)):
        cls = classes[int(label)]
        (out / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(out / cls / f"{name}_{idx:05d}.png")
        counts[cls] = counts.get(cls, 0) + 1
    return counts
