"""``make demo``: the whole job on the bundled real digits.

1. ``transferkit pipeline configs/demo-digits.yaml``: a Ray Tune search for the teacher
   (MobileNetV2, ImageNet weights), the teacher fine-tuned with the best values on 2 Ray Train
   workers, a MobileNetV3-small x0.5 student distilled from it, both exported to ONNX and
   validated, both scored with ONNX Runtime on the held-out test split, a report.
2. Starts the HTTP server on the student, sends every held-out test image over loopback, prints
   the served accuracy next to the ONNX model's own accuracy on the same files, stops the server.

Run again, it skips the stages already done. Usage:
``python -m transferkit.demo [--config configs/demo-digits.yaml] [--out DIR] [--force]``.
"""

from __future__ import annotations

import argparse
import logging
import mimetypes
import socket
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("transferkit.demo")  # not __name__: run as __main__

__all__ = ["run_demo", "DEFAULT_CONFIG"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_labels(
    onnx_path: Path, paths: list[str], log_path: Path, quiet: bool = False
) -> list[str]:
    """Start ``transferkit serve`` on ``onnx_path`` (loopback, a free port), POST every image file
    of ``paths`` to ``/v1/predict`` as its bytes, and return each top-1 label; the server is
    stopped afterwards (its log goes to ``log_path``).

    Raises:
        RuntimeError: the server did not become ready within 120 s.
        httpx.HTTPStatusError: a request was refused.
    """
    import httpx

    port = _free_port()
    log = open(log_path, "w")  # the server's access log, one line per request
    proc = subprocess.Popen(
        [sys.executable, "-m", "transferkit.cli", "serve", str(onnx_path), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
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
        if not quiet:
            logger.info(f"demo: server ready at {url}; sending {len(paths)} held-out images")
        labels = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for path in paths:
                kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
                r = client.post(
                    "/v1/predict", content=Path(path).read_bytes(), headers={"content-type": kind}
                )
                r.raise_for_status()
                labels.append(r.json()["predictions"][0]["label"])
        return labels
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        if not quiet:
            logger.info(f"demo: server stopped (its log: {log_path})")


def _serve_and_score(
    onnx_path: Path, samples: list[tuple[str, int]], class_names: list[str], log_path: Path
) -> tuple[float, float]:
    """Return (served accuracy over HTTP, the ONNX model's accuracy in-process) on ``samples``
    (image path, index into ``class_names``)."""
    import numpy as np

    from transferkit.imaging import load_image
    from transferkit.serving.model import OnnxClassifier

    clf = OnnxClassifier(str(onnx_path))
    hold = [(p, clf.class_names.index(class_names[y])) for p, y in samples]
    x = np.stack([clf.preprocess(load_image(p)) for p, _ in hold])
    labels = np.array([y for _, y in hold])
    onnx_acc = float((clf.predict_batch(x).argmax(1) == labels).mean())
    served = served_labels(onnx_path, [p for p, _ in hold], log_path)
    correct = sum(s == clf.class_names[y] for s, (_, y) in zip(served, hold))
    return correct / len(hold), onnx_acc


def run_demo(config: Path, output: Path | None = None, force: bool = False) -> float:
    """Run the pipeline of ``config``, then serve its student (or teacher) and score the test
    split over HTTP; returns the served accuracy."""
    from transferkit.config import PipelineConfig, load_config
    from transferkit.data.folder import Splits
    from transferkit.pipeline import run_pipeline

    cfg = load_config(PipelineConfig, config, {"output": str(output) if output else None})
    report = run_pipeline(cfg, force=force)
    out = Path(cfg.output).expanduser().resolve()
    teacher_dir = (
        Path(cfg.teacher.run).expanduser().resolve() if cfg.teacher.run else out / "teacher"
    )
    splits = Splits.from_json((teacher_dir / "splits.json").read_text())
    served_name = "student" if cfg.student is not None else "teacher"
    served, onnx_acc = _serve_and_score(
        out / f"{served_name}.onnx", splits.test, splits.class_names, out / "server.log"
    )
    logger.info(
        f"demo: {served_name} served over HTTP on the {len(splits.test)} held-out test digits: "
        f"{served:.2%} (ONNX model in-process: {onnx_acc:.2%})"
    )
    models = report.get("models", {})
    if "teacher" in models and "student" in models:
        t, s = models["teacher"], models["student"]
        logger.info(
            f"demo: teacher {t['test_acc']:.2%} vs student {s['test_acc']:.2%} on their ONNX files "
            f"(ratio {s['test_acc'] / t['test_acc']:.4f}); {s['parameters']:,} vs {t['parameters']:,} "
            "parameters"
        )
    logger.info(f"demo: report: {report['report_md']}")
    return served


DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo-digits.yaml"


def main(argv: list[str] | None = None) -> int:
    """CLI of ``python -m transferkit.demo``."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--out", type=Path, default=None, help="pipeline folder (default: the config's)")
    p.add_argument("--force", action="store_true", help="re-run every stage")
    a = p.parse_args(argv)
    from transferkit.config import ConfigError
    from transferkit.logs import setup_console

    setup_console()
    from transferkit.errors import TransferkitError

    try:
        run_demo(a.config, a.out, a.force)
    except (ConfigError, TransferkitError, FileExistsError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
