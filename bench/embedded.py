"""An ``--embed-preprocessing`` file run with nothing but ONNX Runtime, numpy and Pillow (decode
only), against the server's answers, on images at their original size.

Prints one line per model (images, top-1 agreement with the server, largest probability
difference) and writes the figures as JSON to ``bench/results/embedded-<name>.json``.

Usage::

    python bench/embedded.py --embedded F.onnx --model FP32.onnx --images FOLDER [--name NAME]

"The server's answer" is :class:`transferkit.serving.model.OnnxClassifier` on the fp32 file,
the code ``transferkit serve`` runs for an upload (decode, the numpy preprocessing, ORT,
softmax), in this process. The embedded side is what a client in any language does: decode the
file to its pixels (``numpy.asarray(PIL.Image.open(path))``, a grey image given a channel axis),
feed them as uint8 ``[1, H, W, C]``, read ``probabilities`` and ``class_index``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from _common import provenance
from PIL import Image

from transferkit.imaging import IMAGE_EXTENSIONS
from transferkit.serving.model import OnnxClassifier


def client_side(sess: ort.InferenceSession, path: Path) -> tuple[int, np.ndarray]:
    """The embedded file on one image, decoded by Pillow and nothing else."""
    pixels = np.asarray(Image.open(path))
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    probs, index = sess.run(["probabilities", "class_index"], {"image": pixels[None]})
    return int(index[0]), probs[0]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--embedded", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True, help="the fp32 file it was made from")
    ap.add_argument("--images", type=Path, required=True, help="a folder (searched recursively)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()
    paths = sorted(p for p in a.images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    sess = ort.InferenceSession(str(a.embedded), providers=["CPUExecutionProvider"])
    server = OnnxClassifier(a.model, intra_op_threads=2)
    agree, worst, sizes = 0, 0.0, set()
    names = server.class_names
    for p in paths:
        index, probs = client_side(sess, p)
        answer = server.predict_image_bytes(p.read_bytes(), top_k=len(names))
        ref = np.array([next(a["probability"] for a in answer if a["label"] == n) for n in names])
        agree += int(names[index] == answer[0]["label"])
        worst = max(worst, float(np.abs(probs - ref).max()))
        sizes.add(Image.open(p).size)
    r = {
        **provenance(),
        "embedded": str(a.embedded),
        "model": str(a.model),
        "images": len(paths),
        "original_sizes": sorted(f"{w}x{h}" for w, h in sizes),
        "top1_agreement": agree / max(len(paths), 1),
        "max_abs_prob_diff": worst,
    }
    print(
        f"{a.embedded.name}: {len(paths)} images ({', '.join(r['original_sizes'][:3])}): top-1 "
        f"agrees with the server on {agree}/{len(paths)} ({100 * r['top1_agreement']:.2f}%), "
        f"max probability difference {worst:.2e}"
    )
    a.out.mkdir(parents=True, exist_ok=True)
    name = a.name or a.embedded.stem
    (a.out / f"embedded-{name}.json").write_text(json.dumps(r, indent=2) + "\n")


if __name__ == "__main__":
    main()
