"""ImageFolder discovery and seeded, stratified splits (torch-free).

A dataset folder is either pre-split (``train/``, ``val/``, ``test/``, each ``<class>/<image>``) or
one ``<class>/<image>`` tree that :func:`resolve_splits` splits by class with a seeded RNG.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from transferkit.errors import TransferkitError
from transferkit.imaging import IMAGE_EXTENSIONS

__all__ = [
    "Sample",
    "Splits",
    "scan_folder",
    "scan_images",
    "dataset_folder",
    "data_home",
    "stratified_split",
    "resolve_splits",
    "DatasetError",
]

log = logging.getLogger(__name__)

Sample = tuple[str, int]  # (absolute path, class index)


class DatasetError(TransferkitError, ValueError):
    """The dataset argument is neither a bundled name nor a usable ImageFolder."""


@dataclass
class Splits:
    """File lists per split; paths are absolute strings, labels index ``class_names``."""

    class_names: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    source: str = ""
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(
            {
                "class_names": self.class_names,
                "source": self.source,
                "train": self.train,
                "val": self.val,
                "test": self.test,
                "skipped": self.skipped,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Splits:
        d = json.loads(text)
        conv = lambda xs: [(str(p), int(y)) for p, y in xs]  # noqa: E731
        return cls(
            d["class_names"],
            conv(d["train"]),
            conv(d["val"]),
            conv(d["test"]),
            d.get("source", ""),
            list(d.get("skipped", [])),
        )

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _class_dirs(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def scan_folder(
    root: str | Path, class_names: list[str] | None = None
) -> tuple[list[str], list[Sample]]:
    """List ``root/<class>/*`` image files.

    Args:
        root: folder with one sub-folder per class.
        class_names: fix the class order (e.g. the train split's); ``None`` = sorted sub-folders.

    Returns:
        ``(class_names, samples)`` with samples sorted by path.

    Raises:
        DatasetError: no class folders, no images, or a class folder absent from ``class_names``.
    """
    root = Path(root)
    dirs = _class_dirs(root)
    if not dirs:
        raise DatasetError(f"{root} holds no class folders (expected {root}/<class>/<image>.png)")
    names = class_names if class_names is not None else [d.name for d in dirs]
    index = {n: i for i, n in enumerate(names)}
    samples: list[Sample] = []
    for d in dirs:
        if d.name not in index:
            raise DatasetError(f"{d} is a class not in the training classes {names}")
        for f in sorted(d.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                samples.append((str(f.resolve()), index[d.name]))
    if not samples:
        raise DatasetError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return names, samples


def scan_images(root: str | Path) -> list[str]:
    """Every image file below ``root`` (any layout; sub-folder names are ignored), sorted.

    Raises:
        DatasetError: ``root`` is not a folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    return sorted(
        str(f.resolve())
        for f in root.rglob("*")
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
    )


def stratified_split(
    samples: list[Sample], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Split per class with a seeded shuffle: each class contributes ``round(n * fraction)`` to val
    and test (at least one when the fraction is > 0 and the class has >= 3 images).

    Returns:
        ``(train, val, test)``, each sorted by path.
    """
    rng = random.Random(seed)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    train: list[Sample] = []
    val: list[Sample] = []
    test: list[Sample] = []
    for label in sorted(by_class):
        items = sorted(by_class[label])
        rng.shuffle(items)
        n = len(items)
        n_val = int(round(n * val_fraction))
        n_test = int(round(n * test_fraction))
        if n >= 3:
            n_val = max(n_val, 1 if val_fraction > 0 else 0)
            n_test = max(n_test, 1 if test_fraction > 0 else 0)
        val += items[:n_val]
        test += items[n_val : n_val + n_test]
        train += items[n_val + n_test :]
    return sorted(train), sorted(val), sorted(test)


def data_home() -> Path:
    """Where bundled datasets are written as PNG folders: ``$TRANSFERKIT_HOME/datasets``
    (default ``~/.cache/transferkit/datasets``), shared by every run."""
    root = os.environ.get("TRANSFERKIT_HOME") or Path.home() / ".cache" / "transferkit"
    return Path(root).expanduser() / "datasets"


def dataset_folder(dataset: str) -> Path:
    """The folder ``--dataset`` names: an existing path as given, else a bundled dataset's
    cached PNG folder (written once, atomically, on first use).

    Raises:
        DatasetError: neither an existing folder nor a bundled name.
    """
    from transferkit.data.bundled import BUNDLED, materialize

    path = Path(dataset).expanduser()
    if path.exists():
        return path.resolve()
    if dataset not in BUNDLED:
        raise DatasetError(
            f"--dataset {dataset!r} is neither an existing folder nor a bundled dataset "
            f"(bundled: {', '.join(sorted(BUNDLED))})"
        )
    path = data_home() / dataset
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}-", dir=path.parent))
        materialize(dataset, tmp, overwrite=True)
        try:
            tmp.rename(path)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return path.resolve()


def resolve_splits(dataset: str, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Turn ``--dataset`` into file lists.

    Args:
        dataset: a bundled name (see :func:`dataset_folder`) or a folder.
        val_fraction, test_fraction: used when the folder is not pre-split.
        seed: split seed.

    Raises:
        DatasetError: unknown name / missing folder / empty folder / inconsistent pre-split.
    """
    path = dataset_folder(dataset)
    if not path.is_dir():
        raise DatasetError(f"--dataset {dataset!r} is not a folder")
    if (path / "train").is_dir():
        names, train = scan_folder(path / "train")
        val = scan_folder(path / "val", names)[1] if (path / "val").is_dir() else []
        test = scan_folder(path / "test", names)[1] if (path / "test").is_dir() else []
        if not val:
            train, val, _ = stratified_split(train, val_fraction, 0.0, seed)
        return Splits(names, train, val, test, source=str(path.resolve()))
    names, samples = scan_folder(path)
    if len(names) < 2:
        raise DatasetError(f"{path} has {len(names)} class folder(s); a classifier needs >= 2")
    train, val, test = stratified_split(samples, val_fraction, test_fraction, seed)
    return Splits(names, train, val, test, source=str(path.resolve()))
