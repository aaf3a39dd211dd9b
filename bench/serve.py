"""Serving benchmark: closed-loop clients on loopback against in-process and server set-ups.

One model at a time (each file given), at each of ``--clients`` (default 1, 8, 32):

    (a) ``in-process``: ``OnnxClassifier`` in this process, decode + preprocess + ORT run, no HTTP;
    (b) ``server, batching off``: ``transferkit serve M --max-batch-size 1``;
    (c) ``server, batching on``: the same with ``--max-batch-size B --max-queue-delay-ms D``.

and two references at one client that show what the server's p50 is made of: (a) with the
cores left idle for ``IDLE_PAUSE_MS`` between calls (as a client's round trip leaves them: on a
virtual machine a core that went idle runs the next call slower), and the HTTP round trip alone
(``GET /v2/health/live`` on server (b), which runs no model).

Then, with two files, both models in one server (clients split evenly across them) at
``--two-model-clients`` (default 32): the server's default settings, and each explicit
``--threads`` of ``--thread-settings`` (default 1, 2).

Each client sends one encoded image (a real UCI digit as PNG), waits for the answer, repeats, for
``--duration`` seconds per cell. Server clients are threads in this process, each with one
keep-alive ``http.client`` connection, posting the raw image to ``/v2/models/{name}/infer``.
Prints p50/p99 latency (ms) and throughput (req/s) in one table and writes JSON to
``bench/results/serve-<time>.json`` (and ``serve.json``) with the checks:

- per model, server p50 at 1 client <= in-process p50 + 1 ms (batching off and on);
- per model, throughput with batching on >= off at the largest client count;
- two models: default settings reach >= 0.9x the req/s of the best explicit ``--threads``;

and every set-up's figures as ``references`` (no goal), for ``bench/summary.py``.

Usage: ``.venv/bin/python bench/serve.py TEACHER.onnx [STUDENT.onnx] [--duration 10]``.
On a GPU (CUDA provider) expect batching to win by more: one kernel launch sequence per batch.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from pathlib import Path

from _common import REPO, Server, check, digit_png, finish, http_loop, latency_stats, reference

sys.path.insert(0, str(REPO))

#: Server p50 at one client may exceed the in-process p50 by this much (ms).
P50_MARGIN_MS = 1.0
#: Two models with default settings reach this share of the best explicit ``--threads``.
DEFAULT_SHARE = 0.9
#: Idle time left between in-process calls in the reference row that shows what idle cores
#: cost (ms): about a loopback HTTP round trip plus the server's own work per request here.
IDLE_PAUSE_MS = 3.0
IN_PROCESS_PAUSED = f"in-process, {IDLE_PAUSE_MS:g} ms idle between calls"
HTTP_ONLY = "HTTP only: GET /v2/health/live"


def bench_in_process(
    model: Path, data: bytes, clients: int, duration: float, threads: int, pause_s: float = 0.0
) -> dict[str, float]:
    """Closed loop of ``clients`` threads calling decode + preprocess + ORT run in-process,
    each sleeping ``pause_s`` seconds between calls (not timed)."""
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
            if pause_s:
                time.sleep(pause_s)

    ts = [threading.Thread(target=loop, args=(lats[i],)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return latency_stats([x for per in lats for x in per], time.perf_counter() - t0)


def _infer_path(model: Path) -> str:
    return f"/v2/models/{model.stem}/infer"


def one_model(model: Path, data: bytes, counts: list[int], a: argparse.Namespace) -> list[dict]:
    """Rows (a), (b), (c) for ``model`` at each client count."""
    rows = [
        {
            "model": model.stem,
            "setup": "in-process",
            "clients": c,
            **bench_in_process(model, data, c, a.duration, a.threads),
        }
        for c in counts
    ]
    # what the server's p50 at one client is made of, as references: the same in-process call
    # with the cores left idle between calls as a client's round trip leaves them, and the HTTP
    # round trip alone (a GET that runs no model)
    paused = bench_in_process(model, data, 1, a.duration, a.threads, IDLE_PAUSE_MS / 1000)
    rows.append({"model": model.stem, "setup": IN_PROCESS_PAUSED, "clients": 1, **paused})
    for setup, batch in (("server, batching off", 1), ("server, batching on", a.batch)):
        args = ["--threads", str(a.threads), "--max-batch-size", str(batch)]
        args += ["--max-queue-delay-ms", str(a.delay_ms), "--max-queue-size", "4096"]
        with Server([model], args) as srv:
            for c in counts:
                res = http_loop(srv.port, [_infer_path(model)], data, c, a.duration)
                rows.append({"model": model.stem, "setup": setup, "clients": c, **res})
            if batch == 1:
                res = http_loop(srv.port, ["/v2/health/live"], None, 1, a.duration)
                rows.append({"model": model.stem, "setup": HTTP_ONLY, "clients": 1, **res})
    return rows


def two_models(models: list[Path], data: bytes, a: argparse.Namespace) -> list[dict]:
    """Both models in one server, at the default settings and each explicit ``--threads``; each
    row records the intra-op threads the server reported loading each model with."""
    rows = []
    for threads in [0, *a.thread_settings]:
        args = [] if threads == 0 else ["--threads", str(threads)]
        with Server(models, args) as srv:
            paths = [_infer_path(m) for m in models]
            res = http_loop(srv.port, paths, data, a.two_model_clients, a.duration)
            used = [int(n) for n in re.findall(r"with (\d+) intra-op threads", srv.tail(20000))]
        setup = f"two models, --threads {threads}" if threads else "two models, default"
        rows.append(
            {
                "model": "+".join(m.stem for m in models),
                "setup": setup,
                "clients": a.two_model_clients,
                "threads": threads,
                "threads_loaded": used,
                **res,
            }
        )
    return rows


def _cell(rows: list[dict], model: str, setup: str, clients: int) -> dict:
    return next(
        r for r in rows if r["model"] == model and r["setup"] == setup and r["clients"] == clients
    )


def checks(rows: list[dict], models: list[Path], counts: list[int]) -> dict[str, dict]:
    """The benchmark's goals, each with its figures and ``pass`` (:func:`_common.check`)."""
    out = {}
    top = max(counts)
    for m in (m.stem for m in models):
        if 1 in counts:
            base = _cell(rows, m, "in-process", 1)["p50_ms"]
            for setup in ("server, batching off", "server, batching on"):
                server = _cell(rows, m, setup, 1)["p50_ms"]
                out[f"{m}: p50 at 1 client, {setup} minus in-process"] = check(
                    f"{server - base:+.2f} ms ({server:.2f} vs {base:.2f})",
                    f"<= {P50_MARGIN_MS:g} ms",
                    server - base <= P50_MARGIN_MS,
                    server_ms=server,
                    in_process_ms=base,
                )
        on = _cell(rows, m, "server, batching on", top)["throughput_rps"]
        off = _cell(rows, m, "server, batching off", top)["throughput_rps"]
        out[f"{m}: req/s at {top} clients, batching on vs off"] = check(
            f"{on:.0f} vs {off:.0f} req/s", "on >= off", on >= off, on_rps=on, off_rps=off
        )
    pair = [r for r in rows if r["setup"].startswith("two models")]
    if len(pair) > 1:
        default = pair[0]["throughput_rps"]
        best = max(pair[1:], key=lambda r: r["throughput_rps"])
        out[f"two models, {pair[0]['clients']} clients: default req/s vs the best --threads"] = (
            check(
                f"{default / best['throughput_rps']:.2f}x ({default:.0f} vs {best['throughput_rps']:.0f}"
                f" req/s at --threads {best['threads']})",
                f">= {DEFAULT_SHARE:g}x",
                default >= DEFAULT_SHARE * best["throughput_rps"],
                default_rps=default,
                best_rps=best["throughput_rps"],
                best_threads=best["threads"],
            )
        )
    return out


