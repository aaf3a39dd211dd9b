"""FP16 conversion of an exported transferkit ONNX file, for GPU serving.

Weights and computation go to float16 with ONNX Runtime's own converter
(``onnxruntime.transformers.float16.convert_float_to_float16``, ``keep_io_types=True``: the input
stays float32 ``[N, C, H, W]`` and the logits float32 ``[N, K]``, with Cast nodes at the edges).
Half precision halves the file and pays on GPUs with fp16 tensor cores; on a CPU the execution
provider has few fp16 kernels and it is usually slower, so it is refused where no GPU is present
unless forced. The result is checked against the fp32 file on real images with a tolerance looser
than the fp32 export's (float16 has an 11-bit significand: about 3 decimal digits).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from transferkit.errors import TransferkitError, UsageError
from transferkit.imaging import load_image, preprocess
from transferkit.metadata import ModelMetadata
from transferkit.metrics import softmax

__all__ = ["FP16_MAX_PROB_DIFF", "FP16ValidationError", "convert_fp16", "require_gpu"]

log = logging.getLogger(__name__)

#: Largest allowed difference of any class probability between the fp16 and fp32 files. float16
#: rounds each logit to about 1e-3 of its size; on a near-tie image that moves a probability by a
#: few hundredths (a digits MobileNetV2 on the CPU: up to 0.034 over all 1,797 images, top-1
#: agreement 99.83%), so the bound is the embedded export's 0.05, not the fp32 export's 1e-4.
FP16_MAX_PROB_DIFF = 0.05
#: Least allowed top-1 agreement with the fp32 file.
FP16_MIN_AGREEMENT = 0.99


class FP16ValidationError(TransferkitError, RuntimeError):
    """The fp16 file disagrees with the fp32 one beyond the tolerance (the file is removed)."""


def _run(path: Path, x: np.ndarray, providers: list[str]) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=providers)
    return np.concatenate(
        [
            sess.run(None, {sess.get_inputs()[0].name: x[i : i + 32]})[0]
            for i in range(0, len(x), 32)
        ]
    )


def require_gpu(force: bool) -> bool:
    """Whether a GPU is present; without one, refuse unless ``force``.

    Raises:
        UsageError: no GPU here and not ``force``.
    """
    from transferkit.serving.providers import gpu_present

    gpu = gpu_present()
    if not gpu and not force:
        raise UsageError(
            "--quantize fp16 helps only on a GPU (CUDA execution provider), and this machine has "
            "none: on a CPU, fp16 runs slower than fp32. Use --quantize auto for CPUs, or --force "
            "to convert anyway"
        )
    return gpu


def convert_fp16(
    fp32_path: str | Path, output: str | Path, images: Sequence[str], force: bool = False
) -> dict[str, Any]:
    """Write the float16 version of ``fp32_path`` at ``output`` and check it.

    Args:
        fp32_path: a checked transferkit fp32 ONNX file.
        output: the fp16 file (its metadata: the fp32 file's, plus ``extra.quantization``).
        images: real images compared (preprocessed from the file's metadata).
        force: convert even where no GPU is present.

    Returns:
        ``{"output", "variant": "fp16", "images_compared", "max_abs_prob_diff",
        "top1_agreement", "file_mb", "fp32_file_mb", "provider", "forced" (no GPU here),
        "passed"}`` (also written to ``<output>.quantization.json``, with ``output: None``
        when the check failed and the file was removed).

    Raises:
        UsageError: no GPU here and not ``force``; or no image to compare on.
        FP16ValidationError: probabilities differ by more than :data:`FP16_MAX_PROB_DIFF` or top-1
            agreement is under :data:`FP16_MIN_AGREEMENT`.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from transferkit.export.quantize import carry_metadata, report_path

    gpu = require_gpu(force)
    if not images:
        raise UsageError("no real images to check the fp16 conversion on")
    fp32_path, output = Path(fp32_path), Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    m16 = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(m16, str(output), save_as_external_data=False)
    carry_metadata(fp32_path, output, {"quantization": {"variant": "fp16"}})
    providers = (["CUDAExecutionProvider"] if gpu else []) + ["CPUExecutionProvider"]
    report = _compare(fp32_path, output, images, providers)
    report["forced"] = not gpu
    report["passed"] = (
        report["max_abs_prob_diff"] <= FP16_MAX_PROB_DIFF
        and report["top1_agreement"] >= FP16_MIN_AGREEMENT
    )
    if not report["passed"]:
        output.unlink(missing_ok=True)
        report["output"] = None
    report_path(output).write_text(json.dumps(report, indent=2) + "\n")
    if not report["passed"]:
        raise FP16ValidationError(
            f"the fp16 file is too far from fp32 over the {report['images_compared']} images "
            f"compared: max probability difference {report['max_abs_prob_diff']:.3g} (allowed "
            f"{FP16_MAX_PROB_DIFF:g}), top-1 agreement {report['top1_agreement']:.2%} (needed "
            f"{FP16_MIN_AGREEMENT:.0%}); nothing written"
        )
    checked = {k: report[k] for k in ("images_compared", "max_abs_prob_diff", "top1_agreement")}
    carry_metadata(fp32_path, output, {"quantization": {"variant": "fp16", "forced": not gpu,
                                                        **checked}})  # fmt: skip
    return report


def _compare(
    fp32_path: Path, output: Path, images: Sequence[str], providers: list[str]
) -> dict[str, Any]:
    """The fp16 file against the fp32 one on ``images``: probabilities and top-1."""
    from transferkit.export.quantize import read_props

    meta = ModelMetadata.from_props(read_props(fp32_path))
    x = np.stack([preprocess(load_image(p), meta.preprocessing) for p in images]).astype(np.float32)
    p32 = softmax(_run(fp32_path, x, providers))
    p16 = softmax(_run(output, x, providers))
    return {
        "output": str(output),
        "variant": "fp16",
        "images_compared": len(x),
        "max_abs_prob_diff": float(np.abs(p32 - p16).max()),
        "top1_agreement": float(np.mean(p32.argmax(1) == p16.argmax(1))),
        "file_mb": output.stat().st_size / 1e6,
        "fp32_file_mb": fp32_path.stat().st_size / 1e6,
        "provider": providers[0],
    }
