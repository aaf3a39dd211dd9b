"""Test-time augmentation compiled into the ONNX graph: the averaged logits are invariant under
the group whose views are averaged (a property of the group, not of this code), checked in
PyTorch and on the exported file with ONNX Runtime (no Ray needed)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from transferkit.config import ExportConfig, ModelConfig, Preprocessing
from transferkit.export.onnx_export import export_onnx
from transferkit.metadata import ModelMetadata
from transferkit.models import build_model
from transferkit.models.portable import save_portable
from transferkit.models.tta import TTAModel, views

D4 = [
    lambda x: torch.rot90(x, 1, (2, 3)),
    lambda x: torch.flip(x, (3,)),
    lambda x: x.transpose(2, 3),
]


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 14 * 14, 5),
    ).eval()


@pytest.mark.parametrize("g", range(3))
def test_d4_averaged_logits_are_invariant_under_the_squares_symmetries(g):
    model, x = _cnn(), torch.randn(3, 3, 16, 16)
    tta = TTAModel(model, "d4")
    with torch.no_grad():
        assert torch.allclose(tta(D4[g](x)), tta(x), atol=1e-5)
        assert not torch.allclose(model(D4[g](x)), model(x), atol=1e-3)  # the model alone is not


def test_views_are_the_eight_distinct_symmetries_and_hflip_two():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    d4 = views(x, "d4")
    assert len(d4) == 8 and len({tuple(v.flatten().tolist()) for v in d4}) == 8
    assert [v.flatten().tolist() for v in views(x, "hflip")] == [
        x.flatten().tolist(),
        x.flip(3).flatten().tolist(),
    ]
    with pytest.raises(ValueError, match="square"):
        views(torch.zeros(1, 1, 4, 6), "d4")


def test_export_with_d4_is_checked_and_invariant_in_onnx_runtime(digits_dir, tmp_path):
    prep = Preprocessing(input_size=32)
    model = build_model(ModelConfig(arch="mobilenet_v2", weights=None, width_mult=0.5), 10).model
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        model(torch.randn(16, 3, 32, 32))
    pt = save_portable(
        tmp_path / "model.pt",
        model.eval(),
        "mobilenet_v2",
        [str(i) for i in range(10)],
        prep,
        width_mult=0.5,
    )
    images = [str(p) for p in sorted(digits_dir.rglob("*.png"))[:24]]
    rep = export_onnx(ExportConfig(run=str(pt), output=str(tmp_path / "m.onnx"), tta="d4"), images)
    assert rep.passed and rep.tta == "d4" and rep.max_abs_diff <= 1e-4
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    assert ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map).extra["tta"] == "d4"
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    run = lambda a: sess.run(None, {"input": np.ascontiguousarray(a)})[0]  # noqa: E731
    np.testing.assert_allclose(run(np.rot90(x, 1, (2, 3))), run(x), atol=1e-4)
    np.testing.assert_allclose(run(x[..., ::-1]), run(x), atol=1e-4)
    with torch.no_grad():
        ref = torch.stack([model(v) for v in views(torch.from_numpy(x), "d4")]).mean(0).numpy()
    np.testing.assert_allclose(run(x), ref, atol=1e-4)
