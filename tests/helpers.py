"""Helpers shared by the tests: one wait with a deadline, free ports, a real server process.

Import as ``from helpers import wait_until`` (``tests/`` is on ``sys.path`` through its
``conftest.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")


def wait_until(
    check: Callable[[], T],
    what: str,
    deadline_s: float = 30.0,
    interval_s: float = 0.05,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call ``check`` until it returns a truthy value; fail the test at the deadline.

    Args:
        check: returns a falsy value while the condition does not hold yet; its exceptions
            propagate (a check that should tolerate one catches it itself).
        what: the awaited condition, for the failure message ("the server answers 200").
        deadline_s: seconds before the test fails.
        interval_s: pause between two calls.
        detail: text appended to the failure message (e.g. a server's log).

    Returns:
        The first truthy value of ``check``.
    """
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= end:
            extra = f":\n{detail()}" if detail is not None else ""
            pytest.fail(f"waited {deadline_s} s and still not: {what}{extra}")
        time.sleep(interval_s)


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``transferkit serve MODEL`` (the CLI) on a free loopback port; output goes to a log file.

    Args:
        model: the ``.onnx`` file.
        log_path: where the server's stdout and stderr go.
        *extra: more ``transferkit serve`` flags.
        env: extra environment variables for the server.
    """

    def __init__(
        self, model: Path, log_path: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            **(env or {}),
        }
        cmd = [sys.executable, "-m", "transferkit.cli", "serve", str(model)]
        cmd += ["--port", str(self.port), *extra]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        """Everything the server wrote so far."""
        return self.log_path.read_text(errors="replace")

    def _answers(self, path: str, status: int) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"server exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.url + path, timeout=2.0).status_code == status
        except httpx.TransportError:
            return False

    def wait_for(self, path: str, status: int = 200, deadline_s: float = 60.0) -> None:
        """Wait until ``GET path`` answers ``status``; fail with the server log if it never does."""
        wait_until(
            lambda: self._answers(path, status),
            f"GET {path} answers {status}",
            deadline_s,
            interval_s=0.1,
            detail=self.log,
        )

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM (uvicorn's graceful shutdown); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@asynccontextmanager
async def in_process(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on a transferkit app in this process (``httpx.ASGITransport``).

    The app's runtime is started first (every model loaded, or its failure recorded) and stopped
    after, as the app's lifespan does under uvicorn, so no test polls for readiness.

    Args:
        app: an app of :func:`transferkit.serving.app.create_app`.

    Yields:
        The client, base URL ``http://testserver``.
    """
    rt = app.state.runtime
    await rt.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c
    finally:
        await rt.stop()


def torchvision_eval_transform(prep: Any) -> Callable[[Any], Any]:
    """The independent reference for :func:`transferkit.imaging.preprocess`: torchvision's
    ``Resize(round(input_size / crop_pct))`` + ``CenterCrop`` + ``ToTensor`` + ``Normalize`` for a
    ``Preprocessing`` (a PIL image in, a float tensor ``[C, S, S]`` out)."""
    from torchvision import transforms as T

    mode = getattr(T.InterpolationMode, prep.interpolation.upper())
    return T.Compose(
        [
            T.Resize(round(prep.input_size / prep.crop_pct), interpolation=mode),
            T.CenterCrop(prep.input_size),
            T.ToTensor(),
            T.Normalize(prep.mean, prep.std),
        ]
    )


def tiny_cnn(channels: int = 3, num_classes: int = 10) -> Any:
    """A small CNN (``torch.nn.Sequential``, seed 0, eval mode) for ONNX files without training:
    float32 ``[N, channels, H, W]`` -> logits ``[N, num_classes]``, the last layer's weights
    scaled by 20 so the top-1 class is rarely a near-tie. torch is imported here only: the
    serving package itself never imports it."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )
    with torch.no_grad():
        model[-1].weight.mul_(20.0)
    return model.eval()


def run_cli(*args: Any, timeout: float = 300, env: dict[str, str] | None = None):
    """``python -m transferkit.cli ARGS`` in a subprocess: the ``CompletedProcess`` (text)."""
    return subprocess.run(
        [sys.executable, "-m", "transferkit.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(set(x.split(":", 1)[1].split()) for x in f if x.startswith("flags"))
    except (OSError, StopIteration):
        return None
