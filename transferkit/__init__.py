"""transferkit: fine-tune pretrained vision models on Ray Train, distill, tune, export to ONNX and
serve with ONNX Runtime.

Importing this package is light (no torch, no ray); heavy modules are imported by the sub-packages
that need them.
"""

__version__ = "0.1.0"
