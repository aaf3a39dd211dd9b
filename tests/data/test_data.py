"""Data: bundled digits, ImageFolder scanning, stratified splits, corrupt files, preprocessing."""

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from transferkit.config import AugmentConfig, Preprocessing
from transferkit.data import DatasetError, resolve_splits, scan_folder, stratified_split
from transferkit.data.dataset import ImageListDataset, build_transform, verify_images
from transferkit.imaging import load_image, preprocess


def test_materialized_digits_are_the_real_dataset(digits_dir):
    from sklearn.datasets import load_digits

    names, samples = scan_folder(digits_dir)
    assert names == [str(i) for i in range(10)]
    assert len(samples) == 1797
    counts = Counter(y for _, y in samples)
    ref = Counter(load_digits().target.tolist())
    assert counts == ref
    img = load_image(samples[0][0])
    assert img.size == (8, 8) and img.mode == "L"


def test_stratified_split_is_seeded_disjoint_and_balanced(digits_dir):
    _, samples = scan_folder(digits_dir)
    a = stratified_split(samples, 0.1, 0.2, seed=3)
    b = stratified_split(samples, 0.1, 0.2, seed=3)
    c = stratified_split(samples, 0.1, 0.2, seed=4)
    assert a == b and a != c
    train, val, test = a
    assert len(train) + len(val) + len(test) == len(samples)
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    per_class = Counter(y for _, y in test)
    assert all(34 <= n <= 38 for n in per_class.values())  # ~20% of ~180 per class


def test_presplit_folder_is_used_as_is(tmp_path, digits_dir):
    _, samples = scan_folder(digits_dir)
    for split, items in (
        ("train", samples[:40]),
        ("val", samples[40:50]),
        ("test", samples[50:60]),
    ):
        for p, y in items:
            d = tmp_path / split / str(y)
            d.mkdir(parents=True, exist_ok=True)
            (d / (split + Path_name(p))).write_bytes(open(p, "rb").read())
    s = resolve_splits(str(tmp_path), 0.1, 0.1, seed=0)
    assert s.counts() == {"train": 40, "val": 10, "test": 10}


def Path_name(p):
    return p.rsplit("/", 1)[-1]


def test_unknown_dataset_lists_bundled_names():
    with pytest.raises(DatasetError, match="digits"):
        resolve_splits("no_such_dataset_or_folder", 0.1, 0.1, 0)


def test_corrupt_images_are_skipped_with_their_names(tmp_path, digits_dir, caplog):
    _, samples = scan_folder(digits_dir)
    bad1 = tmp_path / "truncated.png"
    bad1.write_bytes(open(samples[0][0], "rb").read()[:20])
    bad2 = tmp_path / "text.png"
    bad2.write_text("not an image")
    good, skipped = verify_images(samples[:5] + [(str(bad1), 0), (str(bad2), 1)])
    assert good == samples[:5]
    assert len(skipped) == 2 and "truncated.png" in skipped[0] and "text.png" in skipped[1]
    assert "skipped 2 unreadable" in caplog.text


def test_grey_becomes_three_channels_normalised():
    prep = Preprocessing(input_size=16)
    img = Image.fromarray(np.full((8, 8), 255, np.uint8), "L")
    x = preprocess(img, prep)
    assert x.shape == (3, 16, 16) and x.dtype == np.float32
    expected = (1.0 - np.array(prep.mean)) / np.array(prep.std)
    np.testing.assert_allclose(x[:, 5, 5], expected, rtol=1e-6)


def test_center_crop_pct_keeps_the_middle():
    prep = Preprocessing(
        input_size=8, crop_pct=0.5, mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest"
    )
    arr = np.zeros((16, 16), np.uint8)
    arr[4:12, 4:12] = 255  # the middle 8x8 is white
    x = preprocess(Image.fromarray(arr, "L"), prep)
    assert np.all(x == 1.0)


def test_eval_transform_is_exactly_the_serving_preprocessing(digits_dir):
    _, samples = scan_folder(digits_dir)
    prep = Preprocessing(input_size=24)
    ds = ImageListDataset(samples[:3], build_transform(prep, None))
    for i in range(3):
        x, y = ds[i]
        ref = preprocess(load_image(samples[i][0]), prep)
        assert torch.equal(x, torch.from_numpy(ref)) and int(y) == samples[i][1]


def test_training_augmentation_changes_pixels_but_not_shape(digits_dir):
    _, samples = scan_folder(digits_dir)
    prep = Preprocessing(input_size=24)
    torch.manual_seed(0)
    aug = ImageListDataset(samples[:1], build_transform(prep, AugmentConfig(rotation_deg=20)))
    plain = ImageListDataset(samples[:1], build_transform(prep, None))
    xs = [aug[0][0] for _ in range(4)]
    assert all(x.shape == (3, 24, 24) for x in xs)
    assert any(not torch.equal(x, plain[0][0]) for x in xs)


def test_pair_transform_gives_each_model_its_own_preprocessing_of_one_augmented_image(digits_dir):
    """Distillation with different teacher/student inputs: same augmented view, two tensors."""
    from transferkit.data.dataset import build_pair_transform

    _, samples = scan_folder(digits_dir)
    student = Preprocessing(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    teacher = Preprocessing(input_size=32)
    img = load_image(samples[0][0])
    s, t = build_pair_transform(student, teacher, None)(img)
    assert s.shape == (3, 16, 16) and t.shape == (3, 32, 32)
    assert torch.equal(s, torch.from_numpy(preprocess(img, student)))
    assert torch.equal(t, torch.from_numpy(preprocess(img, teacher)))
    torch.manual_seed(0)
    s_aug, t_aug = build_pair_transform(student, student, AugmentConfig(rotation_deg=30))(img)
    assert torch.equal(s_aug, t_aug)  # one augmentation, shared


def test_bundled_dataset_is_cached_once_outside_run_folders():
    from transferkit.data.folder import data_home, dataset_folder

    a = resolve_splits("digits", 0.1, 0.1, seed=0)
    b = resolve_splits("digits", 0.1, 0.1, seed=0)
    assert a.source == b.source == str(dataset_folder("digits"))
    assert a.source.startswith(str(data_home().resolve()))
    assert sum(a.counts().values()) == 1797 and a.test == b.test
