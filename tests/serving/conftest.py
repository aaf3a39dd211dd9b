"""Fixtures for the serving tests: real images, an HTTP client, the expected answers.

The ONNX classifier they serve, ``serving_onnx``, lives in ``tests/conftest.py`` (the export
tests use it too).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.metadata import ModelMetadata


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def digit_pngs() -> list[bytes]:
    """Eight real handwritten digits (scikit-learn's UCI digits, 8x8 grey) as PNG files."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:8]
    return [
        _png(Image.fromarray((img * (255.0 / 16.0)).round().astype(np.uint8), mode="L"))
        for img in images
    ]


@pytest.fixture(scope="session")
def china_jpg() -> bytes:
    """scikit-learn's real sample photo ``china.jpg`` (427x640 RGB) as JPEG bytes."""
    from sklearn.datasets import load_sample_image

    buf = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(server):
    """An httpx client on the requesting test module's ``server`` fixture."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=30.0) as c:
        yield c


@pytest.fixture(scope="session")
def reference(serving_onnx: Path):
    """``(onnxruntime.InferenceSession, ModelMetadata)`` of ``serving_onnx``: the expected answers,
    computed in-process."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(serving_onnx), providers=["CPUExecutionProvider"])
    return sess, ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
