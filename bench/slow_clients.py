"""Slow clients: connections that trickle a request body do not delay anyone else.

``transferkit serve M.onnx --body-timeout T`` (default settings otherwise), then, for
``--duration`` seconds each (default 15):

1. ``--clients`` (default 8) normal closed-loop clients alone (a real UCI digit as PNG to
   ``/v2/models/{name}/infer``, one keep-alive connection each): their p50/p99 latency (ms);
2. the same while ``--slow`` (default 64) raw-socket connections each send the headers of the same
   request (``Content-Length`` of the image) and then one body byte per second. The server
   answers each 408 after ``T`` seconds (default 10); the connection is then opened again. The
   gauge ``transferkit_receiving_requests`` is read from ``/metrics`` every second.

Goals (written to ``bench/results/slow_clients-<time>.json`` and ``slow_clients.json``): the
normal clients' p99 with slow clients at most 1.5x their p99 alone (1.5x leaves room for the
scheduling noise of a 2-core machine while a stall would show as tens of times), zero errors for
normal clients, every slow connection answered 408, and all of them seen in the gauge.

Usage: ``.venv/bin/python bench/slow_clients.py MODEL.onnx [--duration 15] [--body-timeout 10]``.
"""

from __future__ import annotations

import argparse
import select
import socket
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from _common import RESULTS, Server, check, digit_png, finish, http_loop, reference

#: The normal clients' p99 with slow clients may be this many times their p99 alone.
MAX_P99_RATIO = 1.5
GAUGE = "transferkit_receiving_requests"


class SlowClients:
    """``n`` connections that each send a POST's headers, then one body byte every
    ``interval_s`` seconds (never the last byte); an answer is counted by status and the
    connection opened again. One thread drives them all.

    Args:
        port: the server's loopback port.
        path: the request path.
        body: the body the headers announce (its length is the ``Content-Length``).
        n: connections (count).
        interval_s: seconds between body bytes.
    """

    def __init__(self, port: int, path: str, body: bytes, n: int, interval_s: float = 1.0):
        self.port, self.body, self.n, self.interval_s = port, body, n, interval_s
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: image/png\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.statuses: Counter[str] = Counter()
        self.answered: set[int] = set()  # connection slots answered 408 at least once
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._socks: dict[int, socket.socket] = {}
        self._sent: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, i: int) -> None:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(self.head)
        s.setblocking(False)
        self._socks[i], self._sent[i] = s, 0

    def _answer(self, i: int) -> None:
        """Read slot ``i``'s answer (or its close), count it, open the slot again."""
        s = self._socks.pop(i)
        try:
            first = s.recv(4096).split(b"\r\n", 1)[0].split()
        except OSError:
            first = []
        s.close()
        status = first[1].decode() if len(first) > 1 else "closed"
        self.statuses[status] += 1
        if status == "408":
            self.answered.add(i)
        if not self._stop.is_set():
            self._open(i)

    def _trickle(self) -> None:
        """One more body byte on every connection (never the last one)."""
        for i, s in list(self._socks.items()):
            if self._sent[i] < len(self.body) - 1:
                try:
                    s.send(self.body[self._sent[i] : self._sent[i] + 1])
                    self._sent[i] += 1
                except OSError:  # closed by the server: its answer is read by select
                    pass

    def _run(self) -> None:
        for i in range(self.n):
            self._open(i)
        self.connected.set()
        due = time.monotonic() + self.interval_s
        while not self._stop.is_set():
            by_fd = {s.fileno(): i for i, s in self._socks.items()}
            ready, _, _ = select.select(list(by_fd), [], [], max(0.0, due - time.monotonic()))
            for fd in ready:
                self._answer(by_fd[fd])
            if time.monotonic() >= due:
                self._trickle()
                due += self.interval_s

    def start(self) -> None:
        """Open every connection (returns once they are all open)."""
        self._thread.start()
        self.connected.wait(60)

    def stop(self) -> None:
        """Stop sending and close every connection."""
        self._stop.set()
        self._thread.join(10)
        for s in self._socks.values():
            s.close()


