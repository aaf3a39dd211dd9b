"""What an ONNX file says about itself (``transferkit inspect``): transferkit's metadata, the
graph's inputs and outputs with their symbolic dimensions, opset, operators, size and digest.

Torch-free: the ``onnx`` package reads the file (weights included, for the digest and counts);
nothing is run.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

from transferkit.errors import UsageError
from transferkit.filetype import not_onnx_reason
from transferkit.metadata import MetadataError, ModelMetadata

__all__ = ["inspect_onnx"]


def _dims(value_info) -> list[int | str]:
    """A tensor's shape: ints for fixed dimensions, names for symbolic ones (``?`` if unnamed)."""
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]


def _tensor(value_info) -> dict[str, Any]:
    import onnx

    elem = value_info.type.tensor_type.elem_type
    return {
        "name": value_info.name,
        "dtype": onnx.helper.tensor_dtype_to_np_dtype(elem).name,
        "shape": _dims(value_info),
    }


def inspect_onnx(path: str | Path) -> dict[str, Any]:
    """Everything a server needs to know about an ONNX file, as one JSON-ready dict.

    Args:
        path: an ``.onnx`` file.

    Returns:
        ``{"file", "bytes", "sha256", "opset" (default domain), "opsets" (domain -> version),
        "producer", "inputs"/"outputs": [{"name", "dtype", "shape"}] (symbolic dims by name),
        "operators": {op_type: count}, "initializers", "transferkit": {"classes",
        "preprocessing": {input_size, channels, mean, std, interpolation, crop_pct}, "arch",
        "source_run", "input_name", "output_name", "quantization", "embedded_preprocessing",
        "extra"} or None (a file transferkit did not export), "metadata_error" when its
        metadata is unreadable}``.

    Raises:
        FileNotFoundError: no such file.
        UsageError: a folder, or a file that is not an ONNX model.
    """
    import onnx

    path = Path(path)
    if path.is_dir():
        raise UsageError(
            f"{path} is a folder, not an ONNX file: inspect the .onnx file that "
            f"`transferkit export {path} -o model.onnx` writes"
        )
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path}: file not found")
    reason = not_onnx_reason(path)
    if reason is not None:
        raise UsageError(reason)
    data = path.read_bytes()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and onnx's own
        raise UsageError(f"{path} is not an ONNX model (it does not parse as one): {exc}") from exc
    g = model.graph
    init = {i.name for i in g.initializer}
    opsets = {(o.domain or "ai.onnx"): o.version for o in model.opset_import}
    out: dict[str, Any] = {
        "file": str(path),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "opset": opsets.get("ai.onnx"),
        "opsets": opsets,
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [_tensor(i) for i in g.input if i.name not in init],
        "outputs": [_tensor(o) for o in g.output],
        "operators": dict(sorted(Counter(n.op_type for n in g.node).items())),
        "initializers": len(g.initializer),
    }
    out.update(_transferkit(model))
    return out


def _transferkit(model) -> dict[str, Any]:
    props = {p.key: p.value for p in model.metadata_props}
    if not any(k.startswith("transferkit.") for k in props):
        return {"transferkit": None}
    try:
        meta = ModelMetadata.from_props(props)
    except MetadataError as exc:
        return {"transferkit": None, "metadata_error": str(exc)}
    extra = dict(meta.extra)
    return {
        "transferkit": {
            "classes": meta.class_names,
            "preprocessing": meta.preprocessing.model_dump(mode="json"),
            "arch": meta.arch,
            "source_run": meta.source_run,
            "input_name": meta.input_name,
            "output_name": meta.output_name,
            "quantization": extra.pop("quantization", None),
            "embedded_preprocessing": bool(extra.pop("embedded_preprocessing", False)),
            "extra": extra,
        }
    }
