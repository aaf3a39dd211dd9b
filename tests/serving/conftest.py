"""Fixtures for the serving tests: a real ONNX classifier with transferkit metadata, real images.

``serving_onnx`` builds a small CNN and exports it with torch's dynamo exporter (random weights,
no download). Its contract, kept when the body is replaced by the training pipeline's exported
model: a session-scoped ``pathlib.Path`` to a self-contained ``.onnx`` file that carries
transferkit metadata (class names, preprocessing) and has a symbolic batch dimension.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferkit.config import Preprocessing
from transferkit.metadata import ModelMetadata

CLASS_NAMES = [str(i) for i in range(10)]
PREPROCESSING = Preprocessing(input_size=32, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _tiny_cnn():  # torch imported here only: the serving package itself never imports it
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, len(CLASS_NAMES)),
    )
    with torch.no_grad():  # spread the logits so the top-1 class is never a near-tie
        model[-1].weight.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="session")
def serving_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-contained ONNX classifier (float32 [N,3,32,32] -> logits [N,10]) with metadata."""
    import onnx
    import torch

    path = tmp_path_factory.mktemp("serving_model") / "digits_cnn.onnx"
    torch.onnx.export(
        _tiny_cnn(), (torch.randn(2, 3, 32, 32),), str(path), dynamo=True,
        input_names=["input"], output_names=["logits"], dynamic_shapes=({0: "batch"},),
        external_data=False,
    )
    proto = onnx.load(str(path))
    meta = ModelMetadata(
        class_names=CLASS_NAMES, preprocessing=PREPROCESSING, arch="tiny_cnn",
        source_run="tests/serving/conftest.py", extra={"purpose": "serving tests"},
    )
    for key, value in meta.to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def digit_pngs() -> list[bytes]:
    """Eight real handwritten digits (scikit-learn's UCI digits, 8x8 grey) as PNG files."""
    from sklearn.datasets import load_digits

    images = load_digits().images[:8]
    return [_png(Image.fromarray((img * (255.0 / 16.0)).round().astype(np.uint8), mode="L")) for img in images]


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
