"""``make demo``: the first real path end to end on the bundled real digits.

1. Writes scikit-learn's 1,797 handwritten digits as PNG files and holds out a stratified 20%.
2. Fine-tunes ImageNet-pretrained MobileNetV2 on the other 80% with 2 Ray Train workers.
3. Exports it to ONNX (validated against PyTorch).
4. Starts the HTTP server, sends every held-out PNG over loopback, prints the served accuracy
   next to the ONNX model's own accuracy on the same files, stops the server.

Usage: ``python -m transferkit.demo [--out runs/demo] [--epochs 10] [--image-size 64]``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["run_demo"]


def _split_holdout(out: Path, fraction: float, seed: int) -> tuple[Path, Path]:
    from transferkit.data import materialize, scan_folder, stratified_split

    all_dir, train_dir, hold_dir = out / "digits-all", out / "digits-train80", out / "digits-holdout20"
    if not all_dir.exists():
        materialize("digits", all_dir)
    for d in (train_dir, hold_dir):
        shutil.rmtree(d, ignore_errors=True)
    names, samples = scan_folder(all_dir)
    train, _, hold = stratified_split(samples, 0.0, fraction, seed)
    for dest, items in ((train_dir, train), (hold_dir, hold)):
        for path, label in items:
            (dest / names[label]).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, dest / names[label])
    print(f"[demo] {len(train)} training images in {train_dir}, {len(hold)} held out in {hold_dir}")
    return train_dir, hold_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_and_score(onnx_path: Path, hold_dir: Path, log_path: Path) -> tuple[float, float]:
    """Return (served accuracy over HTTP, the ONNX model's accuracy in-process) on ``hold_dir``."""
    import httpx
    import numpy as np

    from transferkit.data import scan_folder
    from transferkit.serving.model import OnnxClassifier

    clf = OnnxClassifier(str(onnx_path))
    _, hold = scan_folder(hold_dir, clf.class_names)
    from transferkit.imaging import load_image

    x = np.stack([clf.preprocess(load_image(p)) for p, _ in hold])
    labels = np.array([y for _, y in hold])
    onnx_acc = float((clf.predict_batch(x).argmax(1) == labels).mean())

    port = _free_port()
    log = open(log_path, "w")  # the server's access log, one line per request
    proc = subprocess.Popen([sys.executable, "-m", "transferkit.cli", "serve", str(onnx_path),
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.3)
        print(f"[demo] server ready at {url}; sending {len(hold)} held-out PNG files")
        correct = 0
        with httpx.Client(base_url=url, timeout=30) as client:
            for path, label in hold:
                r = client.post("/v1/predict", content=Path(path).read_bytes(),
                                headers={"content-type": "image/png"})
                r.raise_for_status()
                correct += r.json()["predictions"][0]["label"] == clf.class_names[label]
        return correct / len(hold), onnx_acc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        print(f"[demo] server stopped (its log: {log_path})")


def run_demo(out: Path, epochs: int, image_size: int, num_workers: int, seed: int) -> float:
    """Run the whole demo; returns the served accuracy on the held-out 20%."""
    from transferkit.config import ExportConfig, FinetuneConfig
    from transferkit.export.onnx_export import export_onnx
    from transferkit.training.trainer import finetune

    out.mkdir(parents=True, exist_ok=True)
    train_dir, hold_dir = _split_holdout(out, 0.2, seed)
    cfg = FinetuneConfig.model_validate({
        "data": {"dataset": str(train_dir), "image_size": image_size},
        "model": {"arch": "mobilenet_v2", "weights": "IMAGENET1K_V1", "freeze_depth": 2},
        "optim": {"epochs": epochs}, "scaling": {"num_workers": num_workers},
        "output": str(out / "teacher"), "seed": seed})
    finetune(cfg, overwrite=True)
    onnx_path = out / "teacher.onnx"
    report = export_onnx(ExportConfig(run=str(out / "teacher"), output=str(onnx_path)))
    print(f"[demo] exported {onnx_path}: max |logit diff| {report.max_abs_diff:.2e}, "
          f"top-1 agreement {report.top1_agreement:.2%} on {report.images_compared} images")
    served, onnx_acc = _serve_and_score(onnx_path, hold_dir, out / "server.log")
    print(f"[demo] served accuracy over HTTP on held-out digits: {served:.2%} "
          f"(ONNX model in-process: {onnx_acc:.2%})")
    return served


def main(argv: list[str] | None = None) -> int:
    """CLI of ``python -m transferkit.demo``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    run_demo(a.out, a.epochs, a.image_size, a.num_workers, a.seed)
    import ray

    if ray.is_initialized():
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
