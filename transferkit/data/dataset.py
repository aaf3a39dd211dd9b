"""PyTorch datasets and transforms built from a :class:`~transferkit.config.Preprocessing`.

Evaluation uses :func:`transferkit.imaging.preprocess` (the same numpy code serving runs), so
training, export validation and serving see identical tensors. Training adds PIL-level
augmentation (torchvision v1 transforms on PIL images) before that same function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from transferkit.config import AugmentConfig, Preprocessing
from transferkit.imaging import ImageDecodeError, load_image, preprocess, to_mode

__all__ = [
    "ImageListDataset",
    "RandomRot90",
    "BalancedDistributedSampler",
    "build_augment",
    "build_transform",
    "build_pair_transform",
    "verify_images",
]

log = logging.getLogger(__name__)


def _check(path: str) -> str | None:
    """``None`` when the file decodes through the one decode path (``load_image``: serving's), else
    why not; ambiguous images (a float image outside [0, 1], ...) are refused as serving does."""
    try:
        with Image.open(path) as img:
            img.verify()  # structure and checksums; load_image then decodes the pixels
        load_image(path)
        return None
    except ImageDecodeError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - any failure means unusable
        return f"{path}: {exc.__class__.__name__}: {exc}"


def verify_images(
    samples: Sequence[tuple[str, int]], threads: int = 8
) -> tuple[list[tuple[str, int]], list[str]]:
    """Decode every image once; drop the unreadable ones with a warning naming each.

    Returns:
        ``(good samples, list of "path: reason" for skipped files)``.
    """
    with ThreadPoolExecutor(max_workers=threads) as pool:
        problems = list(pool.map(_check, [p for p, _ in samples]))
    good = [s for s, prob in zip(samples, problems) if prob is None]
    bad = [prob for prob in problems if prob is not None]
    for prob in bad:
        log.warning("skipping unreadable image %s", prob)
    if bad:
        log.warning("skipped %d unreadable image(s) of %d", len(bad), len(samples))
    return good, bad


class RandomRot90:
    """Rotate a PIL image by 0, 90, 180 or 270 degrees, chosen uniformly (lossless: a transpose,
    no resampling). Draws from Python's ``random`` like torchvision's v1 transforms do."""

    _OPS = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)

    def __call__(self, img: Image.Image) -> Image.Image:
        import random

        op = self._OPS[random.randrange(4)]
        return img if op is None else img.transpose(op)

    def __repr__(self) -> str:
        return "RandomRot90()"


def build_augment(augment: AugmentConfig | None) -> Callable[[Image.Image], Image.Image]:
    """Return the training augmentation ``PIL -> PIL``: lossless symmetries first (90-degree
    rotations, horizontal and vertical flips), then the random affine (rotation, translation,
    scale), then photometric jitter (colour, then brightness/contrast); the identity when
    ``augment`` is ``None`` or disabled."""
    from torchvision import transforms as T

    ops: list[Callable] = []
    if augment is not None and augment.enabled:
        if augment.rot90:
            ops.append(RandomRot90())
        if augment.hflip:
            ops.append(T.RandomHorizontalFlip())
        if augment.vflip:
            ops.append(T.RandomVerticalFlip())
        if (
            augment.rotation_deg
            or augment.translate
            or augment.scale_min != 1
            or augment.scale_max != 1
        ):
            ops.append(
                T.RandomAffine(
                    degrees=augment.rotation_deg,
                    translate=(augment.translate, augment.translate) if augment.translate else None,
                    scale=(augment.scale_min, augment.scale_max),
                    interpolation=T.InterpolationMode.BILINEAR,
                )
            )
        if augment.color_jitter:
            j = augment.color_jitter
            ops.append(T.ColorJitter(brightness=j, contrast=j, saturation=j))
        if augment.brightness or augment.contrast:
            ops.append(T.ColorJitter(brightness=augment.brightness, contrast=augment.contrast))
    return T.Compose(ops) if ops else (lambda img: img)


def build_transform(
    prep: Preprocessing, augment: AugmentConfig | None
) -> Callable[[Image.Image], torch.Tensor]:
    """Return ``PIL image -> float32 tensor [C, H, W]``: :func:`build_augment` (training only)
    then :func:`preprocess`."""
    aug = build_augment(augment)

    def transform(img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(preprocess(aug(to_mode(img, prep.channels, prep.background)), prep))

    return transform


def build_pair_transform(
    prep: Preprocessing, other: Preprocessing, augment: AugmentConfig | None
) -> Callable[[Image.Image], tuple[torch.Tensor, torch.Tensor]]:
    """One augmentation, two preprocessings: ``PIL -> (x for prep, x for other)``.

    Used by distillation when teacher and student expect different inputs (size or
    normalisation): both see the same augmented image.
    """
    aug = build_augment(augment)

    def transform(img: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        augmented = aug(to_mode(img, max(prep.channels, other.channels), prep.background))
        return (
            torch.from_numpy(preprocess(augmented, prep)),
            torch.from_numpy(preprocess(augmented, other)),
        )

    return transform


class ImageListDataset(Dataset):
    """Map-style dataset over ``(path, label)`` pairs.

    Items are ``(image float32 [C, H, W], label int64 scalar)``; with ``with_index=True``
    ``((image, index int64 scalar), label)``, the index into ``samples`` (a precomputed target's
    row). With ``cache=True`` the decoded PIL images are kept in memory (small datasets such as
    digits).
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: Callable[[Image.Image], torch.Tensor],
        cache: bool = False,
        with_index: bool = False,
    ):
        self.samples = list(samples)
        self.transform = transform
        self.with_index = with_index
        self._cache: dict[int, Image.Image] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def _image(self, idx: int) -> Image.Image:
        if self._cache is not None and idx in self._cache:
            return self._cache[idx]
        img = load_image(self.samples[idx][0])
        if self._cache is not None:
            self._cache[idx] = img
        return img

    def __getitem__(self, idx: int) -> tuple[Any, torch.Tensor]:
        try:
            img = self._image(idx)
        except ImageDecodeError as exc:  # became unreadable after verification
            raise RuntimeError(f"image vanished or broke during the run: {exc}") from exc
        x = self.transform(img)
        if self.with_index:
            x = (x, torch.tensor(idx, dtype=torch.long))
        return x, torch.tensor(self.samples[idx][1], dtype=torch.long)


