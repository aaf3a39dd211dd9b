"""Open Inference Protocol v2 (KServe v2 REST protocol) messages for transferkit classifiers.

Follows the KServe "V2 Inference Protocol" REST spec
(https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol and
https://github.com/kserve/open-inference-protocol, ``specification/protocol/inference_rest.md``):

* server metadata ``{"name", "version", "extensions"}``;
* model metadata ``{"name", "versions", "platform", "inputs", "outputs"}``, each tensor
  ``{"name", "datatype", "shape"}`` with -1 for a variable dimension (the batch);
* inference request ``{"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "data",
  "parameters"?}], "outputs"?: [{"name", "parameters"?}]}``; ``data`` flat in row-major order
  (nested lists of the same shape are accepted too, as the spec allows);
* inference response ``{"model_name", "model_version", "id"?, "outputs": [{"name", "shape",
  "datatype", "data"}]}``;
* errors ``{"error": "<message>"}``.

Only what a transferkit model takes is accepted: one ``FP32`` input ``[N, C, H, W]`` and its
logits output ``FP32 [N, K]``; a model with embedded preprocessing (``transferkit.export.embed``)
takes one ``UINT8`` image tensor ``[N, H, W, C]`` (integers 0..255, C = 1..4, one size per
request) and answers its probabilities ``FP32 [N, K]``. The binary tensor extension is not implemented; send an encoded
image as the raw body instead (the server's own extension, see ``app.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image

from transferkit.imaging import to_uint8_hwc
from transferkit.preprocessing import Preprocessing
from transferkit.serving.errors import InvalidInputError, InvalidTensorError
from transferkit.serving.model import OnnxClassifier

__all__ = ["PLATFORM", "model_metadata", "parse_infer_request", "infer_response"]

#: Triton's platform string for ONNX models.
PLATFORM = "onnxruntime_onnx"


def model_metadata(clf: OnnxClassifier, versions: list[str]) -> dict[str, Any]:
    """OIP v2 model metadata, with transferkit's own details under ``parameters``.

    Args:
        clf: the loaded model.
        versions: every served version of this model name.

    Returns:
        JSON-ready dict; tensor shapes use -1 for the batch dimension.
    """
    meta = clf.metadata_dict()
    return {
        "name": clf.name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [clf.tensor_spec("input")],
        "outputs": [clf.tensor_spec("output")],
        "parameters": {
            "class_names": meta["class_names"],
            "preprocessing": meta["preprocessing"],
            "arch": meta["arch"],
            "execution_providers": meta["execution_providers"],
            "intra_op_threads": meta["intra_op_threads"],
        },
    }


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_infer_request(
    payload: Any, clf: OnnxClassifier, max_rows: int
) -> tuple[np.ndarray, str | None]:
    """Check an OIP v2 inference request against the model and build its input.

    Args:
        payload: the decoded JSON body.
        clf: the model it is for.
        max_rows: largest batch dimension accepted.

    Returns:
        ``(x, request_id)``: float32 ``[N, C, H, W]`` (uint8 ``[N, H, W, C]`` for a ``UINT8``
        input) and the request's ``id`` (or None).

    Raises:
        InvalidInputError: the body is not an OIP request object (no ``inputs`` list, ``id`` not a
            string, ``outputs`` malformed).
        InvalidTensorError: the tensor's name, datatype, rank, shape or data does not fit the
            model; an unknown output is requested. Messages name the expected value.
    """
    if not isinstance(payload, dict):
        raise InvalidInputError(
            f"the request body must be a JSON object; got {type(payload).__name__}"
        )
    rid = payload.get("id")
    if rid is not None and not isinstance(rid, str):
        raise InvalidInputError(f"'id' must be a string; got {type(rid).__name__}")
    spec = clf.tensor_spec("input")
    t = _the_input(payload.get("inputs"), clf.name, spec)
    shape = _checked_shape(t.get("shape"), spec, max_rows)
    arr = _tensor_data(t.get("data"), shape)
    if spec["datatype"] == "UINT8":
        arr = _uint8_image(arr.reshape(shape), shape, clf.preprocessing)
        shape = list(arr.shape)
    _check_outputs(payload.get("outputs"), clf)
    return np.ascontiguousarray(arr.reshape(shape)), rid


def _the_input(inputs: Any, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The request's one input tensor object, its name and datatype those of the model."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInputError(
            f"'inputs' must be a non-empty list of tensors; model {model!r} takes {spec['name']!r}"
        )
    if len(inputs) != 1:
        raise InvalidTensorError(
            f"model {model!r} takes 1 input ({spec['name']!r}); got {len(inputs)}"
        )
    t = inputs[0]
    if not isinstance(t, dict):
        raise InvalidInputError("each input must be an object with name, shape, datatype and data")
    if t.get("name") != spec["name"]:
        raise InvalidTensorError(
            f"unknown input {t.get('name')!r}: model {model!r} takes {spec['name']!r}"
        )
    if t.get("datatype") != spec["datatype"]:
        raise InvalidTensorError(
            f"input {spec['name']!r} has datatype {spec['datatype']}; got {t.get('datatype')!r}"
        )
    return t


def _checked_shape(shape: Any, spec: dict[str, Any], max_rows: int) -> list[int]:
    """The tensor's shape, checked against the model's (-1: any) and the row limit."""
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise InvalidTensorError(
            f"input 'shape' must be a list of non-negative integers; got {shape!r}"
        )
    expected = spec["shape"]
    if len(shape) != len(expected):
        raise InvalidTensorError(
            f"input {spec['name']!r} has rank {len(expected)} {expected}; got rank {len(shape)} {shape}"
        )
    if any(e != -1 and s != e for s, e in zip(shape, expected)):
        raise InvalidTensorError(
            f"input {spec['name']!r} has shape {expected} (-1: any); got {shape}"
        )
    if not 1 <= shape[0] <= max_rows:
        raise InvalidTensorError(f"batch dimension must be 1..{max_rows}; got {shape[0]}")
    return shape


def _tensor_data(data: Any, shape: list[int]) -> np.ndarray:
    """The tensor's data as float32: flat in row-major order, or nested exactly as ``shape``
    (``[N][C][H][W]`` for ``[N, C, H, W]``); finite, as many values as the shape holds.

    Raises:
        InvalidTensorError: nesting that contradicts the declared shape (``[1][64][64][3]``
            for ``[1, 3, 64, 64]``: the same count, another layout), a wrong count, non-numbers,
            NaN or infinity.
    """
    if not isinstance(data, list):
        raise InvalidTensorError(
            f"input 'data' must be a list of numbers; got {type(data).__name__}"
        )
    try:
        arr = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise InvalidTensorError(
            f"input 'data' must hold numbers only (flat or nested as the shape): {exc}"
        ) from None
    need = math.prod(shape)
    if arr.ndim > 1 and list(arr.shape) != list(shape):
        raise InvalidTensorError(
            f"input 'data' is nested as {list(arr.shape)}, which contradicts the declared shape "
            f"{shape}: send it flat in row-major order or nested exactly as the shape"
        )
    if arr.size != need:
        raise InvalidTensorError(f"input 'data' has {arr.size} values; shape {shape} needs {need}")
    if not np.isfinite(arr).all():
        raise InvalidTensorError("input 'data' holds NaN or infinite values")
    return arr


def _uint8_image(arr: np.ndarray, shape: list[int], prep: Preprocessing) -> np.ndarray:
    """A ``UINT8`` image tensor: integers 0..255, ``[N, H, W, C]`` with H, W >= 1 and C = 1..4.

    With an alpha channel (C = 2: grey + alpha, C = 4: RGBA) each image is composited over the
    model's background (``transferkit.imaging.to_mode``, as an uploaded image is), so the graph
    gets ``[N, H, W, channels]`` and never the colour hidden under alpha."""
    if min(shape[1:3]) < 1 or not 1 <= shape[3] <= 4:
        raise InvalidTensorError(
            f"a UINT8 image tensor is [N, H, W, C] with H, W >= 1 and C = 1..4; got {shape}"
        )
    if ((arr < 0) | (arr > 255) | (arr != np.round(arr))).any():
        raise InvalidTensorError("UINT8 'data' must hold integers from 0 to 255")
    arr = arr.astype(np.uint8)
    if shape[3] not in (2, 4):
        return arr
    mode = "LA" if shape[3] == 2 else "RGBA"
    return np.stack(
        [to_uint8_hwc(Image.fromarray(a, mode), prep.channels, prep.background) for a in arr]
    )


def _check_outputs(outputs: Any, clf: OnnxClassifier) -> None:
    """Requested outputs, when given, name the model's one output."""
    if outputs is None:
        return
    out_name = clf.tensor_spec("output")["name"]
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InvalidInputError("'outputs' must be a list of objects with a name")
    for o in outputs:
        if o.get("name") != out_name:
            raise InvalidTensorError(
                f"unknown output {o.get('name')!r}: model {clf.name!r} has {out_name!r}"
            )


def infer_response(
    clf: OnnxClassifier, logits: np.ndarray, request_id: str | None
) -> dict[str, Any]:
    """The OIP v2 inference response.

    Args:
        clf: the model that ran.
        logits: float32 ``[N, K]``.
        request_id: the request's ``id``, echoed when given.

    Returns:
        JSON-ready ``{"model_name", "model_version", "id"?, "outputs"}``.
    """
    body: dict[str, Any] = {"model_name": clf.name, "model_version": clf.version}
    if request_id is not None:
        body["id"] = request_id
    body["outputs"] = [
        {
            "name": clf.output_name,
            "datatype": "FP32",
            "shape": list(logits.shape),
            "data": logits.astype(np.float32).ravel().tolist(),
        }
    ]
    return body
