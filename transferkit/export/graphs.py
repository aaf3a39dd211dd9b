"""The ONNX sub-graphs that put transferkit's preprocessing and postprocessing inside a model.

:func:`preprocessing_model` turns a decoded image, uint8 ``[N, H, W, C]``, into the float32
``[N, channels, input_size, input_size]`` model input, with the steps of
:func:`transferkit.imaging.preprocess` as ONNX operators (opset >= 18):

1. channels (``Shape``/``Gather``): C >= 3 keeps R, G, B (alpha dropped, as Pillow's
   ``convert("RGB")`` does); C < 3 replicates channel 0 (grey, grey + alpha). A 1-channel model
   then takes Pillow's luma in integers, ``L = (19595 R + 38470 G + 7471 B + 32768) >> 16``
   (Pillow ``libImaging/Convert.c``, the fixed-point form of ``R*299/1000 + G*587/1000 +
   B*114/1000`` from Pillow's ``Image.convert`` docs), so grey stays grey exactly;
2. sizes from the input's shape, as ``resize_and_crop`` computes them: the shorter side becomes
   ``round(input_size / crop_pct)``, the longer ``short * long // short_side`` (integer ``Div``,
   torchvision's ``int(...)``), crop offsets ``Round((resized - input_size) / 2)`` (ONNX ``Round``
   rounds half to even, as Python's ``round``);
3. ``Resize`` (ONNX operator spec, opset 18) on the uint8 tensor, ``half_pixel`` coordinates;
   bilinear/bicubic with ``antialias=1`` and ``exclude_outside=1`` (Pillow widens the filter by
   the downscale factor and renormalises the taps that fall inside the image), bicubic with
   ``cubic_coeff_a=-0.5`` (Pillow's ``bicubic_filter``); nearest with ``round_prefer_ceil`` (Pillow
   takes ``floor((x + 0.5) * scale)``). On uint8 ONNX Runtime rounds and clips each pass to 8 bits
   as Pillow's ``ImagingResample`` does (checked: a float32 resize differs from Pillow by up to
   0.8 grey levels, the uint8 one by at most 1 level in ~0.01% of pixels);
4. ``Slice`` (the center crop), ``Cast`` to float32, ``/ 255``, ``(x - mean) / std``,
   ``Transpose`` NHWC -> NCHW.

The crop is taken after resizing the whole image, which gives the same filter taps as Pillow's
``resize(box=...)``; the intermediate is ``short x long`` uint8 (an extreme aspect ratio makes it
wide; the server's pixel limit bounds it).

:func:`postprocessing_model` maps logits ``[N, K]`` to ``probabilities`` (``Softmax``) and
``class_index`` (``ArgMax``). Imports onnx and numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from transferkit.preprocessing import Preprocessing

__all__ = [
    "IMAGE_INPUT",
    "PROBABILITIES",
    "CLASS_INDEX",
    "MIN_OPSET",
    "preprocessing_model",
    "postprocessing_model",
]

IMAGE_INPUT = "image"
PROBABILITIES = "probabilities"
CLASS_INDEX = "class_index"
MIN_OPSET = 18  # Resize with antialias and the axes attribute
_P = "tk_pre."  # prefix of the preprocessing graph's internal names (unique in the merged graph)
_LUMA = (19595, 38470, 7471)  # Pillow's L24 weights, sum 65536
_RESIZE_MODE = {"nearest": "nearest", "bilinear": "linear", "bicubic": "cubic"}


def _const(name: str, value: object, dtype: type = np.int64) -> onnx.NodeProto:
    arr = np.asarray(value, dtype=dtype)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name))


def _node(op: str, inputs: Sequence[str], output: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), [output], **attrs)


def _channel_nodes(channels: int) -> list[onnx.NodeProto]:
    """``image`` uint8 [N, H, W, C] -> ``tk_pre.chan`` uint8 [N, H, W, channels]."""
    p = _P
    nodes = [
        _const(p + "rgb_idx", [0, 1, 2]),
        _const(p + "three", [3]),
        _const(p + "four", [4]),
        _node("Shape", [IMAGE_INPUT], p + "shape"),
        _node("Slice", [p + "shape", p + "three", p + "four"], p + "c"),
        _node("GreaterOrEqual", [p + "c", p + "three"], p + "has_rgb"),
        _node("Cast", [p + "has_rgb"], p + "has_rgb_i", to=TensorProto.INT64),
        _node("Mul", [p + "rgb_idx", p + "has_rgb_i"], p + "idx"),
        _node("Gather", [IMAGE_INPUT, p + "idx"], p + "rgb", axis=3),
    ]
    if channels == 3:
        return [*nodes, _node("Identity", [p + "rgb"], p + "chan")]
    return [
        *nodes,
        _node("Cast", [p + "rgb"], p + "rgb32", to=TensorProto.INT32),
        _const(p + "luma_w", _LUMA, np.int32),
        _node("Mul", [p + "rgb32", p + "luma_w"], p + "weighted"),
        _const(p + "axis_c", [3]),
        _node("ReduceSum", [p + "weighted", p + "axis_c"], p + "sum", keepdims=1),
        _const(p + "half", 1 << 15, np.int32),
        _node("Add", [p + "sum", p + "half"], p + "rounded"),
        _const(p + "unit", 1 << 16, np.int32),
        _node("Div", [p + "rounded", p + "unit"], p + "luma32"),
        _node("Cast", [p + "luma32"], p + "chan", to=TensorProto.UINT8),
    ]


def _size_nodes(prep: Preprocessing) -> list[onnx.NodeProto]:
    """``tk_pre.shape`` -> ``tk_pre.sizes`` [new_h, new_w] and ``tk_pre.starts`` / ``ends`` of
    the crop, int64 [2], exactly as ``transferkit.imaging.resize_and_crop``."""
    p, short = _P, round(prep.input_size / prep.crop_pct)
    return [
        _const(p + "i1", [1]),
        _const(p + "i2", [2]),
        _const(p + "i3", [3]),
        _node("Slice", [p + "shape", p + "i1", p + "i2"], p + "h"),
        _node("Slice", [p + "shape", p + "i2", p + "i3"], p + "w"),
        _const(p + "short", [short]),
        _node("Mul", [p + "short", p + "h"], p + "sh"),
        _node("Div", [p + "sh", p + "w"], p + "long_h"),
        _node("Mul", [p + "short", p + "w"], p + "sw"),
        _node("Div", [p + "sw", p + "h"], p + "long_w"),
        _node("LessOrEqual", [p + "w", p + "h"], p + "portrait"),
        _node("Where", [p + "portrait", p + "long_h", p + "short"], p + "new_h"),
        _node("Where", [p + "portrait", p + "short", p + "long_w"], p + "new_w"),
        _node("Concat", [p + "new_h", p + "new_w"], p + "sizes", axis=0),
        _const(p + "size2", [prep.input_size] * 2),
        _node("Sub", [p + "sizes", p + "size2"], p + "spare"),
        _node("Cast", [p + "spare"], p + "spare_f", to=TensorProto.DOUBLE),
        _const(p + "two", [2.0], np.float64),
        _node("Div", [p + "spare_f", p + "two"], p + "offset_f"),
        _node("Round", [p + "offset_f"], p + "offset_r"),
        _node("Cast", [p + "offset_r"], p + "starts", to=TensorProto.INT64),
        _node("Add", [p + "starts", p + "size2"], p + "ends"),
    ]


def _resize_nodes(prep: Preprocessing) -> list[onnx.NodeProto]:
    """``tk_pre.chan`` -> ``tk_pre.crop`` uint8 [N, input_size, input_size, channels]."""
    p = _P
    attrs: dict[str, object] = {"mode": _RESIZE_MODE[prep.interpolation], "axes": [1, 2]}
    attrs["coordinate_transformation_mode"] = "half_pixel"
    if prep.interpolation == "nearest":
        attrs["nearest_mode"] = "round_prefer_ceil"
    else:
        attrs.update(antialias=1, exclude_outside=1, cubic_coeff_a=-0.5)
    return [
        _node("Resize", [p + "chan", "", "", p + "sizes"], p + "resized", **attrs),
        _const(p + "hw_axes", [1, 2]),
        _node("Slice", [p + "resized", p + "starts", p + "ends", p + "hw_axes"], p + "crop"),
    ]


def _normalise_nodes(prep: Preprocessing, output: str) -> list[onnx.NodeProto]:
    """``tk_pre.crop`` -> ``output`` float32 [N, C, H, W], ``(x / 255 - mean) / std``."""
    p = _P
    return [
        _node("Cast", [p + "crop"], p + "float", to=TensorProto.FLOAT),
        _const(p + "255", 255.0, np.float32),
        _node("Div", [p + "float", p + "255"], p + "unit_range"),
        _const(p + "mean", prep.mean, np.float32),
        _node("Sub", [p + "unit_range", p + "mean"], p + "centred"),
        _const(p + "std", prep.std, np.float32),
        _node("Div", [p + "centred", p + "std"], p + "nhwc"),
        _node("Transpose", [p + "nhwc"], output, perm=[0, 3, 1, 2]),
    ]


def preprocessing_model(
    prep: Preprocessing,
    output_name: str = "input",
    opset_imports: Sequence[onnx.OperatorSetIdProto] | None = None,
    ir_version: int = 10,
) -> onnx.ModelProto:
    """The preprocessing sub-graph on its own (see the module docstring for each step).

    Args:
        prep: the model's preprocessing (input size, channels, mean/std, interpolation,
            crop_pct).
        output_name: name of the output (the model input it will feed).
        opset_imports: the opsets to declare (a model's, to merge with it); default: opset 18.
        ir_version: the ONNX IR version (the model's, to merge with it).

    Returns:
        An ONNX model: input ``image`` uint8 ``[batch, height, width, channels]`` (all symbolic;
        C = 1, 3 or 4), output float32 ``[batch, prep.channels, input_size, input_size]``.

    Raises:
        ValueError: the default-domain opset is below 18.
    """
    opsets = list(opset_imports) if opset_imports else [helper.make_opsetid("", MIN_OPSET)]
    default = max((o.version for o in opsets if o.domain in ("", "ai.onnx")), default=0)
    if default < MIN_OPSET:
        raise ValueError(f"embedded preprocessing needs opset >= {MIN_OPSET}; got {default}")
    nodes = _channel_nodes(prep.channels) + _size_nodes(prep) + _resize_nodes(prep)
    nodes += _normalise_nodes(prep, output_name)
    s = prep.input_size
    graph = helper.make_graph(
        nodes,
        "transferkit_preprocessing",
        [
            helper.make_tensor_value_info(
                IMAGE_INPUT, TensorProto.UINT8, ["batch", "height", "width", "channels"]
            )
        ],
        [
            helper.make_tensor_value_info(
                output_name, TensorProto.FLOAT, ["batch", prep.channels, s, s]
            )
        ],
    )
    return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)


def postprocessing_model(
    logits_name: str,
    num_classes: int,
    opset_imports: Sequence[onnx.OperatorSetIdProto],
    ir_version: int,
) -> onnx.ModelProto:
    """Logits -> class probabilities and the top-1 index (ONNX ``Softmax``, ``ArgMax``).

    Args:
        logits_name: the input's name (the classifier's logits output).
        num_classes: K.
        opset_imports: the opsets to declare (the classifier's).
        ir_version: the ONNX IR version (the classifier's).

    Returns:
        An ONNX model: float32 ``[batch, K]`` -> ``probabilities`` float32 ``[batch, K]`` (each
        row sums to 1) and ``class_index`` int64 ``[batch]`` (argmax of the logits, first index on
        ties).
    """
    graph = helper.make_graph(
        [
            _node("Softmax", [logits_name], PROBABILITIES, axis=-1),
            _node("ArgMax", [logits_name], CLASS_INDEX, axis=1, keepdims=0),
        ],
        "transferkit_postprocessing",
        [helper.make_tensor_value_info(logits_name, TensorProto.FLOAT, ["batch", num_classes])],
        [
            helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", num_classes]),
            helper.make_tensor_value_info(CLASS_INDEX, TensorProto.INT64, ["batch"]),
        ],
    )
    return helper.make_model(graph, opset_imports=list(opset_imports), ir_version=ir_version)
