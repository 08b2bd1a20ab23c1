"""A throw-away redis-server on a free 127.0.0.1 port, for tests."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from orchestrator.registry.server import free_port

REDIS_SERVER = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
)


@contextmanager
def redis_server(workdir: Path) -> Iterator[int]:
    """Run redis-server (no persistence) until the block ends; yields its port."""
    assert REDIS_SERVER is not None, "redis-server is not installed"
    port = free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--logfile", "",
            "--daemonize", "no",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    with until_ready(proc):
        yield port


@contextmanager
def until_ready(proc: subprocess.Popen) -> Iterator[None]:
    """Wait for a started redis-server (text stdout) to accept connections; stop it on exit."""
    drain: threading.Thread | None = None
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # blocks until the server logs; ends if it exits
            seen.append(line)
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError("redis-server exited early:\n" + "".join(seen[-20:]))
        stdout = proc.stdout
        drain = threading.Thread(target=lambda: [None for _ in stdout], daemon=True)
        drain.start()  # keep the pipe from filling up
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if drain is not None:
            drain.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