def gauge_samples(srv: Server, stop: threading.Event, out: list[float]) -> None:
    """Append the summed receiving gauge to ``out`` every second until ``stop``."""
    while not stop.wait(1.0):
        out.append(sum(srv.metric(GAUGE).values()))


def measure(model: Path, a: argparse.Namespace) -> dict:
    """Normal clients alone, then beside the slow connections."""
    data, path = digit_png(), f"/v2/models/{model.stem}/infer"
    with Server([model], ["--body-timeout", str(a.body_timeout)]) as srv:
        alone = http_loop(srv.port, [path], data, a.clients, a.duration)
        slow = SlowClients(srv.port, path, data, a.slow)
        gauge: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=gauge_samples, args=(srv, stop, gauge))
        slow.start()
        sampler.start()
        try:
            busy = http_loop(srv.port, [path], data, a.clients, a.duration)
        finally:
            stop.set()
            sampler.join()
            slow.stop()
    return {"alone": alone, "with_slow": busy, "slow": slow, "gauge": gauge}


def report(model: Path, a: argparse.Namespace, m: dict) -> dict:
    """The result document: both phases, the slow connections' answers and the checks."""
    alone, busy, slow = m["alone"], m["with_slow"], m["slow"]
    ratio = busy["p99_ms"] / alone["p99_ms"]
    gauge_max = max(m["gauge"], default=0.0)
    errors = alone["errors"] + busy["errors"]
    return {
        "model": str(model),
        "clients": a.clients,
        "slow_connections": a.slow,
        "body_timeout_s": a.body_timeout,
        "duration_s": a.duration,
        "alone": alone,
        "with_slow": busy,
        "p99_ratio": ratio,
        "p50_ratio": busy["p50_ms"] / alone["p50_ms"],
        "slow_answers": dict(slow.statuses),
        "slow_answered_408": len(slow.answered),
        "receiving_gauge": m["gauge"],
        "checks": {
            f"normal clients' p99 with {a.slow} slow connections vs alone": check(
                f"{ratio:.2f}x ({busy['p99_ms']:.2f} vs {alone['p99_ms']:.2f} ms)",
                f"<= {MAX_P99_RATIO:g}x",
                ratio <= MAX_P99_RATIO,
                ratio=ratio,
            ),
            "normal clients' errors": check(f"{errors}", "0", errors == 0, errors=errors),
            f"slow connections answered 408 (--body-timeout {a.body_timeout:g} s)": check(
                f"{len(slow.answered)} of {a.slow}", f"all {a.slow}", len(slow.answered) == a.slow
            ),
            f"most slow connections seen at once in {GAUGE}": check(
                f"{gauge_max:g}", f"{a.slow}", gauge_max >= a.slow
            ),
        },
        "references": [
            reference(
                f"normal clients ({a.clients}) p50 / p99 ms, req/s: alone; with slow connections",
                f"{alone['p50_ms']:.2f} / {alone['p99_ms']:.2f} ms, "
                f"{alone['throughput_rps']:.0f} req/s; {busy['p50_ms']:.2f} / "
                f"{busy['p99_ms']:.2f} ms, {busy['throughput_rps']:.0f} req/s",
            )
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="an .onnx file")
    p.add_argument("--clients", type=int, default=8, help="normal clients")
    p.add_argument("--slow", type=int, default=64, help="slow connections")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    p.add_argument("--body-timeout", type=float, default=10.0, help="the server's, seconds")
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    if a.duration <= a.body_timeout:
        print(f"note: --duration {a.duration:g} <= --body-timeout: no 408 is expected in time")
    r = report(a.model, a, measure(a.model, a))
    for phase in ("alone", "with_slow"):
        f = r[phase]
        print(
            f"{a.clients} clients, {phase.replace('_', ' '):<9}: p50 {f['p50_ms']:.2f} ms, "
            f"p99 {f['p99_ms']:.2f} ms, {f['throughput_rps']:.1f} req/s, {f['errors']} errors"
        )
    print(
        f"{a.slow} slow connections: answers {r['slow_answers']}; gauge max "
        f"{max(r['receiving_gauge'], default=0):g}; p99 ratio {r['p99_ratio']:.2f}"
    )
    return finish("slow_clients", r, a.out)


if __name__ == "__main__":
    sys.exit(main())
