"""Serve an exported ONNX classifier over HTTP with ONNX Runtime.

Light by design: importing this package pulls in onnxruntime, numpy, Pillow and the HTTP stack
(FastAPI, uvicorn), never torch or ray. A serving install needs only the ``.onnx`` file.

Example:
    >>> from transferkit.serving import serve
    >>> serve("model.onnx", port=8000)  # doctest: +SKIP

``serve`` is resolved lazily (PEP 562) so ``python -m transferkit.serving.server`` does not find
its own module already imported by the package.
"""

from typing import Any

from transferkit.serving.app import create_app
from transferkit.serving.model import OnnxClassifier

__all__ = ["OnnxClassifier", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "serve":
        from transferkit.serving.server import serve

        return serve
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
