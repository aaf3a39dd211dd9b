"""Serving benchmark: closed-loop clients on loopback against three set-ups (issue 6).

    (a) ``in-process``: ``OnnxClassifier`` in this process, decode + preprocess + ORT run, no HTTP;
    (b) ``server, batching off``: ``transferkit serve --max-batch-size 1``;
    (c) ``server, batching on``: the same with ``--max-batch-size B --max-queue-delay-ms D``.

Each client sends one encoded image (a real UCI digit as PNG), waits for the answer, repeats, for
``--duration`` seconds per cell, at each of ``--clients`` (default 1, 8, 32). Server clients are
threads in this process, each with one keep-alive ``http.client`` connection; requests go to
``POST /v2/models/{name}/infer`` with the raw image body. Prints p50/p99 latency and throughput in
one table and writes JSON to ``bench/results/serve-<time>.json``, with the issue's two checks:
server p50 at 1 client <= in-process p50 + 1.5 ms, and throughput with batching on >= off at the
largest client count.

Usage: ``.venv/bin/python bench/serve.py MODEL.onnx [--duration 10] [--clients 1,8,32]``.
On a GPU (CUDA provider) expect batching to win by more: one kernel launch sequence per batch.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _image() -> bytes:
    try:
        from sklearn.datasets import load_digits

        arr = (load_digits().images[0] * (255.0 / 16.0)).round().astype(np.uint8)
    except ImportError:  # a serving-only install: a synthetic digit-like image
        arr = np.zeros((8, 8), np.uint8)
        arr[1:7, 3:5] = 255
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _stats(latencies: list[float], seconds: float) -> dict[str, float]:
    lat = np.asarray(latencies) * 1000.0
    return {
        "requests": len(lat),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "throughput_rps": len(lat) / seconds,
    }


def bench_in_process(
    model: Path, data: bytes, clients: int, duration: float, threads: int
) -> dict[str, float]:
    """Closed loop of ``clients`` threads calling decode + preprocess + ORT run in-process."""
    from transferkit.serving.model import OnnxClassifier

    clf = OnnxClassifier(model, intra_op_threads=threads)
    for _ in range(20):
        clf.predict_batch(clf.preprocess(clf.decode(data))[None])
    lats: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + duration

    def loop(out: list[float]) -> None:
        while True:
            t = time.perf_counter()
            if t >= stop:
                return
            clf.predict_batch(clf.preprocess(clf.decode(data))[None])
            out.append(time.perf_counter() - t)

    ts = [threading.Thread(target=loop, args=(lats[i],)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return _stats([x for per_thread in lats for x in per_thread], time.perf_counter() - t0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, model: Path, threads: int, batch: int, delay_ms: float) -> None:
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "transferkit.cli",
                "serve",
                str(model),
                "--port",
                str(self.port),
                "--threads",
                str(threads),
                "--max-batch-size",
                str(batch),
                "--max-queue-delay-ms",
                str(delay_ms),
                "--max-queue-size",
                "4096",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited: {self.proc.stderr.read().decode(errors='replace')}"
                )
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready in 60 s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _http_loop(
    port: int, path: str, data: bytes, clients: int, duration: float
) -> dict[str, float]:
    """Closed loop of ``clients`` threads, each with one keep-alive ``http.client`` connection
    (the standard library's client: a fraction of httpx's per-request cost, so the figures are
    the server's, not the client's)."""
    import http.client

    headers = {"content-type": "image/png"}
    lats: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start, stop_at = threading.Barrier(clients + 1), [float("inf")]

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(5):  # open and warm the connection
            conn.request("POST", path, body=data, headers=headers)
            conn.getresponse().read()
        start.wait()
        while True:
            t = time.perf_counter()
            if t >= stop_at[0]:
                break
            conn.request("POST", path, body=data, headers=headers)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                errors[i] += 1
            lats[i].append(time.perf_counter() - t)
        conn.close()

    ts = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + duration
    for t in ts:
        t.join()
    out = _stats([x for per_thread in lats for x in per_thread], time.perf_counter() - t0)
    out["errors"] = sum(errors)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="the .onnx file (the demo student)")
    p.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = automatic)")
    p.add_argument("--batch", type=int, default=32, help="max_batch_size for (c)")
    p.add_argument("--delay-ms", type=float, default=2.0, help="max_queue_delay_ms for (c)")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.clients.split(",")]
    data = _image()
    name = args.model.stem
    rows: list[dict] = []
    for c in counts:
        rows.append(
            {
                "setup": "in-process",
                "clients": c,
                **bench_in_process(args.model, data, c, args.duration, args.threads),
            }
        )
    for setup, batch in (("server, batching off", 1), ("server, batching on", args.batch)):
        srv = _Server(args.model, args.threads, batch, args.delay_ms)
        try:
            for c in counts:
                res = _http_loop(srv.port, f"/v2/models/{name}/infer", data, c, args.duration)
                rows.append({"setup": setup, "clients": c, **res})
        finally:
            srv.stop()

    print(f"{'setup':<22} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'requests':>9}")
    for r in rows:
        print(
            f"{r['setup']:<22} {r['clients']:>7} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
            f"{r['throughput_rps']:>8.1f} {r['requests']:>9}"
        )

    def cell(setup: str, c: int) -> dict:
        return next(r for r in rows if r["setup"] == setup and r["clients"] == c)

    checks = {}
    if 1 in counts:
        base = cell("in-process", 1)["p50_ms"]
        for setup in ("server, batching off", "server, batching on"):
            checks[f"p50 at 1 client, {setup} <= in-process + 1.5 ms"] = {
                "server_ms": cell(setup, 1)["p50_ms"],
                "in_process_ms": base,
                "pass": cell(setup, 1)["p50_ms"] <= base + 1.5,
            }
    top = max(counts)
    on, off = (
        cell("server, batching on", top)["throughput_rps"],
        cell("server, batching off", top)["throughput_rps"],
    )
    checks[f"throughput at {top} clients, batching on >= off"] = {
        "on_rps": on,
        "off_rps": off,
        "pass": on >= off,
    }
    for k, v in checks.items():
        print(f"{'PASS' if v['pass'] else 'FAIL'}  {k}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"serve-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(
        json.dumps(
            {
                "model": str(args.model),
                "duration_s": args.duration,
                "batch": args.batch,
                "delay_ms": args.delay_ms,
                "threads": args.threads,
                "cpus": os.cpu_count(),
                "machine": platform.platform(),
                "rows": rows,
                "checks": checks,
            },
            indent=2,
        )
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
