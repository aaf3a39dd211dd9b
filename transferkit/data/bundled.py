"""Bundled real datasets, shipped by installed packages (no download at run time).

``digits``: scikit-learn's copy of the UCI handwritten digits (Alpaydin & Kaynak 1998): 1,797
greyscale 8x8 images, 10 classes, pixel values 0..16.

``elpv`` (and ``elpv-severity``, ``elpv-type``): the ELPV benchmark of electroluminescence images
of solar cells (Buerhop-Lutz et al. 2018; Deitsch et al., "Automatic classification of defective
photovoltaic module cells in electroluminescence images", Solar Energy 2019), shipped by the PyPI
package ``elpv-dataset`` (``pip install 'transferkit[datasets]'``): 2,624 cells, 300x300 8-bit
grey, cut from 44 modules, each with an expert's defect probability (0, 1/3, 2/3, 1) and its cell
type (mono- or polycrystalline). Data licence CC BY-NC-SA 4.0: it is read from the installed
package, never copied into a repository. Label schemes (:data:`ELPV_SCHEMES`):

* ``defect`` (``elpv``): ``functional`` / ``defective``, defective when the probability is >= 0.5
  (the paper's threshold);
* ``severity`` (``elpv-severity``): ``p000``, ``p033``, ``p067``, ``p100``;
* ``type`` (``elpv-type``): ``mono`` / ``poly``.

Materialized files are named ``<type>_cellNNNN.png`` (the package's own file name behind the cell
type), so a cell's id and type survive any relabelling.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from transferkit.errors import TransferkitError, UsageError

__all__ = [
    "BUNDLED",
    "ELPV_SCHEMES",
    "ElpvCell",
    "MissingExtraError",
    "materialize",
    "load_digits_arrays",
    "elpv_cells",
    "elpv_label",
]


class MissingExtraError(TransferkitError, ImportError):
    """A bundled dataset's package is not installed; the message names the extra to install."""


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Return ``(images uint8 [1797, 8, 8] in 0..255, labels int64 [1797], class names '0'..'9')``.

    Pixel values 0..16 are scaled by 255/16 and rounded (ink is bright, background dark).
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return images, d.target.astype(np.int64), [str(c) for c in d.target_names]


@dataclass(frozen=True)
class ElpvCell:
    """One ELPV cell as ``labels.csv`` describes it.

    Attributes:
        path: the installed PNG (300x300, 8-bit grey).
        probability: the expert's defect probability, one of 0, 1/3, 2/3, 1.
        cell_type: ``mono`` or ``poly``.
    """

    path: Path
    probability: float
    cell_type: str

    @property
    def file_name(self) -> str:
        """``<type>_cellNNNN.png``."""
        return f"{self.cell_type}_{self.path.name}"


ELPV_SCHEMES: dict[str, list[str]] = {
    "defect": ["functional", "defective"],
    "severity": ["p000", "p033", "p067", "p100"],
    "type": ["mono", "poly"],
}


def elpv_label(cell: ElpvCell, scheme: str) -> str:
    """The class name of ``cell`` under ``scheme`` (a key of :data:`ELPV_SCHEMES`).

    Raises:
        ValueError: unknown scheme (the message lists the known ones).
    """
    if scheme == "defect":
        return "defective" if cell.probability >= 0.5 else "functional"
    if scheme == "severity":
        return f"p{int(round(cell.probability * 100)):03d}"
    if scheme == "type":
        return cell.cell_type
    raise UsageError(f"unknown ELPV label scheme {scheme!r}; known: {', '.join(ELPV_SCHEMES)}")


def _elpv_root() -> Path:
    try:
        import elpv_dataset  # noqa: PLC0415
    except ImportError as exc:
        raise MissingExtraError(
            "the ELPV dataset needs the package elpv-dataset: pip install 'transferkit[datasets]' "
            "(or pip install elpv-dataset==1.0.0.post1); `make setup` installs it"
        ) from exc
    return Path(elpv_dataset.__file__).parent / "data"


def elpv_cells() -> list[ElpvCell]:
    """Every cell of the installed ELPV package, in ``labels.csv`` order (2,624).

    Raises:
        MissingExtraError: ``elpv-dataset`` is not installed.
        FileNotFoundError: the package lacks ``labels.csv`` or an image it lists.
    """
    root = _elpv_root()
    cells = []
    for line in (root / "labels.csv").read_text().splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        rel, prob, cell_type = parts
        path = root / rel
        if not path.is_file():
            raise FileNotFoundError(f"elpv-dataset lists {rel} but {path} is missing; reinstall it")
        cells.append(ElpvCell(path, float(prob), cell_type))
    return cells


def _elpv_writer(scheme: str) -> Callable[[Path], dict[str, int]]:
    def write(out: Path) -> dict[str, int]:
        counts = {c: 0 for c in ELPV_SCHEMES[scheme]}
        for cls in counts:
            (out / cls).mkdir(parents=True, exist_ok=True)
        for cell in elpv_cells():
            cls = elpv_label(cell, scheme)
            shutil.copyfile(cell.path, out / cls / cell.file_name)  # the package's PNG, unchanged
            counts[cls] += 1
        return counts

    return write


def _digits_writer(out: Path) -> dict[str, int]:
    images, labels, classes = load_digits_arrays()
    counts: dict[str, int] = {}
    for idx, (img, label) in enumerate(zip(images, labels)):
        cls = classes[int(label)]
        (out / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(out / cls / f"digits_{idx:05d}.png")
        counts[cls] = counts.get(cls, 0) + 1
    return counts


BUNDLED: dict[str, Callable[[Path], dict[str, int]]] = {
    "digits": _digits_writer,
    "elpv": _elpv_writer("defect"),
    "elpv-severity": _elpv_writer("severity"),
    "elpv-type": _elpv_writer("type"),
}
"""Bundled dataset name -> writer of its ImageFolder (``out/<class>/<file>.png``)."""


def materialize(name: str, out_dir: str | Path, overwrite: bool = False) -> dict[str, int]:
    """Write a bundled dataset as an ImageFolder: ``out_dir/<class>/<file>.png``.

    Args:
        name: a key of :data:`BUNDLED`.
        out_dir: destination folder (created).
        overwrite: allow a non-empty destination.

    Returns:
        Number of images written per class.

    Raises:
        ValueError: unknown name (the message lists the known ones).
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is false.
        MissingExtraError: the dataset's package is not installed (names the extra).
    """
    if name not in BUNDLED:
        raise UsageError(f"unknown bundled dataset {name!r}; known: {', '.join(sorted(BUNDLED))}")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; choose another folder or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return BUNDLED[name](out)
