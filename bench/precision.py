"""Training-step throughput in float32 vs bfloat16 autocast (``scaling.precision``), on this CPU.

Prints one table (images/s per core for a forward + backward + AdamW step, each model and
precision) and writes the same figures as JSON under ``bench/results/precision.json``.

Usage::

    python bench/precision.py [--batch 16] [--steps 6] [--threads 1]

The models are the ones ``configs/elpv.yaml`` trains: MobileNetV2 at 192 px (the teacher) and its
first 5 stages plus a 1x1 conv to 512 channels at 256 px (the student), random weights, channels
last as the worker loop runs them, 2 classes, random inputs (speed does not depend on the values).
One warm-up step is not timed. Run it with nothing else on the CPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from _common import provenance

from transferkit.config import ModelConfig
from transferkit.models.build import build_model
from transferkit.training.precision import autocast_dtype, cpu_has_native_bf16

MODELS = {
    "teacher mobilenet_v2 @192": (192, {}),
    "student 5-stage cut @256": (256, {"keep_stages": 5, "head_hidden": 512}),
}


def images_per_s(size: int, extra: dict, precision: str, batch: int, steps: int) -> float:
    """Images per second of ``steps`` timed training steps (after one warm-up step)."""
    cfg = ModelConfig(arch="mobilenet_v2", weights=None, freeze_depth=0, width_mult=1.0, **extra)
    model = build_model(cfg, 2, load_weights=False).model.train()
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    amp = autocast_dtype(precision, torch.device("cpu"))
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=amp, enabled=amp is not None):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for name, (size, extra) in MODELS.items():
        fp32 = images_per_s(size, extra, "fp32", a.batch, a.steps)
        bf16 = images_per_s(size, extra, "bf16", a.batch, a.steps)
        rows.append({"model": name, "fp32": fp32, "bf16": bf16, "speedup": bf16 / fp32})
    print(f"{'model':<28} {'fp32 img/s':>11} {'bf16 img/s':>11} {'speedup':>8}")
    for r in rows:
        print(f"{r['model']:<28} {r['fp32']:>11.1f} {r['bf16']:>11.1f} {r['speedup']:>7.2f}x")
    a.out.mkdir(parents=True, exist_ok=True)
    out = {
        **provenance(),
        "native_bf16": cpu_has_native_bf16(),
        "threads": a.threads,
        "torch": torch.__version__,
        "batch": a.batch,
        "steps": a.steps,
        "rows": rows,
    }
    (a.out / "precision.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
