"""``transferkit serve`` start-up, as a user meets it: the port, the announced URLs, exit codes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO

from transferkit.serving.errors import PortInUseError
from transferkit.serving.server import bind_socket


def test_a_port_in_use_is_one_clear_error_exit_2_and_nothing_announced(serving_onnx: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [sys.executable, "-m", "transferkit.cli", "serve", str(serving_onnx)]
            + ["--port", str(port)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
    assert "pick another --port" in out.stderr
    everything = out.stdout + out.stderr
    for absent in ("serving digits_cnn", "startup complete", "Traceback", "Errno"):
        assert absent not in everything, everything


def test_bind_socket_names_the_port_and_gives_port_0_a_real_one() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port > 0
        sock.listen()
        with pytest.raises(PortInUseError, match=f"port {port} on 127.0.0.1"):
            bind_socket("127.0.0.1", port)
    finally:
        sock.close()
    bind_socket("127.0.0.1", port).close()  # free again once closed
