"""A real ``tinygpt serve`` process on a free loopback port, for the server's tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

# Loading a model and compiling the kernels on a busy 2-core machine can take a while.
READY_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model_dir: Path, *flags: str, log: Path | None = None) -> Iterator[str]:
    """Start ``tinygpt serve --model model_dir *flags`` on 127.0.0.1 and a free port; yield its base URL once
    /health answers 200; stop it with SIGTERM afterwards (and insist that it exits 0)."""
    port = free_port()
    command = [sys.executable, "-m", "tinygpt", "serve", "--model", str(model_dir), "--host", "127.0.0.1",
               "--port", str(port), *flags]
    output = open(log, "wb") if log is not None else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process)
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if log is not None:
            output.close()


def wait_until_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode} before it was ready")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {READY_TIMEOUT} s")
