"""The ``data:`` section: where images come from, how they are split and augmented."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from transferkit.config.base import Strict

__all__ = ["AugmentConfig", "DataConfig"]


class AugmentConfig(Strict):
    """Training-time augmentation (applied to PIL images before ``preprocess``).

    Defaults suit digits/characters: small affine jitter, no flips (a flipped digit is a different
    or no digit). Turn ``hflip`` on for natural photos; ``hflip``, ``vflip`` and ``rot90`` together
    give the eight symmetries of a square (the dihedral group D4), label-preserving for top-down
    inspection images such as solar cells, wafers or tiles.

    Attributes:
        hflip / vflip: random horizontal / vertical flip (p = 0.5 each).
        rot90: rotate by a random multiple of 90 degrees (lossless, before the affine jitter).
        rotation_deg / translate / scale_min / scale_max: random affine jitter (degrees, fraction
            of the side, scale factors).
        color_jitter: brightness, contrast and saturation jitter for colour photos (factor range
            ``[1 - j, 1 + j]``, torchvision ``ColorJitter``).
        brightness / contrast: brightness and contrast jitter alone (same factor ranges), the
            photometric changes of grey sensor images (exposure, gain), applied after
            ``color_jitter``.
    """

    enabled: bool = True
    hflip: bool = False
    vflip: bool = False
    rot90: bool = False
    rotation_deg: float = Field(10.0, ge=0.0, le=180.0)
    translate: float = Field(0.1, ge=0.0, le=0.5)
    scale_min: float = Field(0.9, gt=0.0, le=1.0)
    scale_max: float = Field(1.1, ge=1.0, le=2.0)
    color_jitter: float = Field(0.0, ge=0.0, le=1.0)
    brightness: float = Field(0.0, ge=0.0, le=1.0)
    contrast: float = Field(0.0, ge=0.0, le=1.0)


class DataConfig(Strict):
    """Where the images come from and how they are split.

    Attributes:
        dataset: a bundled dataset name (``digits``) or a folder path. A folder is either
            pre-split (``train/``, ``val/``, ``test/`` each holding ``<class>/*.png|jpg``) or one
            ``<class>/*`` tree split here by a seeded, stratified split.
        val_fraction / test_fraction: split fractions for a single folder, each in [0, 0.5).
        image_size: override of the model's input size (pixels); ``None`` keeps the weights' size.
        num_loader_workers: DataLoader worker processes per training worker (0 = in-process).
        sampler: ``random`` (each training image once per epoch, shuffled) or ``balanced``
            (class-balanced: each epoch draws as many images as the training split holds, with
            replacement, every class equally likely; for rare classes).
        background: RGB (0-255 each) under transparent pixels, in training and, through the
            model's ``Preprocessing.background``, in export and serving: ``[255, 255, 255]`` for
            images drawn on white with an alpha channel.
    """

    dataset: str = "digits"
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    image_size: int | None = Field(None, ge=8, le=2048)
    num_loader_workers: int = Field(0, ge=0, le=64)
    sampler: Literal["random", "balanced"] = "random"
    background: tuple[
        Annotated[int, Field(ge=0, le=255)],
        Annotated[int, Field(ge=0, le=255)],
        Annotated[int, Field(ge=0, le=255)],
    ] = (0, 0, 0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
