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
    "to_display",
    "to_mode",
    "ImageAmbiguousError",
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


class ImageAmbiguousError(ImageDecodeError):
    """The image decodes, but how a viewer would show it cannot be known (a float image outside
    [0, 1], a 32-bit integer image, an animation): refused rather than guessed."""


#: Decoded images are normalised to one of these (8 bits per channel, sRGB, upright).
DISPLAY_MODES = ("L", "RGB", "LA", "RGBA")

# Pillow's bomb warning is raised as an error by its own size check below, with the same limit;
# a filter set once at import instead of ``warnings.catch_warnings`` per call, which is not
# thread-safe (serving decodes in a thread pool).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def decode_image(data: bytes, max_pixels: int | None = None) -> Image.Image:
    """Decode image bytes (PNG, JPEG, ... anything Pillow reads) into the image a viewer shows.

    The one decode path of training, export validation, ``predict`` and serving. After decoding,
    :func:`to_display` applies the metadata that decides how the image is displayed (EXIF
    orientation, ICC profile, bit depth and value range, palette); transparency stays (``LA`` /
    ``RGBA``) until :func:`to_mode` composites it over the model's background colour.

    Args:
        data: the encoded file's bytes.
        max_pixels: refuse images with more pixels than this (decompression bombs); Pillow's
            own ``Image.MAX_IMAGE_PIXELS`` applies too (the smaller limit wins).

    Returns:
        A loaded ``PIL.Image`` of mode ``L``, ``RGB``, ``LA`` or ``RGBA``.

    Raises:
        ImageTooLargeError: more pixels than the limit (read from the header, before decoding).
        ImageAmbiguousError: decodable, but its display is ambiguous (see :func:`to_display`).
        ImageDecodeError: empty, truncated or unrecognised data.
    """
    if not data:
        raise ImageDecodeError("empty body: expected an encoded image (PNG, JPEG, ...)")
    limits = [n for n in (max_pixels, Image.MAX_IMAGE_PIXELS) if n is not None]
    limit = min(limits) if limits else None
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if limit is not None and w * h > limit:
            raise ImageTooLargeError(f"image is {w}x{h} = {w * h} pixels; the limit is {limit}")
        img.load()
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            "cannot decode image: not a recognised image format (PNG, JPEG, BMP, GIF, WebP, TIFF)"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"image exceeds the decompression-bomb pixel limit: {exc}"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"cannot decode image: {exc}") from exc
    return to_display(img)