def references(rows: list[dict]) -> list[dict[str, str]]:
    """Every set-up's p50 / p99 (ms) and req/s across its client counts, without a goal."""
    out = []
    for key in dict.fromkeys((r["model"], r["setup"]) for r in rows):
        cells = [r for r in rows if (r["model"], r["setup"]) == key]
        clients = " / ".join(str(r["clients"]) for r in cells)
        lat = ", ".join(f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}" for r in cells)
        rps = " / ".join(f"{r['throughput_rps']:.0f}" for r in cells)
        loaded = cells[0].get("threads_loaded")
        ort = f" (ORT threads per model as loaded: {', '.join(map(str, loaded))})" if loaded else ""
        out.append(
            reference(
                f"{key[0]}, {key[1]}{ort}: p50 / p99 ms, req/s at {clients} clients",
                f"{lat} ms; {rps} req/s",
            )
        )
    return out


def print_table(rows: list[dict]) -> None:
    """One line per cell: model, set-up, clients, p50/p99 ms, req/s, requests, errors."""
    print(
        f"{'model':<16} {'setup':<38} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
        f"{'requests':>9} {'errors':>6}"
    )
    for r in rows:
        print(
            f"{r['model']:<16} {r['setup']:<38} {r['clients']:>7} {r['p50_ms']:>8.2f} "
            f"{r['p99_ms']:>8.2f} {r['throughput_rps']:>8.1f} {r['requests']:>9} "
            f"{r.get('errors', 0):>6}"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path, nargs="+", help="one or two .onnx files (teacher, student)")
    p.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per cell")
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0 = automatic)")
    p.add_argument("--batch", type=int, default=32, help="max_batch_size for (c)")
    p.add_argument("--delay-ms", type=float, default=2.0, help="max_queue_delay_ms for (c)")
    p.add_argument("--two-model-clients", type=int, default=32)
    p.add_argument("--thread-settings", default="1,2", help="explicit --threads to compare")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    a = p.parse_args(argv)
    if len(a.models) > 2 or len({m.stem for m in a.models}) != len(a.models):
        p.error("give one or two .onnx files with different names")
    counts = [int(c) for c in a.clients.split(",")]
    a.thread_settings = [int(t) for t in a.thread_settings.split(",") if t]
    data = digit_png()
    rows = [r for m in a.models for r in one_model(m, data, counts, a)]
    if len(a.models) == 2:
        rows += two_models(a.models, data, a)
    print_table(rows)
    found = checks(rows, a.models, counts)
    settings = {k: getattr(a, k) for k in ("duration", "batch", "delay_ms", "threads")}
    doc = {"models": [str(m) for m in a.models], **settings, "rows": rows, "checks": found}
    doc["references"] = references(rows)
    return finish("serve", doc, a.out)


if __name__ == "__main__":
    sys.exit(main())
