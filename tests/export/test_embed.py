"""Preprocessing inside the ONNX graph (``transferkit.export.embed``), checked against the numpy
path the server runs (``transferkit.imaging.preprocess`` on Pillow) on real images: scikit-learn's
8x8 digits, ELPV 300x300 solar cells, sklearn's china.jpg, and crops of odd sizes and aspect
ratios. Ray-free: the classifiers are small CNNs exported with torch's dynamo exporter."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import tiny_cnn
from PIL import Image

from transferkit.config import Preprocessing
from transferkit.data.bundled import elpv_cells
from transferkit.errors import UsageError
from transferkit.export.embed import (
    EmbedError,
    EmbedValidationError,
    embed_preprocessing,
    preprocessing_model,
)
from transferkit.imaging import load_image, preprocess, to_uint8_hwc
from transferkit.metadata import MetadataError, ModelMetadata
from transferkit.metrics import softmax

GREY = Preprocessing(
    input_size=48, channels=1, mean=(0.5,), std=(0.25,), interpolation="bicubic", crop_pct=0.875
)
PREPS = {
    "rgb32-bilinear": Preprocessing(input_size=32),
    "rgb64-bicubic-crop": Preprocessing(input_size=64, interpolation="bicubic", crop_pct=0.875),
    "grey48-bicubic-crop": GREY,
}
# Pillow rounds each resample pass to 8 bits with weights computed in double, ONNX Runtime in
# float32: a pixel may come out a grey level apart. Pillow also picks which pass runs first from
# the sizes (checked on Pillow 13: a box resize may run the vertical pass first where the whole
# image runs the horizontal one), and a bicubic upscale then clips its overshoot differently: up
# to 4 levels on the odd crops here (embed.py's module docstring).
LEVELS = 4


def _session(model) -> ort.InferenceSession:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _save_png(arr: np.ndarray, path: Path) -> str:
    Image.fromarray(arr).save(path)
    return str(path)


@pytest.fixture(scope="module")
def elpv_paths() -> list[str]:
    """Every 8th real ELPV cell (328 of 2,624), 300x300 grey PNGs from the elpv-dataset wheel."""
    return [str(c.path) for c in elpv_cells()[::8]]


@pytest.fixture(scope="module")
def digit_paths(digits_dir: Path) -> list[str]:
    """All 1,797 real 8x8 digits (scikit-learn's UCI set) as PNG files."""
    return sorted(str(p) for p in digits_dir.rglob("*.png"))


@pytest.fixture(scope="module")
def odd_paths(tmp_path_factory, elpv_paths) -> list[str]:
    """Crops of real images with odd sizes and aspect ratios, grey, RGB and RGBA."""
    from sklearn.datasets import load_sample_image

    d = tmp_path_factory.mktemp("odd")
    china = load_sample_image("china.jpg")  # 427x640 RGB
    cell = np.asarray(Image.open(elpv_paths[3]))
    # a smooth alpha ramp (a vignette): composited over black it keeps the photo's soft edges
    # (a sawtooth alpha makes hard edges, where bicubic overshoot is clipped between Pillow's
    # two passes and not in the graph's one Resize: up to 14 levels apart)
    ramp = np.linspace(0, 255, 77 * 51).reshape(77, 51, 1).round()
    alpha = np.dstack([china[:77, :51], ramp])
    crops = {
        "china": china,
        "china_wide": china[100:117, 3:500],
        "china_tall": china[:401, 200:239],
        "china_tiny": china[5:10, 7:16],
        "china_rgba": alpha.astype(np.uint8),
        "cell_wide": cell[11:30, :],
        "cell_odd": cell[3:214, 17:54],
    }
    return [_save_png(a, d / f"{k}.png") for k, a in crops.items()]


def _export(prep: Preprocessing, path: Path) -> Path:
    """A small CNN exported as ``onnx_export._torch_export`` does, with transferkit metadata."""
    import torch

    s = prep.input_size
    program = torch.onnx.export(
        tiny_cnn(prep.channels),
        (torch.randn(2, prep.channels, s, s),),
        dynamo=True,
        input_names=["input"],
        output_names=["logits"],
        dynamic_shapes=({0: "batch"},),
        external_data=False,
    )
    program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    meta = ModelMetadata([str(i) for i in range(10)], prep, arch="tiny_cnn", source_run="here")
    meta.extra = {"purpose": "embed tests"}
    onnx.helper.set_model_props(proto, meta.to_props())
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def grey_onnx(tmp_path_factory) -> Path:
    return _export(GREY, tmp_path_factory.mktemp("grey") / "grey.onnx")


@pytest.mark.parametrize("name", sorted(PREPS))
def test_the_preprocessing_subgraph_matches_the_numpy_path(
    name, digit_paths, elpv_paths, odd_paths
):
    prep = PREPS[name]
    sess = _session(preprocessing_model(prep))
    paths = digit_paths[::20] + elpv_paths[::4] + odd_paths
    tol = LEVELS / 255 / min(prep.std) + 1e-5
    differing, total = 0, 0
    for p in paths:
        img = load_image(p)
        expected = preprocess(img, prep)
        (got,) = sess.run(None, {"image": to_uint8_hwc(img, prep.channels)[None]})
        assert got.shape == (1, *expected.shape) and got.dtype == np.float32, p
        diff = np.abs(got[0] - expected)
        assert diff.max() <= tol, (p, float(diff.max()))
        differing, total = differing + int((diff > 1e-6).sum()), total + diff.size
    assert differing / total < 0.01  # off-by-one levels are rare, not systematic


def test_rgba_and_grey_inputs_become_what_pillow_converts_them_to(odd_paths):
    """C = 4 drops alpha and C = 1 or 2 replicate grey, as Pillow's ``convert("RGB")``: the graph
    on those inputs equals the graph on Pillow's converted RGB image, bit for bit."""
    sess = _session(preprocessing_model(Preprocessing(input_size=32)))

    def run(img: Image.Image) -> np.ndarray:
        arr = np.asarray(img).reshape(img.height, img.width, -1)
        return sess.run(None, {"image": arr[None]})[0]

    rgba = Image.open(odd_paths[4])
    assert rgba.mode == "RGBA"
    np.testing.assert_array_equal(run(rgba), run(rgba.convert("RGB")))
    grey = rgba.convert("L")
    np.testing.assert_array_equal(run(grey), run(grey.convert("RGB")))
    np.testing.assert_array_equal(run(grey.convert("LA")), run(grey.convert("RGB")))


def test_luma_is_pillows_convert_L_exactly():
    """Every colour of a 64x64x64 lattice, at the model's size (no resize): the graph's grey
    value equals Pillow's ``convert("L")``, the documented R*299/1000 + G*587/1000 + B*114/1000
    within half a level."""
    levels = np.arange(0, 256, 4, dtype=np.uint8)
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    rgb = np.stack([r, g, b], -1).reshape(512, 512, 3)
    prep = Preprocessing(input_size=512, channels=1, mean=(0.0,), std=(1.0,))
    (got,) = _session(preprocessing_model(prep)).run(None, {"image": rgb[None]})
    luma = np.round(got[0, 0] * 255).astype(int)
    np.testing.assert_array_equal(luma, np.asarray(Image.fromarray(rgb).convert("L")))
    formula = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    assert np.abs(luma - formula).max() <= 0.5 + 1e-9


@pytest.fixture(scope="module")
def embedded(serving_onnx, tmp_path_factory, digit_paths, elpv_paths) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("embedded") / "digits_cnn.embedded.onnx"
    report = embed_preprocessing(serving_onnx, out, validate_on=digit_paths[::10] + elpv_paths)
    return out, report


def test_the_embedded_file_takes_uint8_nhwc_and_keeps_the_metadata(embedded, serving_onnx):
    path, report = embedded
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    (inp,) = m.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert all(d.dim_param and not d.dim_value for d in inp.type.tensor_type.shape.dim)
    assert len(inp.type.tensor_type.shape.dim) == 4
    outs = {o.name: o.type.tensor_type for o in m.graph.output}
    assert outs["probabilities"].elem_type == onnx.TensorProto.FLOAT
    assert outs["class_index"].elem_type == onnx.TensorProto.INT64
    assert [len(outs[k].shape.dim) for k in ("probabilities", "class_index")] == [2, 1]
    old = ModelMetadata.from_props(
        {p.key: p.value for p in onnx.load(str(serving_onnx)).metadata_props}
    )
    new = ModelMetadata.from_props({p.key: p.value for p in m.metadata_props})
    assert (new.class_names, new.preprocessing, new.arch, new.source_run) == (
        old.class_names,
        old.preprocessing,
        old.arch,
        old.source_run,
    )
    assert (new.input_name, new.output_name) == ("image", "probabilities")
    assert new.extra["embedded_preprocessing"] is True
    assert new.extra["purpose"] == old.extra["purpose"]
    assert new.extra["embed_validation"]["images_compared"] == report["images_compared"]
    assert report["file_bytes"] == path.stat().st_size and report["output"] == str(path)


def _numpy_path(onnx_path: Path, paths: list[str]) -> np.ndarray:
    """The server's path: imaging.preprocess, the fp32 file, softmax in numpy."""
    sess = _session(onnx_path)
    prep = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map).preprocessing
    x = np.stack([preprocess(load_image(p), prep) for p in paths])
    return softmax(sess.run(["logits"], {"input": x})[0])


