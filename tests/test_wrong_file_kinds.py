"""export and evaluate name a file of the wrong kind and the fix, instead of torch's unpickler or
ONNX Runtime's protobuf text."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from transferkit.cli import app


def _pdf(tmp: Path) -> Path:
    pdf = tmp / "report.pdf"
    Image.new("RGB", (8, 8), "white").save(pdf)  # Pillow writes a real one-page PDF
    return pdf


def _checkpoint(tmp: Path) -> Path:
    import torch

    path = tmp / "model.pt"
    torch.save({"state_dict": torch.nn.Linear(3, 2).state_dict()}, path)
    return path


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("onnx", ["digits_cnn.onnx is an ONNX model (already exported)", "transferkit serve"]),
        ("pdf", ["report.pdf is a PDF document, not a PyTorch checkpoint", "model.pt"]),
        ("text", ["notes.pt is not a PyTorch checkpoint", "model.pt"]),
    ],
)
def test_exporting_a_file_that_is_not_a_checkpoint_names_it(kind, expected, serving_onnx, tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    path = {"onnx": serving_onnx, "pdf": _pdf(tmp_path), "text": text}[kind]
    r = CliRunner().invoke(app, ["export", str(path), "-o", str(tmp_path / "out.onnx")])
    assert r.exit_code == 2, r.output
    out = " ".join(r.output.split())  # rich wraps long lines
    for words in expected:
        assert words in out, out
    assert "unpickl" not in out.lower() and "file an issue" not in out.lower(), out


def test_evaluating_a_checkpoint_says_to_export_it_first(digits_dir, tmp_path):
    pt = _checkpoint(tmp_path)
    r = CliRunner().invoke(app, ["evaluate", str(pt), "--dataset", str(digits_dir)])
    assert r.exit_code == 2, r.output
    out = " ".join(r.output.split())
    assert "model.pt is a PyTorch checkpoint, not ONNX" in out and "transferkit export" in out
    assert "Protobuf" not in out


def test_evaluating_a_text_file_names_it_and_the_fix(digits_dir, tmp_path):
    """A file no signature marks (plain text) still gets the serve command's wording, not ONNX
    Runtime's protobuf message."""
    text = tmp_path / "notes.onnx"
    text.write_text("these are not weights\n")
    r = CliRunner().invoke(app, ["evaluate", str(text), "--dataset", str(digits_dir)])
    assert r.exit_code == 2, r.output
    out = " ".join(r.output.split())
    assert "is not an ONNX model (it does not parse as one)" in out and "transferkit export" in out
    assert "Protobuf" not in out and "INVALID_PROTOBUF" not in out
