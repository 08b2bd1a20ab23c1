"""A ProxyStore relay and peered endpoints on 127.0.0.1, configured to work offline.

Each endpoint lives in its own ProxyStore home (what ``$PROXYSTORE_HOME`` points a process
at), so a process sees only the endpoint of its home, as on separate machines. Relay
authentication is off and ``ice_servers = []`` (no public STUN server is contacted): peers
find each other through host candidates.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from proxystore.endpoint.config import read_config, write_config

from orchestrator.registry.server import free_port

BIN = Path(sys.executable).parent
RELAY = shutil.which("proxystore-relay", path=str(BIN))
ENDPOINT = shutil.which("proxystore-endpoint", path=str(BIN))
AVAILABLE = RELAY is not None and ENDPOINT is not None


@dataclass
class Endpoint:
    """A running endpoint: its name, UUID, HTTP address, ProxyStore home and log."""

    name: str
    uuid: str
    address: str
    home: Path
    log: list[str]


class _Process:
    """A child process whose merged output is collected line by line in ``lines``."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert self.proc.stdout is not None
        stdout = self.proc.stdout
        self.reader = threading.Thread(
            target=lambda: [self.lines.append(line) for line in stdout], daemon=True
        )
        self.reader.start()

    def wait_for(self, text: str, deadline_s: float = 60.0) -> None:
        """Poll the output until a line contains ``text`` (fail if the process exits)."""
        end = time.monotonic() + deadline_s
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > end:
                tail = "".join(self.lines[-20:])
                raise RuntimeError(f"{self.proc.args} never logged {text!r}:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def relay(workdir: Path) -> Iterator[str]:
    """Run ``proxystore-relay`` without authentication; yields its ``ws://`` address."""
    assert RELAY is not None, "proxystore-relay is not installed (proxystore[endpoints])"
    port = free_port()
    argv = [RELAY, "--host", "127.0.0.1", "--port", str(port), "--log-dir", str(workdir)]
    process = _Process(argv, dict(os.environ))
    try:
        process.wait_for("Relay server listening")
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.stop()


@contextmanager
def endpoint(home: Path, name: str, relay_address: str) -> Iterator[Endpoint]:
    """Configure and run an endpoint in ``home`` that peers through ``relay_address``."""
    assert ENDPOINT is not None, "proxystore-endpoint is not installed (proxystore[endpoints])"
    env = {**os.environ, "PROXYSTORE_HOME": str(home)}
    port = free_port()
    subprocess.run(
        [ENDPOINT, "configure", name, "--host", "127.0.0.1", "--port", str(port),
         "--relay-address", relay_address, "--no-relay-auth"],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    config = read_config(str(home / name))
    config.relay.ice_servers = []  # offline: no public STUN server
    write_config(config, str(home / name))
    process = _Process([ENDPOINT, "start", name, "--no-detach"], env)
    try:
        process.wait_for("Established client connection to relay server")
        address = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 60
        while True:  # the relay connection comes before the HTTP server
            try:
                if requests.get(f"{address}/endpoint", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if process.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("endpoint never served HTTP:\n" + "".join(process.lines[-20:]))
            time.sleep(0.05)
        yield Endpoint(name, config.uuid, address, home, process.lines)
    finally:
        process.stop()
