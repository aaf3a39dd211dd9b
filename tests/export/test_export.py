"""ONNX export: self-describing file, symbolic batch, parity with PyTorch on real test images."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from transferkit.config import ExportConfig
from transferkit.export.onnx_export import ExportValidationError, export_onnx
from transferkit.imaging import load_image, preprocess
from transferkit.metadata import ModelMetadata
from transferkit.models.portable import PortableModelError, load_portable

pytestmark = pytest.mark.slow


def test_export_carries_metadata_and_a_symbolic_batch(exported_onnx, trained_run):
    m = onnx.load(str(exported_onnx))
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert m.graph.output[0].type.tensor_type.shape.dim[0].dim_param
    meta = ModelMetadata.from_props({p.key: p.value for p in m.metadata_props})
    assert meta.class_names == [str(i) for i in range(10)]
    assert meta.preprocessing.input_size == 32 and meta.arch == "mobilenet_v2"
    assert str(trained_run) in meta.source_run
    assert not list(exported_onnx.parent.glob("*.data"))  # one self-contained file


def test_onnx_matches_pytorch_on_the_whole_test_split(exported_onnx, trained_run):
    report = json.loads(exported_onnx.with_suffix(".export.json").read_text())
    splits = json.loads((trained_run / "splits.json").read_text())
    assert report["passed"] and report["images_compared"] == len(splits["test"])
    assert report["max_abs_diff"] <= 1e-4 and report["top1_agreement"] == 1.0
    # independent re-check, batch 1 and batch N
    built, _ = load_portable(trained_run)
    x = np.stack([preprocess(load_image(p), built.preprocessing) for p, _ in splits["test"]])
    sess = ort.InferenceSession(str(exported_onnx), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    one = sess.run(None, {"input": x[:1]})[0]
    with torch.no_grad():
        ref = built.model(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4 and np.abs(one - ref[:1]).max() <= 1e-4
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_a_failed_check_fails_the_export_and_leaves_no_file(trained_run, tmp_path):
    out = tmp_path / "strict.onnx"
    with pytest.raises(ExportValidationError, match="max abs logit difference") as e:
        export_onnx(
            ExportConfig(run=str(trained_run), output=str(out), atol=1e-12, validation_images=8)
        )
    assert not out.exists()
    assert e.value.report["images_compared"] == 8
    assert json.loads(out.with_suffix(".export.json").read_text())["passed"] is False


def test_exporting_a_folder_without_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(PortableModelError, match="model.pt"):
        export_onnx(ExportConfig(run=str(tmp_path), output=str(tmp_path / "x.onnx")))
