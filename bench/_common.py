"""What the bench scripts share: the machine they ran on, result files, a test image, a
``transferkit serve`` subprocess and closed-loop HTTP clients.

A bench script imports it as ``_common`` (``bench/`` is ``sys.path[0]`` when a script runs).
Results go to ``bench/results/<stem>-<YYYYmmdd-HHMMSS>.json`` and, under a stable name that
``bench/summary.py`` reads, ``bench/results/<stem>.json``.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

__all__ = [
    "REPO",
    "RESULTS",
    "machine",
    "describe_machine",
    "provenance",
    "write_json",
    "check",
    "reference",
    "print_checks",
    "finish",
    "digit_png",
    "latency_stats",
    "Server",
    "http_loop",
]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)  # kB -> GiB
    except OSError:
        pass
    return None


def _gpus() -> list[str]:
    """GPU names from ``nvidia-smi -L`` (empty when there is none or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.split(" (UUID")[0] for line in out.stdout.splitlines() if line.startswith("GPU")]


def machine() -> dict[str, Any]:
    """The machine a figure was measured on.

    Returns:
        ``cpu`` (model name), ``cores`` (CPUs this process may use), ``ram_gib`` (total memory,
        GiB), ``gpus`` (names; empty: none), ``platform``, ``python``.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "ram_gib": _ram_gib(),
        "gpus": _gpus(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def describe_machine(m: dict[str, Any] | None) -> str:
    """One line for a :func:`machine` record (older result files hold fewer fields).

    Args:
        m: a result file's ``machine`` entry, or None.

    Returns:
        E.g. ``"AMD EPYC, 2 cores, 23.4 GiB, no GPU"``; ``"not recorded"`` for None.
    """
    if not m:
        return "not recorded"
    parts = [str(m.get("cpu") or m.get("platform") or "CPU not recorded")]
    cores = m.get("cores", m.get("cpus"))
    if cores:
        parts.append(f"{cores} cores")
    if m.get("ram_gib"):
        parts.append(f"{m['ram_gib']:g} GiB")
    if "gpus" in m:
        parts.append(", ".join(m["gpus"]) or "no GPU")
    return ", ".join(parts)


def provenance(now: datetime | None = None) -> dict[str, Any]:
    """``{"date": ISO 8601 UTC, "machine": machine()}``, the head of every result file."""
    now = now or datetime.now(timezone.utc)
    return {"date": now.isoformat(timespec="seconds"), "machine": machine()}


def write_json(stem: str, data: dict[str, Any], out: Path = RESULTS) -> Path:
    """Write ``data`` with the date and :func:`machine` to ``out/<stem>-<time>.json`` and to the
    stable ``out/<stem>.json``.

    Args:
        stem: the result's name (the script's, e.g. ``"soak"``).
        data: JSON-serialisable figures.
        out: the results folder (created).

    Returns:
        The time-stamped file.
    """
    now = datetime.now(timezone.utc)
    doc = {**provenance(now), **data}
    text = json.dumps(doc, indent=2, default=str) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}-{now.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(text)
    (out / f"{stem}.json").write_text(text)
    return path


def check(measured: str, goal: str, passed: bool, **figures: Any) -> dict[str, Any]:
    """One goal of a result file, as ``bench/summary.py`` shows it.

    Args:
        measured: the figure as read, with its unit (e.g. ``"+0.41 ms (1.02 vs 0.61)"``).
        goal: the goal, with its unit (e.g. ``"<= 1 ms"``).
        passed: whether the figure meets the goal.
        figures: the numbers behind it, kept in the file.

    Returns:
        ``{"measured", "goal", "pass", **figures}``.
    """
    return {"measured": measured, "goal": goal, "pass": bool(passed), **figures}


def reference(figure: str, measured: str) -> dict[str, str]:
    """A figure recorded without a goal (``bench/summary.py`` shows it with the goal "-")."""
    return {"figure": figure, "measured": measured}


def print_checks(checks: dict[str, dict[str, Any]]) -> None:
    """One line per :func:`check`: ``PASS|FAIL  name: measured (goal ...)``."""
    for name, c in checks.items():
        print(f"{'PASS' if c['pass'] else 'FAIL'}  {name}: {c['measured']} (goal {c['goal']})")


def finish(stem: str, doc: dict[str, Any], out: Path = RESULTS) -> int:
    """A script's last step: print its checks, :func:`write_json` the document, say where.

    Returns:
        0, the script's exit status (a missed goal is a figure, not a failure).
    """
    print_checks(doc.get("checks", {}))
    print(f"wrote {write_json(stem, doc, out)}")
    return 0


def digit_png() -> bytes:
    """One real UCI handwritten digit (8x8 grey) as PNG bytes (a synthetic digit-like image on
    a serving-only install without scikit-learn)."""
    from PIL import Image

    try:
        from sklearn.datasets import load_digits

        arr = (load_digits().images[0] * (255.0 / 16.0)).round().astype(np.uint8)
    except ImportError:
        arr = np.zeros((8, 8), np.uint8)
        arr[1:7, 3:5] = 255
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def latency_stats(latencies_s: list[float], seconds: float) -> dict[str, float]:
    """``requests``, ``p50_ms``, ``p99_ms`` and ``throughput_rps`` (requests / ``seconds``) of
    latencies given in seconds."""
    lat = np.asarray(latencies_s) * 1000.0
    return {
        "requests": len(lat),
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "throughput_rps": len(lat) / seconds,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``transferkit serve MODELS... ARGS`` on a free loopback port, ready when built.

    Args:
        models: the ``.onnx`` files (each served as its stem).
        args: more ``transferkit serve`` options, e.g. ``["--threads", "1"]``.
        log: where the server's output goes (default: a new temporary file).

    Raises:
        RuntimeError: the server exited or was not ready within 120 s (its log's tail says why).
    """

    def __init__(
        self, models: list[Path], args: Sequence[str] = (), log: Path | None = None
    ) -> None:
        import httpx

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if log is None:
            fd, name = tempfile.mkstemp(prefix="bench-server-", suffix=".log")
            os.close(fd)
            log = Path(name)
        self.log = log
        self._log = open(log, "w")
        cmd = [sys.executable, "-m", "transferkit.cli", "serve", *map(str, models)]
        self.proc = subprocess.Popen(
            [*cmd, "--port", str(self.port), *args],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        end = time.monotonic() + 120
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.tail()}")
            try:
                if httpx.get(self.url + "/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready in 120 s: {self.tail()}")

    def tail(self, chars: int = 2000) -> str:
        """The end of the server's log (its output and errors)."""
        return self.log.read_text(errors="replace")[-chars:]

    @property
    def pid(self) -> int:
        """The server's process id (``python -m transferkit.cli serve`` itself)."""
        return self.proc.pid

    def rss_mib(self) -> float:
        """The server process's resident memory now, MiB (``VmRSS`` of ``/proc/PID/status``)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # kB -> MiB
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    def metric(self, name: str) -> dict[str, float]:
        """The samples of one Prometheus family from ``GET /metrics``: ``{labels: value}``."""
        import httpx

        text = httpx.get(self.url + "/metrics", timeout=10).text
        out = {}
        for line in text.splitlines():
            if line.startswith((name + "{", name + " ")):
                key, value = line.rsplit(" ", 1)
                out[key[len(name) :]] = float(value)
        return out

    def stop(self) -> None:
        """SIGTERM (the server drains), SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _client(port, path, data, stop_at, start, lats, errors) -> None:
    """One closed-loop client on one keep-alive connection: warm up, wait for ``start``, then
    POST ``data`` (GET when ``data`` is None) until ``stop_at[0]``; a failed or non-200 answer
    counts in ``errors`` (reconnecting)."""
    headers = {"content-type": "image/png"} if data is not None else {}
    method = "POST" if data is not None else "GET"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(5):  # open and warm the connection
            conn.request(method, path, body=data, headers=headers)
            conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        conn.close()
        errors[0] += 1
    start.wait(timeout=120)
    while True:
        t = time.perf_counter()
        if t >= stop_at[0]:
            break
        try:
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            r.read()
            ok = r.status == 200
        except (OSError, http.client.HTTPException):
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            ok = False
        lats.append(time.perf_counter() - t)
        errors[0] += not ok
    conn.close()


