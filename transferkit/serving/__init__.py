"""Serve an exported ONNX classifier over HTTP with ONNX Runtime.

Light by design: this package pulls in onnxruntime, numpy, Pillow and the HTTP stack (FastAPI,
uvicorn), never torch or ray. A serving install needs only the ``.onnx`` file.

Layers, each importing only the ones before it: :mod:`.model` (one ONNX Runtime session),
:mod:`.batching`, :mod:`.runtime` (models, lifecycle, admission; no HTTP library), then the HTTP
layer (:mod:`.bodies`, :mod:`.http_errors`, :mod:`.gate`, :mod:`.app`) and :mod:`.server`
(uvicorn). The names below resolve lazily (PEP 562), so ``transferkit predict`` and the runtime
never import the HTTP stack.

Example:
    >>> from transferkit.serving import ServingLimits, serve
    >>> serve("model.onnx", port=8000, limits=ServingLimits(max_batch_size=16))  # doctest: +SKIP
"""

from importlib import import_module
from typing import Any

__all__ = ["OnnxClassifier", "ServingLimits", "create_app", "serve"]

_HOME = {
    "OnnxClassifier": "transferkit.serving.model",
    "ServingLimits": "transferkit.serving.limits",
    "create_app": "transferkit.serving.app",
    "serve": "transferkit.serving.server",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
