"""Image decoding and preprocessing in numpy/Pillow: one implementation for training, export
validation and serving, so a served prediction sees exactly the tensor the model was trained on.

Imports neither torch nor ray (serving depends on it).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from transferkit.errors import TransferkitError
from transferkit.preprocessing import Preprocessing

__all__ = [
    "ImageDecodeError",
    "ImageTooLargeError",
    "decode_image",
    "load_image",
    "to_mode",
    "to_uint8_hwc",
    "preprocess",
    "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class ImageDecodeError(TransferkitError, ValueError):
    """Bytes or a file that do not decode to an image (or exceed the pixel limit)."""


class ImageTooLargeError(ImageDecodeError):
    """The image has more pixels than allowed (checked from the header, before decoding)."""


def decode_image(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """Decode image bytes (PNG, JPEG, ... anything Pillow reads) fully into memory.

    Args:
        data: the encoded file's bytes.
        max_pixels: refuse images with more pixels than this (decompression bombs).

    Returns:
        A loaded ``PIL.Image`` (any mode).

    Raises:
        ImageDecodeError: empty, truncated or unrecognised data, or too many pixels.
    """
    if not data:
        raise ImageDecodeError("empty body: expected an encoded image (PNG, JPEG, ...)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageTooLargeError(
                    f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}"
                )
            img.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            "cannot decode image: not a recognised image format (PNG, JPEG, BMP, GIF, WebP, TIFF)"
        ) from exc
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc
    return img


def load_image(path: str | Path) -> Image.Image:
    """Read and decode an image file.

    Raises:
        ImageDecodeError: the file is unreadable or not an image.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc}") from exc
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{path}: {exc}") from exc


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert to ``L`` (1 channel) or ``RGB`` (3 channels; grey is replicated, alpha dropped
    over black)."""
    mode = "L" if channels == 1 else "RGB"
    if img.mode == mode:
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or (arr.size and arr.max() > 255) else 255.0
        img = Image.fromarray((arr / hi * 255.0).clip(0, 255).astype(np.uint8), "L")
    elif img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    return img.convert(mode)


def to_uint8_hwc(img: Image.Image, channels: int) -> np.ndarray:
    """The raw pixels a model with embedded preprocessing takes (``transferkit.export.embed``).

    Args:
        img: a decoded PIL image of any mode and size.
        channels: the model's channel count (1 or 3), used when ``img`` is neither ``L`` nor
            ``RGB`` (converted with :func:`to_mode`, as :func:`preprocess` would).

    Returns:
        uint8 ``[H, W, C]``, C = 1 (``L``) or 3 (``RGB``); the graph converts it to ``channels``.
    """
    if img.mode not in ("L", "RGB"):
        img = to_mode(img, channels)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def resize_and_crop(img: Image.Image, prep: Preprocessing) -> Image.Image:
    """Resize the shorter side to ``round(input_size / crop_pct)`` and center-crop
    ``input_size`` x ``input_size``: torchvision's ``Resize(s)`` + ``CenterCrop(input_size)`` (the
    eval transform of torchvision's and timm's ImageNet references), pixel for pixel.

    torchvision sizes the longer side as ``int(s * long / short)`` and puts the crop at
    ``int(round((resized - input_size) / 2))``; both are reproduced here as one resample of the
    kept region (``Image.resize(box=...)``, the same filter taps as resizing the whole image and
    cropping), so an extreme aspect ratio never allocates a huge intermediate image.
    """
    size = prep.input_size
    w, h = img.size
    short = round(size / prep.crop_pct)
    if w <= h:
        new_w, new_h = short, int(short * h / w)
    else:
        new_w, new_h = int(short * w / h), short
    if (w, h) == (size, size) and (new_w, new_h) == (size, size):
        return img
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return img.resize((size, size), _RESAMPLE[prep.interpolation], box=box)


def preprocess(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Turn a decoded image into a model input.

    Args:
        img: a PIL image of any mode and size.
        prep: the model's preprocessing (from ``model.pt`` or the ONNX metadata).

    Returns:
        float32 array of shape ``(channels, input_size, input_size)``, normalised
        ``(x / 255 - mean) / std``.
    """
    img = resize_and_crop(to_mode(img, prep.channels), prep)
    arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    arr = (arr - mean) / std
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