def http_loop(
    port: int, paths: list[str], data: bytes | None, clients: int, duration: float
) -> dict[str, float]:
    """Closed loop of ``clients`` threads, each with one keep-alive ``http.client`` connection
    (the standard library's client: a fraction of httpx's per-request cost, so the figures are
    the server's, not the client's); client ``i`` POSTs ``data`` to ``paths[i % len(paths)]``.

    Args:
        port: the server's loopback port.
        paths: request paths, e.g. ``["/v2/models/teacher/infer"]``.
        data: the request body (an encoded image, sent as ``image/png``); None sends GETs.
        clients: concurrent clients (count).
        duration: seconds of load after every client is connected and warm.

    Returns:
        :func:`latency_stats` of every answer, plus ``errors`` (non-200 answers and failed
        requests, count).
    """
    lats: list[list[float]] = [[] for _ in range(clients)]
    errors = [[0] for _ in range(clients)]
    start, stop_at = threading.Barrier(clients + 1), [float("inf")]
    ts = [
        threading.Thread(
            target=_client,
            args=(port, paths[i % len(paths)], data, stop_at, start, lats[i], errors[i]),
        )
        for i in range(clients)
    ]
    for t in ts:
        t.start()
    start.wait(timeout=120)
    t0 = time.perf_counter()
    stop_at[0] = t0 + duration
    for t in ts:
        t.join()
    out = latency_stats([x for per in lats for x in per], time.perf_counter() - t0)
    out["errors"] = sum(e[0] for e in errors)
    return out
