"""Augmentations for inspection images (D4 symmetries, grey brightness/contrast) and the
class-balanced DDP sampler."""

import random
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.config import AugmentConfig
from transferkit.data.dataset import BalancedDistributedSampler, RandomRot90, build_augment

NO_JITTER = dict(rotation_deg=0.0, translate=0.0, scale_min=1.0, scale_max=1.0)


def _asym() -> Image.Image:
    a = np.zeros((6, 6), dtype=np.uint8)
    a[0, :3] = 255  # an L-shape: every one of the 8 symmetries gives a different image
    a[:2, 0] = 255
    return Image.fromarray(a, "L")


def _d4(img: Image.Image) -> set[bytes]:
    """The 8 images of the dihedral group, computed with numpy (independent of the transform)."""
    a = np.asarray(img)
    out = set()
    for k in range(4):
        r = np.rot90(a, k)
        out |= {r.tobytes(), np.fliplr(r).tobytes()}
    return out


def test_rot90_gives_exactly_the_four_rotations_uniformly():
    random.seed(0)
    img = _asym()
    seen = Counter(RandomRot90()(img).tobytes() for _ in range(800))
    expected = {np.rot90(np.asarray(img), k).tobytes() for k in range(4)}
    assert set(seen) == expected
    assert all(150 <= n <= 250 for n in seen.values())


def test_flips_and_rot90_cover_the_dihedral_group_and_nothing_else():
    random.seed(1)
    torch.manual_seed(1)
    aug = build_augment(AugmentConfig(hflip=True, vflip=True, rot90=True, **NO_JITTER))
    img = _asym()
    seen = {aug(img).tobytes() for _ in range(400)}
    assert seen == _d4(img)


def test_vflip_alone_is_up_down():
    torch.manual_seed(0)
    aug = build_augment(AugmentConfig(vflip=True, **NO_JITTER))
    img = _asym()
    seen = {aug(img).tobytes() for _ in range(50)}
    assert seen == {np.asarray(img).tobytes(), np.flipud(np.asarray(img)).tobytes()}


def test_brightness_jitter_scales_grey_values_within_its_range():
    torch.manual_seed(0)
    aug = build_augment(AugmentConfig(brightness=0.3, **NO_JITTER))
    img = Image.fromarray(np.full((8, 8), 100, np.uint8), "L")
    means = [np.asarray(aug(img)).mean() for _ in range(200)]
    assert min(means) >= 70 - 1 and max(means) <= 130 + 1  # factor in [0.7, 1.3]
    assert max(means) - min(means) > 30  # it does vary


def test_contrast_jitter_keeps_the_mean_grey_and_changes_the_spread():
    torch.manual_seed(0)
    aug = build_augment(AugmentConfig(contrast=0.5, **NO_JITTER))
    a = np.tile(np.array([60, 140], np.uint8), (8, 4))
    img = Image.fromarray(a, "L")
    spreads = {int(np.ptp(np.asarray(aug(img)))) for _ in range(50)}
    assert len(spreads) > 5


def test_balanced_sampler_draws_classes_equally_and_shards_disjointly_per_epoch():
    labels = [0] * 900 + [1] * 100
    ranks = [BalancedDistributedSampler(labels, 2, r, seed=3) for r in range(2)]
    for s in ranks:
        s.set_epoch(5)
    a, b = list(ranks[0]), list(ranks[1])
    assert len(a) == len(b) == 500 == len(ranks[0])
    drawn = Counter(labels[i] for i in a + b)
    assert 420 <= drawn[1] <= 580  # ~half from a class that is 10% of the data
    again = BalancedDistributedSampler(labels, 2, 0, seed=3)
    again.set_epoch(5)
    assert list(again) == a  # deterministic per epoch, same on every rank's view
    again.set_epoch(6)
    assert list(again) != a


def test_balanced_sampler_never_draws_unlabelled_samples():
    labels = [0, 0, 1, -1, -1]
    s = BalancedDistributedSampler(labels, 1, 0)
    assert all(labels[i] >= 0 for i in list(s) * 20)
    with pytest.raises(ValueError):
        BalancedDistributedSampler([-1, -1], 1, 0)
