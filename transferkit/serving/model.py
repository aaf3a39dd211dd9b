"""An ONNX image classifier on ONNX Runtime alone: load, preprocess, predict, postprocess.

Lifecycle after KServe's ``Model``: constructing :class:`OnnxClassifier` loads the session, reads
the transferkit metadata written by ``transferkit export`` and runs one warm-up batch, so an
instance that exists is ready. Imports neither torch nor ray: a serving install needs only
onnxruntime, numpy and Pillow.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf
from PIL import Image

from transferkit.errors import TransferkitError
from transferkit.filetype import EXPORT_HINT, not_onnx_reason
from transferkit.imaging import ImageTooLargeError, decode_image, preprocess, to_uint8_hwc
from transferkit.metadata import ModelMetadata
from transferkit.metrics import softmax
from transferkit.serving.limits import DEFAULT_MAX_IMAGE_PIXELS
from transferkit.serving.providers import default_providers, gpu_present, resolve_threads

__all__ = [
    "OnnxClassifier",
    "ModelLoadError",
    "ImageTooLargeError",
    "default_providers",
    "gpu_present",
    "softmax",
]

log = logging.getLogger(__name__)

_ORT_DTYPES = {"tensor(float)": "FP32", "tensor(uint8)": "UINT8", "tensor(int64)": "INT64"}


class ModelLoadError(TransferkitError, RuntimeError):
    """The ONNX file cannot be served: unreadable, or graph and metadata disagree."""


def _shape(dims: Sequence[Any]) -> list[int]:
    """ORT shape with symbolic/unknown dimensions (strings, None) as -1."""
    return [d if isinstance(d, int) and d >= 0 else -1 for d in dims]


class OnnxClassifier:
    """One ONNX classifier exported by ``transferkit export``, served with ONNX Runtime.

    The graph takes float32 ``[N, C, H, W]`` (the metadata's ``Preprocessing``) and returns
    float32 logits ``[N, K]``, one column per class name. A file written by
    ``transferkit.export.embed`` (``extra["embedded_preprocessing"]``) takes the decoded image,
    uint8 ``[N, H, W, C]``, and returns probabilities ``[N, K]``: :meth:`preprocess` then only
    converts the image to an array and :meth:`postprocess` skips the softmax. ``session.run`` is
    thread-safe, so one instance serves concurrent requests.

    Args:
        path: the ``.onnx`` file (self-contained; transferkit metadata in ``metadata_props``).
        name: model name reported by the server; defaults to the file stem.
        version: model version reported by the server (Triton-style repository folder name).
        intra_op_threads: ORT intra-op threads; 0 = ``min(available CPUs, 4)``. Values above the
            available CPUs are capped.
        providers: ORT execution providers; default: CUDA when a GPU is present, else CPU.
        max_image_pixels: images declaring more pixels are refused (:class:`ImageTooLargeError`).

    Raises:
        ModelLoadError: the file is missing, of another kind (a PyTorch checkpoint, a PDF: the
            message names the fix) or not a loadable ONNX model, its input is not
            float32 ``[N, C, H, W]`` matching the preprocessing, or the output width differs from
            the class count.
        transferkit.metadata.MetadataError: the file carries no (or malformed) transferkit
            metadata.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        version: str = "1",
        intra_op_threads: int = 0,
        providers: Sequence[str] | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.version = str(version)
        self.max_image_pixels = max_image_pixels
        self.intra_op_threads = resolve_threads(intra_op_threads)
        self.session = self._open(list(providers) if providers else default_providers())
        self.metadata = ModelMetadata.from_props(self.session.get_modelmeta().custom_metadata_map)
        self.preprocessing = self.metadata.preprocessing
        self.embedded = bool(self.metadata.extra.get("embedded_preprocessing"))
        self.input_name, self.output_name = self._io_names()
        self._check_input()
        self.num_classes = len(self.metadata.class_names)
        self._warm_up()
        log.info(
            "loaded %s (%s, %d classes) on %s with %d intra-op threads",
            self.path,
            self.metadata.arch,
            self.num_classes,
            self.providers,
            self.intra_op_threads,
        )

    # -- loading ---------------------------------------------------------------------------------

    def _open(self, providers: list[str]) -> ort.InferenceSession:
        if not self.path.is_file():
            raise ModelLoadError(f"ONNX file not found: {self.path}")
        reason = not_onnx_reason(self.path)
        if reason is not None:
            raise ModelLoadError(reason)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.intra_op_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            return ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except InvalidProtobuf as exc:
            raise ModelLoadError(
                f"{self.path.name} is not an ONNX model (it does not parse as one): {EXPORT_HINT}"
            ) from exc
        except Exception as exc:  # ORT raises its own (non-exported) exception types
            raise ModelLoadError(f"cannot load ONNX model {self.path}: {exc}") from exc

    def _io_names(self) -> tuple[str, str]:
        """The metadata's input/output names when the graph has them, else the first of each."""
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        in_name = self.metadata.input_name if self.metadata.input_name in inputs else inputs[0]
        out_name = self.metadata.output_name if self.metadata.output_name in outputs else outputs[0]
        if (in_name, out_name) != (self.metadata.input_name, self.metadata.output_name):
            log.warning(
                "metadata names input %r / output %r, graph has %s / %s; using %r / %r",
                self.metadata.input_name,
                self.metadata.output_name,
                inputs,
                outputs,
                in_name,
                out_name,
            )
        return in_name, out_name

    def _node(self, name: str, nodes: Sequence[Any]) -> Any:
        return next(n for n in nodes if n.name == name)

    def _check_input(self) -> None:
        node = self._node(self.input_name, self.session.get_inputs())
        prep = self.preprocessing
        expected = [-1, prep.channels, prep.input_size, prep.input_size]
        shape = _shape(node.shape)
        if self.embedded:
            if node.type != "tensor(uint8)" or len(shape) != 4:
                raise ModelLoadError(
                    f"input {node.name!r} is {node.type} {shape}; a model with embedded "
                    "preprocessing takes uint8 [N, H, W, C]"
                )
            return
        if node.type != "tensor(float)":
            raise ModelLoadError(
                f"input {node.name!r} is {node.type}; transferkit serves float32 inputs"
            )
        if len(shape) != 4 or any(s not in (-1, e) for s, e in zip(shape[1:], expected[1:])):
            raise ModelLoadError(
                f"input {node.name!r} has shape {shape}; the metadata's preprocessing gives {expected}"
            )

    def _warm_up(self) -> None:
        """Run one zeros batch (allocations, kernel choice) and check the output width."""
        p = self.preprocessing
        if self.embedded:
            x = np.zeros((1, p.input_size, p.input_size, 3), dtype=np.uint8)
        else:
            x = np.zeros((1, p.channels, p.input_size, p.input_size), dtype=np.float32)
        try:
            logits = self.predict_batch(x)
        except Exception as exc:
            raise ModelLoadError(f"warm-up inference failed for {self.path}: {exc}") from exc
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ModelLoadError(
                f"output {self.output_name!r} has shape {list(logits.shape)} for one image; the "
                f"metadata lists {self.num_classes} class names"
            )

    # -- properties ------------------------------------------------------------------------------

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses, in priority order."""
        return list(self.session.get_providers())

    @property
    def class_names(self) -> list[str]:
        """One name per logit column."""
        return list(self.metadata.class_names)

    # -- inference -------------------------------------------------------------------------------

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Decoded image -> model input, exactly as in training (``transferkit.imaging.preprocess``).

        Args:
            image: a PIL image of any mode and size.

        Returns:
            float32 ``(C, H, W)``, normalised with the metadata's mean/std; for a model with
            embedded preprocessing, the image's own pixels, uint8 ``(H, W, C)`` with C = 1 or 3
            (``transferkit.imaging.to_uint8_hwc``): the graph resizes and normalises.
        """
        if self.embedded:
            return to_uint8_hwc(image, self.preprocessing.channels, self.preprocessing.background)
        return preprocess(image, self.preprocessing)

    def predict_batch(self, x: np.ndarray) -> np.ndarray:
        """Run the graph.

        Args:
            x: float32 ``[N, C, H, W]`` preprocessed images; with embedded preprocessing, uint8
                ``[N, H, W, C]`` images of one size (``preprocess``'s arrays, stacked).

        Returns:
            float32 logits ``[N, K]``; with embedded preprocessing, probabilities ``[N, K]``.

        Raises:
            ValueError: ``x`` is not a 4-D array (ORT raises for other shape/dtype mismatches).
        """
        if x.ndim != 4:
            raise ValueError(f"expected a [N, C, H, W] batch; got shape {list(x.shape)}")
        x = np.ascontiguousarray(x, dtype=np.uint8 if self.embedded else np.float32)
        (logits,) = self.session.run([self.output_name], {self.input_name: x})
        return logits

    def postprocess(self, logits: np.ndarray, top_k: int) -> list[dict[str, Any]]:
        """Logits of one image -> the ``top_k`` most probable classes.

        Args:
            logits: ``[K]`` logits (probabilities for a model with embedded preprocessing,
                whose graph has the softmax).
            top_k: how many to return (capped at K; at least 1).

        Returns:
            ``[{"label": str, "probability": float}, ...]`` sorted by probability, descending
            (ties: lower class index first).
        """
        probs = logits.astype(np.float64) if self.embedded else softmax(logits)
        k = max(1, min(int(top_k), probs.shape[-1]))
        order = np.argsort(-probs, kind="stable")[:k]
        names = self.metadata.class_names
        return [{"label": names[i], "probability": float(probs[i])} for i in order]

    def decode(self, data: bytes, max_pixels: int | None = None) -> Image.Image:
        """Encoded bytes -> loaded PIL image, with the pixel limit applied before decoding.

        Args:
            data: the file's bytes.
            max_pixels: pixel limit; ``None`` = the instance's ``max_image_pixels``.

        Raises:
            ImageTooLargeError: more than ``max_pixels`` pixels.
            ImageDecodeError: empty, truncated or not an image.
        """
        limit = self.max_image_pixels if max_pixels is None else max_pixels
        return decode_image(data, max_pixels=limit)

    def predict_image_bytes(
        self, data: bytes, top_k: int = 5, max_pixels: int | None = None
    ) -> list[dict[str, Any]]:
        """Classify one encoded image (PNG, JPEG, ...). Blocking: call from a worker thread.

        Args:
            data: the file's bytes.
            top_k: number of classes returned (capped at the class count).
            max_pixels: pixel limit; ``None`` = the instance's ``max_image_pixels``.

        Returns:
            ``[{"label": str, "probability": float}, ...]``, probability descending.

        Raises:
            ImageTooLargeError: the image has more pixels than the limit.
            ImageDecodeError: the bytes are empty or not a decodable image.
        """
        x = self.preprocess(self.decode(data, max_pixels))
        logits = self.predict_batch(x[None])
        return self.postprocess(logits[0], top_k)

    def tensor_spec(self, which: str) -> dict[str, Any]:
        """The graph's input or output tensor, OIP v2 style.

        Args:
            which: ``"input"`` or ``"output"``.

        Returns:
            ``{"name", "datatype", "shape"}``: datatype ``FP32`` (``UINT8`` for the image input of
            a model with embedded preprocessing), symbolic dimensions (the batch; H, W and C of
            an embedded image input) as -1.
        """
        if which == "input":
            node = self._node(self.input_name, self.session.get_inputs())
        else:
            node = self._node(self.output_name, self.session.get_outputs())
        return {
            "name": node.name,
            "datatype": _ORT_DTYPES.get(node.type, node.type),
            "shape": _shape(node.shape),
        }

    def metadata_dict(self) -> dict[str, Any]:
        """JSON-ready description for ``GET /v1/model``; symbolic dimensions are -1."""
        return {
            "name": self.name,
            "version": self.version,
            "arch": self.metadata.arch,
            "class_names": self.class_names,
            "num_classes": self.num_classes,
            "preprocessing": self.preprocessing.model_dump(mode="json"),
            "input": self.tensor_spec("input"),
            "output": self.tensor_spec("output"),
            "execution_providers": self.providers,
            "intra_op_threads": self.intra_op_threads,
            "source_run": self.metadata.source_run,
            "extra": self.metadata.extra,
        }
