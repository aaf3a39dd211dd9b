"""Datasets: bundled real data, ImageFolders, splits and transforms.

Torch-free entry points are importable from here; the torch datasets live in
``transferkit.data.dataset``.
"""

from transferkit.data.bundled import BUNDLED, materialize
from transferkit.data.folder import (
    DatasetError,
    Splits,
    resolve_splits,
    scan_folder,
    stratified_split,
)

__all__ = [
    "BUNDLED",
    "materialize",
    "DatasetError",
    "Splits",
    "resolve_splits",
    "scan_folder",
    "stratified_split",
]
