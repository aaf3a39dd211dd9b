"""Preprocessing inside the graph: an exported classifier that takes the decoded image itself.

:func:`embed_preprocessing` composes three ONNX graphs with ``onnx.compose.merge_models``:
:func:`~transferkit.export.graphs.preprocessing_model` (uint8 ``[N, H, W, C]`` -> float32
``[N, C', S, S]``, every step of :func:`transferkit.imaging.preprocess` as ONNX operators), the
exported fp32 classifier, and :func:`~transferkit.export.graphs.postprocessing_model` (logits ->
``probabilities`` float32 ``[N, K]`` and ``class_index`` int64 ``[N]``). Its transferkit metadata
is the classifier's, with ``input_name="image"``, ``output_name="probabilities"`` and
``extra["embedded_preprocessing"] = True``.

Where it can differ from the server's numpy path (``transferkit.imaging``, Pillow 13):

* 8-bit rounding inside the resample. Pillow resamples in two passes, each rounded and clipped
  to 8 bits, with fixed-point (22-bit) weights computed in double; ONNX Runtime's ``Resize`` on
  uint8 rounds each pass to 8 bits too (a float32 resize differs by up to 0.8 levels more), but
  computes coordinates and weights in float32, so a value on a rounding boundary can come out one
  grey level apart. Measured on all 1,797 digits (8x8) and all 2,624 ELPV cells (300x300) at
  their original sizes, for 32 px bilinear, 64 px bicubic (crop_pct 0.875), 48 px grey bicubic
  (0.875) and 224 px bilinear (0.875): at most 1 level (0.0175 after ``std`` 0.224), in at most
  0.021% of the tensor's values (none at all for 32 px digits and 224 px).
* Pass order. Pillow 13 may run the vertical pass first (it did for a box resize whose whole-image
  resize runs the horizontal one first); the graph resizes the whole image, horizontal pass first,
  then crops. Where both passes upsample with bicubic, whose overshoot is clipped in between, this
  gave up to 4 levels on odd crops of sklearn's china.jpg (e.g. 39x401 to 48 px grey).
* ``nearest``: where ``(x + 0.5) * scale`` is exactly an integer, Pillow's accumulated double
  coordinate can fall just below it and pick the previous source pixel; ONNX Runtime picks the
  exact one (a whole row or column shifted by one).
* Float arithmetic after the resize (``/ 255``, ``- mean``, ``/ std`` in float32) is numpy's
  operations in numpy's order: identical on identical pixels. The softmax runs in float32 in the
  graph, in float64 in the server (``transferkit.metrics.softmax``): < 1e-6.

Top-1 of the embedded file against the numpy path, measured with small CNNs (random weights) at
32 px bilinear, 48 px grey bicubic and 64 px bicubic: 100% on all 1,797 digits and all 2,624
ELPV cells, largest probability difference 8e-5.

:func:`validate_embedded` measures this on real images; a file that agrees on fewer than
:data:`MIN_TOP1_AGREEMENT` of them, or whose probabilities differ by more than
:data:`MAX_PROB_DIFF`, fails the embedding (:class:`EmbedValidationError`; the file is removed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.compose

from transferkit.errors import TransferkitError, UsageError
from transferkit.export.graphs import (
    CLASS_INDEX,
    IMAGE_INPUT,
    PROBABILITIES,
    postprocessing_model,
    preprocessing_model,
)
from transferkit.imaging import load_image, preprocess, to_uint8_hwc
from transferkit.metadata import ModelMetadata
from transferkit.metrics import softmax

__all__ = [
    "EmbedError",
    "EmbedValidationError",
    "embed_preprocessing",
    "validate_embedded",
    "preprocessing_model",
    "MIN_TOP1_AGREEMENT",
    "MAX_PROB_DIFF",
]

MIN_TOP1_AGREEMENT = 0.995
MAX_PROB_DIFF = 0.05  # largest |p_embedded - p_numpy| accepted on any image and class
MAX_VALIDATION_IMAGES = 256


class EmbedError(TransferkitError, RuntimeError):
    """The classifier cannot take embedded preprocessing (no transferkit metadata, opset < 18,
    not a float32 ``[N, C, H, W]`` -> ``[N, K]`` graph, a name clash); the message says which."""


class EmbedValidationError(EmbedError):
    """The embedded file disagrees with the numpy path on real images (figures in ``report``)."""

    def __init__(self, failures: list[str], report: dict[str, Any] | None = None):
        super().__init__(
            "embedded preprocessing failed validation:\n  - " + "\n  - ".join(failures)
        )
        self.failures = failures
        self.report = report or {}

    def __reduce__(self):  # picklable across processes
        return (self.__class__, (self.failures, self.report))


def _load(path: Path) -> tuple[onnx.ModelProto, ModelMetadata]:
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - onnx raises DecodeError, OSError, ...
        raise EmbedError(f"cannot read ONNX model {path}: {exc}") from exc
    props = {p.key: p.value for p in model.metadata_props}
    return model, ModelMetadata.from_props(props)


def _check_classifier(model: onnx.ModelProto, meta: ModelMetadata) -> None:
    """The graph is a transferkit fp32 classifier that does not embed preprocessing already."""
    if meta.extra.get("embedded_preprocessing"):
        raise EmbedError("the model already embeds its preprocessing")
    inputs = {i.name: i for i in model.graph.input}
    outputs = [o.name for o in model.graph.output]
    if meta.input_name not in inputs or meta.output_name not in outputs:
        raise EmbedError(
            f"the graph's inputs {list(inputs)} / outputs {outputs} do not include the metadata's "
            f"{meta.input_name!r} / {meta.output_name!r}"
        )
    t = inputs[meta.input_name].type.tensor_type
    if t.elem_type != onnx.TensorProto.FLOAT or len(t.shape.dim) != 4:
        raise EmbedError(f"input {meta.input_name!r} is not float32 [N, C, H, W]")
    taken = {n for node in model.graph.node for n in (*node.input, *node.output)}
    clash = {IMAGE_INPUT, PROBABILITIES, CLASS_INDEX} & (taken | set(inputs) | set(outputs))
    if clash:
        raise EmbedError(f"the graph already uses the names {sorted(clash)}")


def _compose(model: onnx.ModelProto, meta: ModelMetadata) -> onnx.ModelProto:
    """Preprocessing -> classifier -> postprocessing, merged into one graph."""
    opsets, ir = list(model.opset_import), model.ir_version
    try:
        pre = preprocessing_model(meta.preprocessing, meta.input_name, opsets, ir)
    except ValueError as exc:
        raise EmbedError(f"{exc}: re-export the model with `--opset 18` or later") from exc
    post = postprocessing_model(meta.output_name, len(meta.class_names), opsets, ir)
    try:
        merged = onnx.compose.merge_models(pre, model, io_map=[(meta.input_name,) * 2])
        merged = onnx.compose.merge_models(merged, post, io_map=[(meta.output_name,) * 2])
    except ValueError as exc:
        raise EmbedError(f"cannot compose the preprocessing with the model: {exc}") from exc
    del merged.metadata_props[:]
    return merged


def _embedded_metadata(meta: ModelMetadata, source: Path) -> ModelMetadata:
    extra = {**meta.extra, "embedded_preprocessing": True, "embedded_from": str(source)}
    extra["embedded_io"] = {
        "input": f"{IMAGE_INPUT}: uint8 [N, H, W, C], C = 1 (grey), 3 (RGB) or 4 (RGBA)",
        "outputs": f"{PROBABILITIES}: float32 [N, K]; {CLASS_INDEX}: int64 [N]",
    }
    return ModelMetadata(
        class_names=list(meta.class_names),
        preprocessing=meta.preprocessing,
        arch=meta.arch,
        source_run=meta.source_run,
        input_name=IMAGE_INPUT,
        output_name=PROBABILITIES,
        extra=extra,
    )


def _save(model: onnx.ModelProto, meta: ModelMetadata, path: Path) -> None:
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, meta.to_props())
    model.doc_string = f"transferkit {meta.arch} with embedded preprocessing (uint8 NHWC image)"
    onnx.save(model, str(path), save_as_external_data=False)


def _source_run_images(meta: ModelMetadata, limit: int) -> list[str]:
    """Held-out images of the run the model came from (its ``splits.json``: test, else val)."""
    from transferkit.data.folder import Splits

    run = Path(meta.source_run) if meta.source_run else None
    if run is None or not run.exists():
        return []
    f = (run if run.is_dir() else run.parent) / "splits.json"
    if not f.is_file():
        return []
    splits = Splits.from_json(f.read_text())
    held_out = [p for p, _ in splits.test] or [p for p, _ in splits.val]
    return [p for p in held_out if Path(p).is_file()][:limit]


def _session(model: str | bytes):
    import onnxruntime as ort

    return ort.InferenceSession(model, providers=["CPUExecutionProvider"])


def _compare_one(path: str, prep: Any, sessions: tuple, names: tuple[str, str]) -> tuple:
    """One image: (numpy-path probabilities [K], embedded probabilities [K], class_index,
    max |embedded sub-graph input - preprocess input|)."""
    ref_sess, emb_sess, pre_sess = sessions
    img = load_image(path)
    x = preprocess(img, prep)
    ref = softmax(ref_sess.run([names[1]], {names[0]: x[None]})[0])[0]
    raw = to_uint8_hwc(img, prep.channels, prep.background)[None]
    probs, index = emb_sess.run([PROBABILITIES, CLASS_INDEX], {IMAGE_INPUT: raw})
    x_graph = pre_sess.run(None, {IMAGE_INPUT: raw})[0][0]
    return ref, probs[0], int(index[0]), float(np.abs(x_graph - x).max())


def _failures(agree: int, index_agree: int, n: int, prob_diff: float) -> list[str]:
    if not n:
        return ["no images to compare on"]
    failures = []
    if min(agree, index_agree) < MIN_TOP1_AGREEMENT * n:
        failures.append(
            f"top-1 agreement {agree}/{n} (class_index {index_agree}/{n}) with the numpy path; "
            f"expected >= {MIN_TOP1_AGREEMENT:.1%}"
        )
    if prob_diff > MAX_PROB_DIFF:
        failures.append(f"max abs probability difference {prob_diff:.3g} > {MAX_PROB_DIFF:g}")
    return failures


def validate_embedded(
    embedded: str | Path, original: str | Path, images: Sequence[str]
) -> dict[str, Any]:
    """Compare the embedded file with the numpy path (the server's) on real images.

    For each image: the original file on ``transferkit.imaging.preprocess`` (softmax of its
    logits, in float64) against the embedded file on the raw pixels
    (``transferkit.imaging.to_uint8_hwc``), one image per run at its own size; and the
    preprocessing sub-graph's float32 ``[C, S, S]`` tensor against ``preprocess``'s.

    Args:
        embedded: the file :func:`embed_preprocessing` wrote.
        original: the fp32 classifier it was made from.
        images: image paths (any format Pillow reads).

    Returns:
        ``{"images_compared", "top1_agreement", "class_index_agreement"`` (fractions in [0, 1]),
        ``"max_abs_prob_diff", "max_abs_input_diff"`` (normalised input units), ``"failures"}``;
        ``failures`` lists what is out of bounds (:data:`MIN_TOP1_AGREEMENT`,
        :data:`MAX_PROB_DIFF`), empty when the file passes.

    Raises:
        MetadataError: ``original`` carries no transferkit metadata.
        ImageDecodeError: an image does not decode.
    """
    _, meta = _load(Path(original))
    prep = meta.preprocessing
    pre = preprocessing_model(prep, "x").SerializeToString()
    sessions = (_session(str(original)), _session(str(embedded)), _session(pre))
    agree = index_agree = 0
    prob_diff = input_diff = 0.0
    for path in images:
        ref, probs, index, x_diff = _compare_one(
            path, prep, sessions, (meta.input_name, meta.output_name)
        )
        input_diff, prob_diff = (
            max(input_diff, x_diff),
            max(prob_diff, float(np.abs(probs - ref).max())),
        )
        agree += int(probs.argmax() == ref.argmax())
        index_agree += int(index == ref.argmax())
    n = len(images)
    return {
        "images_compared": n,
        "top1_agreement": agree / n if n else float("nan"),
        "class_index_agreement": index_agree / n if n else float("nan"),
        "max_abs_prob_diff": prob_diff,
        "max_abs_input_diff": input_diff,
        "failures": _failures(agree, index_agree, n, prob_diff),
    }


def embed_preprocessing(
    model_onnx: str | Path, output: str | Path, validate_on: Sequence[str] | None = None
) -> dict[str, Any]:
    """Write ``output``: ``model_onnx`` with its preprocessing and softmax inside the graph.

    Input ``image`` uint8 ``[N, H, W, C]`` (N, H, W, C symbolic; C = 1 grey, 3 RGB, 4 RGBA with
    alpha dropped); outputs ``probabilities`` float32 ``[N, K]`` and ``class_index`` int64
    ``[N]``. One run takes images of one size; see the module docstring for where it can differ
    from ``transferkit.imaging.preprocess`` and by how much.

    Args:
        model_onnx: an fp32 file written by ``transferkit export`` (float32 ``[N, C, H, W]``
            input, logits output, transferkit metadata), default-domain opset >= 18.
        output: where to write the new file (self-contained, no external data).
        validate_on: real image paths to validate on (at most 256 are used); default: the
            held-out split of the metadata's source run.

    Returns:
        ``{"output", "source", "images_compared", "top1_agreement", "class_index_agreement",
        "max_abs_prob_diff", "max_abs_input_diff", "file_bytes", "passed": True}``; the figures
        are also stored in the file's ``extra["embed_validation"]``.

    Raises:
        MetadataError: ``model_onnx`` carries no transferkit metadata.
        EmbedError: the model cannot be composed (see :class:`EmbedError`).
        UsageError: no images to validate on.
        EmbedValidationError: the embedded file disagrees with the numpy path (it is removed).
    """
    src, out = Path(model_onnx), Path(output).expanduser().resolve()
    model, meta = _load(src)
    _check_classifier(model, meta)
    paths = list(validate_on) if validate_on else _source_run_images(meta, MAX_VALIDATION_IMAGES)
    if not paths:
        raise UsageError(
            f"no real images to validate the embedded preprocessing of {src} on: pass image "
            "paths (validate_on=..., `--images DIR`)"
        )
    merged = _compose(model, meta)
    try:
        onnx.checker.check_model(merged, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EmbedError(f"the composed graph is not valid ONNX: {exc}") from exc
    emb_meta = _embedded_metadata(meta, src)
    out.parent.mkdir(parents=True, exist_ok=True)
    _save(merged, emb_meta, out)
    figures = validate_embedded(out, src, paths[:MAX_VALIDATION_IMAGES])
    failures = figures.pop("failures")
    report = {"output": str(out), "source": str(src), **figures}
    if failures:
        out.unlink(missing_ok=True)
        raise EmbedValidationError(failures, {**report, "passed": False})
    emb_meta.extra["embed_validation"] = figures
    _save(merged, emb_meta, out)
    return {**report, "file_bytes": out.stat().st_size, "passed": True}
