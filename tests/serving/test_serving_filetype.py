"""A file of the wrong kind is named for what it is, with the fix; no ONNX Runtime internals."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from transferkit.cli import app
from transferkit.serving.model import ModelLoadError, OnnxClassifier


def _checkpoint(path: Path, zip_format: bool) -> Path:
    import torch

    model = torch.nn.Linear(3, 2)
    torch.save({"state_dict": model.state_dict()}, path, _use_new_zipfile_serialization=zip_format)
    return path


def _files(tmp: Path) -> dict[str, Path]:
    pdf = tmp / "report.pdf"
    Image.new("RGB", (8, 8), "white").save(pdf)  # Pillow writes a real one-page PDF
    text = tmp / "notes.onnx"
    text.write_text("this is not an ONNX file")
    return {
        "zip checkpoint": _checkpoint(tmp / "model.pt", zip_format=True),
        "legacy checkpoint": _checkpoint(tmp / "old.pth", zip_format=False),
        "pdf": pdf,
        "text": text,
    }


EXPECTED = {
    "zip checkpoint": [
        "model.pt is a PyTorch checkpoint, not ONNX",
        "transferkit export",
        "model.onnx",
    ],
    "legacy checkpoint": ["old.pth is a PyTorch checkpoint, not ONNX", "transferkit export"],
    "pdf": ["report.pdf is a PDF document, not an ONNX model", "transferkit export"],
    "text": ["notes.onnx is not an ONNX model", "transferkit export"],
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_the_model_load_error_names_the_kind_and_the_fix(kind: str, tmp_path: Path) -> None:
    path = _files(tmp_path)[kind]
    with pytest.raises(ModelLoadError) as info:
        OnnxClassifier(path, intra_op_threads=1)
    message = str(info.value)
    for words in EXPECTED[kind]:
        assert words in message, message
    assert "Protobuf" not in message and "ONNXRuntimeError" not in message, message


def test_transferkit_serve_on_a_checkpoint_exits_2_with_the_fix(tmp_path: Path) -> None:
    pt = _checkpoint(tmp_path / "model.pt", zip_format=True)
    r = CliRunner().invoke(app, ["serve", str(pt), "--port", "0"])
    assert r.exit_code == 2, r.output
    assert "model.pt is a PyTorch checkpoint, not ONNX" in r.output
    assert f"transferkit export {pt} -o {tmp_path / 'model.onnx'}" in r.output
    assert "Protobuf" not in r.output