def _embedded_path(
    onnx_path: Path, paths: list[str], channels: int
) -> tuple[np.ndarray, np.ndarray]:
    sess = _session(onnx_path)
    probs, index = [], []
    for p in paths:  # one image per run: each at its own size
        pr, ix = sess.run(None, {"image": to_uint8_hwc(load_image(p), channels)[None]})
        probs.append(pr[0])
        index.append(ix[0])
    return np.stack(probs), np.array(index)


@pytest.mark.parametrize("dataset", ["digits", "elpv", "odd"])
def test_top1_agrees_with_the_numpy_path_at_original_sizes(
    dataset, embedded, serving_onnx, digit_paths, elpv_paths, odd_paths
):
    paths = {"digits": digit_paths, "elpv": elpv_paths, "odd": odd_paths}[dataset]
    expected = _numpy_path(serving_onnx, paths)
    probs, index = _embedded_path(embedded[0], paths, 3)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    agree = (probs.argmax(1) == expected.argmax(1)).mean()
    assert agree >= 0.995, agree
    assert (index == expected.argmax(1)).mean() >= 0.995
    assert np.abs(probs - expected).max() < 0.05


def test_a_grey_model_agrees_on_grey_and_colour_images(
    grey_onnx, tmp_path, digit_paths, elpv_paths, odd_paths
):
    paths = digit_paths[::5] + elpv_paths + odd_paths  # odd: RGB and RGBA, luma in the graph
    report = embed_preprocessing(grey_onnx, tmp_path / "grey.onnx", validate_on=paths[:50])
    assert report["passed"] and report["images_compared"] == 50
    expected = _numpy_path(grey_onnx, paths)
    probs, _ = _embedded_path(tmp_path / "grey.onnx", paths, 1)
    assert (probs.argmax(1) == expected.argmax(1)).mean() >= 0.995
    assert np.abs(probs - expected).max() < 0.05


