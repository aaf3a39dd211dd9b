"""Serving soak: two models in one server, batching on, closed-loop clients for minutes.

``transferkit serve A.onnx B.onnx`` (default settings: batching on, ``--max-batch-size 8``),
``--clients`` (default 16) closed-loop clients split evenly across both models, each posting a
real UCI digit as PNG to ``/v2/models/{name}/infer`` on one keep-alive connection:

1. warm-up: ``--warmup`` seconds (default 20) of the same load; the server's resident memory
   (``VmRSS`` of ``/proc/PID/status``, MiB) is read after it;
2. soak: ``--duration`` seconds (default 300); memory is sampled every ``--sample-every`` seconds
   and read again at the end.

Prints requests, errors (any answer but 200, or a failed request), p50/p99 latency (ms),
throughput (req/s) and memory, and writes them to ``bench/results/soak-<time>.json`` (and
``soak.json``) with the goals: zero errors, and memory after the soak within 10% of after warm-up.

Usage: ``.venv/bin/python bench/soak.py TEACHER.onnx STUDENT.onnx [--duration 300]``.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

from _common import RESULTS, Server, check, digit_png, finish, http_loop, reference

#: Memory after the soak may exceed memory after warm-up by this fraction.
MAX_RSS_GROWTH = 0.10


def sample_rss(srv: Server, every_s: float, stop: threading.Event, out: list[float]) -> None:
    """Append the server's resident memory (MiB) to ``out`` every ``every_s`` seconds."""
    while not stop.wait(every_s):
        out.append(srv.rss_mib())


def soak(models: list[Path], a: argparse.Namespace) -> dict:
    """Warm up, read memory, soak while sampling memory, read it again."""
    data = digit_png()
    paths = [f"/v2/models/{m.stem}/infer" for m in models]
    with Server(models, ["--max-batch-size", str(a.batch)]) as srv:
        warm = http_loop(srv.port, paths, data, a.clients, a.warmup)
        rss_warm = srv.rss_mib()
        samples: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(srv, a.sample_every, stop, samples))
        sampler.start()
        try:
            res = http_loop(srv.port, paths, data, a.clients, a.duration)
        finally:
            stop.set()
            sampler.join()
        rss_end = srv.rss_mib()
    growth = rss_end / rss_warm - 1.0
    return {
        "models": [str(m) for m in models],
        "clients": a.clients,
        "batch": a.batch,
        "warmup_s": a.warmup,
        "duration_s": a.duration,
        "warmup": warm,
        **res,
        "rss_after_warmup_mib": rss_warm,
        "rss_after_soak_mib": rss_end,
        "rss_growth": growth,
        "rss_samples_mib": samples,
        "checks": {
            f"errors over {a.duration:g} s, {a.clients} clients": check(
                f"{res['errors']} of {res['requests']} requests",
                "0",
                res["errors"] == 0,
                errors=res["errors"],
            ),
            "server resident memory after the soak vs after warm-up": check(
                f"{growth:+.1%} ({rss_warm:.1f} -> {rss_end:.1f} MiB)",
                f"<= +{MAX_RSS_GROWTH:.0%}",
                growth <= MAX_RSS_GROWTH,
                growth=growth,
            ),
        },
        "references": [
            reference(
                f"p50 / p99 ms, req/s over the soak ({' + '.join(m.stem for m in models)}, "
                f"batching on)",
                f"{res['p50_ms']:.2f} / {res['p99_ms']:.2f} ms, {res['throughput_rps']:.0f} req/s",
            )
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path, nargs=2, help="two .onnx files (teacher, student)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--duration", type=float, default=300.0, help="seconds of soak")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds of load before")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--batch", type=int, default=8, help="the server's --max-batch-size")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.models[0].stem == a.models[1].stem:
        p.error("the two files need different names (each is served as its stem)")
    r = soak(a.models, a)
    print(
        f"soak: {a.clients} clients x {a.duration:g} s on {' + '.join(m.stem for m in a.models)}: "
        f"{r['requests']} requests, {r['errors']} errors, p50 {r['p50_ms']:.2f} ms, "
        f"p99 {r['p99_ms']:.2f} ms, {r['throughput_rps']:.1f} req/s"
    )
    print(
        f"server memory: {r['rss_after_warmup_mib']:.1f} MiB after {a.warmup:g} s warm-up, "
        f"{r['rss_after_soak_mib']:.1f} MiB after the soak ({r['rss_growth']:+.1%})"
    )
    return finish("soak", r, a.out)


if __name__ == "__main__":
    sys.exit(main())