def load_image(path: str | Path) -> Image.Image:
    """Read and decode an image file (:func:`decode_image`).

    Raises:
        ImageDecodeError: the file is unreadable, not an image, or ambiguous to display
            (:class:`ImageAmbiguousError`).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc}") from exc
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


_SRGB = None


def _srgb_profile():
    global _SRGB
    if _SRGB is None:
        from PIL import ImageCms

        _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return _SRGB


def _to_srgb(img: Image.Image) -> Image.Image:
    """Apply an embedded ICC profile (RGB, RGBA or CMYK images) as a colour-managed viewer does:
    converted to sRGB with littlecms (Pillow's ``ImageCms``), perceptual intent. sRGB profiles are
    left alone; a profile that does not parse is ignored, as viewers ignore it."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in ("RGB", "RGBA", "CMYK"):
        return img
    from PIL import ImageCms

    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(src) or "").lower():
            return img
        out_mode = "RGBA" if img.mode == "RGBA" else "RGB"
        out = ImageCms.profileToProfile(img, src, _srgb_profile(), outputMode=out_mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return img
    return out if out is not None else img


def _scale_16bit(img: Image.Image) -> Image.Image:
    arr = np.asarray(img).astype(np.float64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ImageAmbiguousError(
            f"16-bit image with values in [{arr.min():.0f}, {arr.max():.0f}], outside [0, 65535]"
        )
    return Image.fromarray(np.rint(arr / 65535.0 * 255.0).astype(np.uint8), "L")


def _scale_float(img: Image.Image) -> Image.Image:
    """Mode ``F`` with every value in [0, 1] -> ``L`` (1.0 is white); anything else is refused."""
    arr = np.asarray(img, dtype=np.float64)
    finite = np.isfinite(arr).all()
    if arr.size and (not finite or arr.min() < 0.0 or arr.max() > 1.0):
        ok = arr[np.isfinite(arr)]
        lo, hi = (float(ok.min()), float(ok.max())) if ok.size else (0.0, 0.0)
        raise ImageAmbiguousError(
            f"32-bit float image with values in [{lo:g}, {hi:g}]"
            + ("" if finite else " and non-finite values")
            + ": a viewer shows float images as 0.0 = black .. 1.0 = white, and these fall "
            "outside it; send an 8-bit image or scale it to [0, 1]"
        )
    return Image.fromarray(np.rint(arr * 255.0).astype(np.uint8), "L")


def _is_16bit(img: Image.Image) -> bool:
    """Mode ``I`` from a source known to hold 16 bits: Netpbm (Pillow scales its maxval to 65535)
    or a TIFF with 16 bits per sample. Other ``I`` images (32-bit TIFF) have no known range."""
    if img.format == "PPM":
        return True
    tags = getattr(img, "tag_v2", None)
    return tags is not None and tuple(tags.get(258, ())) == (16,)


_ORIENTATION = 0x0112  # EXIF tag 274


def _upright(img: Image.Image) -> tuple[Image.Image, bool]:
    """``(image turned as its EXIF orientation says, whether it was a 16-bit mode-I image)``:
    ``exif_transpose`` drops the format and TIFF tags that tell a 16-bit ``I`` image apart."""
    try:
        orientation = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: shown as stored, as viewers do
        orientation = 1
    if orientation in (1, None):
        return img, False
    from PIL import ImageOps

    bits16 = img.mode == "I" and _is_16bit(img)
    return ImageOps.exif_transpose(img), bits16


def to_display(img: Image.Image) -> Image.Image:
    """The image a viewer shows, as 8-bit ``L``, ``RGB``, ``LA`` or ``RGBA`` (transparency kept).

    * EXIF orientation applied (``ImageOps.exif_transpose``), as viewers and browsers do.
    * 16-bit grey (``I;16*``; ``I`` from Netpbm or a 16-bit TIFF) scaled: 65535 is white.
    * 32-bit float grey (``F``) with every value in [0, 1] scaled: 1.0 is white.
    * Palette and ``tRNS`` transparency (a palette index, a grey or RGB colour key) and
      premultiplied alpha (``La``, ``RGBa``) become a straight alpha channel (``LA``/``RGBA``).
    * An embedded ICC profile converted to sRGB (:func:`_to_srgb`); CMYK, YCbCr, 1-bit and
      palette images without transparency become RGB or L (Pillow's ``convert``).

    Args:
        img: a loaded PIL image of any mode.

    Returns:
        A PIL image of mode ``L``, ``RGB``, ``LA`` or ``RGBA``.

    Raises:
        ImageAmbiguousError: an animated image (which frame is meant cannot be known), a float
            image with values outside [0, 1] or not finite, a 32-bit integer image, or a colour
            mode Pillow cannot convert.
    """
    if getattr(img, "is_animated", False):
        raise ImageAmbiguousError(
            f"animated image with {getattr(img, 'n_frames', '?')} frames: which frame to classify "
            "cannot be known; send a single frame"
        )
    img, bits16 = _upright(img)
    if bits16:
        return _scale_16bit(img)
    mode = img.mode
    if mode in ("L", "RGB") and "transparency" not in img.info and "icc_profile" not in img.info:
        return img  # the common case: nothing to do
    if mode == "F":
        return _scale_float(img)
    if mode.startswith("I;16"):
        return _scale_16bit(img)
    if mode == "I":
        if not _is_16bit(img):
            raise ImageAmbiguousError(
                "32-bit integer image: the range a viewer maps to black..white cannot be known; "
                "send an 8- or 16-bit image"
            )
        return _scale_16bit(img)
    if "transparency" in img.info or mode in ("P", "PA", "La", "RGBa"):
        alpha = "transparency" in img.info or mode in ("PA", "La", "RGBa")
        target = "LA" if mode == "La" else ("RGBA" if alpha else "RGB")
        img = img.convert(target)
        img.info.pop("transparency", None)
    img = _to_srgb(img)
    if img.mode in DISPLAY_MODES:
        return img
    try:
        return img.convert("L" if img.mode == "1" else "RGB")
    except (ValueError, OSError) as exc:
        raise ImageAmbiguousError(
            f"colour mode {img.mode} cannot be converted to RGB: {exc}"
        ) from exc


def to_mode(
    img: Image.Image, channels: int, background: tuple[int, int, int] = (0, 0, 0)
) -> Image.Image:
    """Convert to ``L`` (1 channel) or ``RGB`` (3 channels; grey is replicated).

    Transparent pixels are composited over ``background`` (the model's
    ``Preprocessing.background``, default black) with Pillow's ``Image.alpha_composite``
    (Porter-Duff "over": ``colour * alpha + background * (1 - alpha)``), never left as the colour
    hidden under alpha. Images not yet normalised by :func:`to_display` (a PIL image handed in
    directly) are normalised first.

    Raises:
        ImageAmbiguousError: see :func:`to_display`.
    """
    mode = "L" if channels == 1 else "RGB"
    if img.mode == mode and "transparency" not in img.info:
        return img
    if img.mode not in DISPLAY_MODES or "transparency" in img.info:
        img = to_display(img)
    if img.mode in ("LA", "RGBA"):
        under = Image.new("RGBA", img.size, (*background, 255))
        img = Image.alpha_composite(under, img.convert("RGBA")).convert("RGB")
    return img if img.mode == mode else img.convert(mode)


def to_uint8_hwc(
    img: Image.Image, channels: int, background: tuple[int, int, int] = (0, 0, 0)
) -> np.ndarray:
    """The raw pixels a model with embedded preprocessing takes (``transferkit.export.embed``).

    Args:
        img: a decoded PIL image of any mode and size.
        channels: the model's channel count (1 or 3), used when ``img`` is neither ``L`` nor
            ``RGB`` (converted with :func:`to_mode`, as :func:`preprocess` would).
        background: RGB 0-255 under transparent pixels (``Preprocessing.background``).

    Returns:
        uint8 ``[H, W, C]``, C = 1 (``L``) or 3 (``RGB``); the graph converts it to ``channels``.
    """
    if img.mode not in ("L", "RGB") or "transparency" in img.info:
        img = to_mode(img, channels, background)
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
    img = resize_and_crop(to_mode(img, prep.channels, prep.background), prep)
    arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    mean = np.asarray(prep.mean, dtype=np.float32)
    std = np.asarray(prep.std, dtype=np.float32)
    arr = (arr - mean) / std
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
