"""transferkit.imaging.preprocess (the one path for training, export checks and serving) against an
independent implementation: torchvision's ``Resize`` + ``CenterCrop`` + ``ToTensor`` +
``Normalize``, on real photos (scikit-learn's sample images, 640x427 JPEGs) and real cells."""

import numpy as np
import pytest
from helpers import torchvision_eval_transform
from PIL import Image
from sklearn.datasets import load_sample_image

from transferkit.config import Preprocessing
from transferkit.data.bundled import elpv_cells
from transferkit.imaging import preprocess

# One grey level is 1 / 255 / std = 0.0171 in normalised units (std 0.229). Pillow's box resample
# and its whole-image resample round a few pixels differently; a half-pixel shift of the crop (the
# bug these tests caught) moves the mean by 0.05-0.10 and single pixels by more than 1.0.
MEAN_TOL, MAX_TOL = 0.005, 0.12


def _torchvision(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    return torchvision_eval_transform(prep)(img).numpy()


def _photo(name: str, orientation: str) -> Image.Image:
    img = Image.fromarray(load_sample_image(name))
    return img if orientation == "landscape" else img.transpose(Image.Transpose.ROTATE_90)


@pytest.mark.parametrize("name", ["china.jpg", "flower.jpg"])
@pytest.mark.parametrize("orientation", ["landscape", "portrait"])
@pytest.mark.parametrize(
    "size,crop_pct,interpolation",
    [
        (224, 1.0, "bilinear"),
        (224, 0.875, "bilinear"),
        (96, 1.0, "bicubic"),
        (300, 0.875, "bicubic"),
    ],
)
def test_photos_match_torchvision_resize_and_center_crop(
    name, orientation, size, crop_pct, interpolation
):
    img = _photo(name, orientation)
    prep = Preprocessing(input_size=size, crop_pct=crop_pct, interpolation=interpolation)
    ours, ref = preprocess(img, prep), _torchvision(img, prep)
    assert ours.shape == ref.shape == (3, size, size) and ours.dtype == np.float32
    diff = np.abs(ours - ref)
    assert diff.mean() < MEAN_TOL and diff.max() < MAX_TOL, (diff.mean(), diff.max())


def test_a_square_image_is_resized_exactly_as_torchvision_does():
    img = _photo("china.jpg", "landscape").crop((100, 0, 527, 427))
    prep = Preprocessing(input_size=192)
    np.testing.assert_allclose(preprocess(img, prep), _torchvision(img, prep), atol=1e-6)


def test_a_grey_cell_replicated_to_three_channels_matches_torchvision():
    """A real 300x300 8-bit electroluminescence cell (ELPV) into a 3-channel ImageNet model."""
    img = Image.open(elpv_cells()[0].path)
    assert img.mode == "L"
    prep = Preprocessing(input_size=192)
    ref = _torchvision(img.convert("RGB"), prep)
    np.testing.assert_allclose(preprocess(img, prep), ref, atol=1e-6)