def stack_images(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    """Stack ``[C, H, W]`` float32 arrays into a ``[N, C, H, W]`` tensor."""
    return torch.from_numpy(np.stack(arrays).astype(np.float32, copy=False))


class BalancedDistributedSampler(torch.utils.data.Sampler[int]):
    """Class-balanced sampling for DDP: each epoch draws ``len(labels)`` indices with replacement,
    every class equally likely (within a class, images uniformly), with one generator seeded by
    ``seed + epoch`` on every rank, then gives rank ``r`` every ``world``-th index from ``r``.

    Args:
        labels: the class index of each training sample (``-1`` = unlabelled: never drawn).
        num_replicas / rank: the DDP world size and this worker's rank.
        seed: base seed (the same on every rank).

    Raises:
        ValueError: no labelled sample.
    """

    def __init__(self, labels: Sequence[int], num_replicas: int, rank: int, seed: int = 0):
        labels_t = torch.as_tensor(list(labels), dtype=torch.long)
        known = labels_t >= 0
        if not known.any():
            raise ValueError("a balanced sampler needs labelled samples")
        counts = torch.bincount(labels_t[known])
        weights = torch.zeros(len(labels_t), dtype=torch.float64)
        weights[known] = 1.0 / counts[labels_t[known]].double()
        self.weights = weights
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.num_samples = -(-len(labels_t) // num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Draw a new (deterministic) sample at every epoch, like ``DistributedSampler``."""
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.num_samples * self.num_replicas
        idx = torch.multinomial(self.weights, total, replacement=True, generator=g)
        return iter(idx[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples
