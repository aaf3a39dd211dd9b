"""ONNX export with validation and self-describing metadata (no Ray)."""

__all__ = ["export_onnx"]


def export_onnx(*args, **kwargs):
    """See :func:`transferkit.export.onnx_export.export_onnx`."""
    from transferkit.export.onnx_export import export_onnx as _export

    return _export(*args, **kwargs)