def test_a_batch_of_same_sized_images_gives_each_images_answer(embedded, elpv_paths):
    batch = np.stack([to_uint8_hwc(load_image(p), 3) for p in elpv_paths[:6]])
    probs, index = _session(embedded[0]).run(None, {"image": batch})
    one_by_one, _ = _embedded_path(embedded[0], elpv_paths[:6], 3)
    np.testing.assert_allclose(probs, one_by_one, atol=1e-6)
    assert index.tolist() == probs.argmax(1).tolist()


def test_a_wrong_embedding_fails_loudly_and_leaves_no_file(
    serving_onnx, tmp_path, monkeypatch, elpv_paths
):
    import transferkit.export.embed as embed

    real = embed.preprocessing_model

    def unnormalised(prep, *args):  # a bug: the graph forgets mean/std
        return real(prep.model_copy(update={"mean": (0.0,) * 3, "std": (1.0,) * 3}), *args)

    monkeypatch.setattr(embed, "preprocessing_model", unnormalised)
    out = tmp_path / "bad.onnx"
    with pytest.raises(EmbedValidationError, match="top-1 agreement|probability difference") as e:
        embed_preprocessing(serving_onnx, out, validate_on=elpv_paths[:40])
    assert not out.exists()
    assert e.value.report["passed"] is False and e.value.report["images_compared"] == 40
    again = pickle.loads(pickle.dumps(e.value))
    assert again.failures == e.value.failures


def test_inputs_it_cannot_embed_are_clear_errors(serving_onnx, embedded, tmp_path, elpv_paths):
    bare = onnx.load(str(serving_onnx))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(MetadataError, match="no transferkit metadata"):
        embed_preprocessing(tmp_path / "bare.onnx", tmp_path / "o.onnx", elpv_paths[:2])
    with pytest.raises(EmbedError, match="already embeds"):
        embed_preprocessing(embedded[0], tmp_path / "o.onnx", elpv_paths[:2])
    with pytest.raises(UsageError, match="no real images"):
        embed_preprocessing(serving_onnx, tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.slow
def test_a_trained_mobilenet_embeds_and_agrees_on_its_own_test_split(exported_onnx, tmp_path):
    """End to end (needs the session's Ray cluster for ``trained_run``): the real fine-tuned
    MobileNetV2 export, validated by default on the run's held-out split (its ``splits.json``);
    the expected answers are the numpy path's, computed here."""
    from transferkit.data.folder import Splits

    report = embed_preprocessing(exported_onnx, tmp_path / "teacher-embedded.onnx")
    meta = ModelMetadata.from_props(
        {p.key: p.value for p in onnx.load(str(exported_onnx)).metadata_props}
    )
    run = Path(meta.source_run)
    splits = Splits.from_json(((run if run.is_dir() else run.parent) / "splits.json").read_text())
    paths = [p for p, _ in splits.test]
    assert report["images_compared"] == min(len(paths), 256) and report["passed"]
    expected = _numpy_path(exported_onnx, paths)
    probs, index = _embedded_path(tmp_path / "teacher-embedded.onnx", paths, 3)
    assert (index == expected.argmax(1)).mean() >= 0.995
    assert np.abs(probs - expected).max() < 0.05
