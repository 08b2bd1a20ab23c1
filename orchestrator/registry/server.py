"""The MLflow tracking server a campaign logs to: embedded (one per run dir) or external.

An embedded server keeps its store in the run directory::

    <run_dir>/mlflow/mlflow.db        runs, metrics, registered models (SQLite)
    <run_dir>/mlflow/artifacts/       models and other artifacts (served by the server)
    <run_dir>/mlflow/server.log       the server's stdout and stderr
    <run_dir>/mlflow/server.json      {"url", "pid", ...} while the server runs

It is started with an argument list (no shell) in its own process group, with job execution
and telemetry off (2 processes, healthy in ~5 s); ``stop()`` ends the whole group and reaps it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from orchestrator.registry.errors import RegistryUnavailableError, TrackingServerError

STORE_DIR = "mlflow"
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def store_paths(run_dir: Path) -> dict[str, Path]:
    """Where a run directory keeps its MLflow store (the paths need not exist)."""
    root = Path(run_dir).absolute() / STORE_DIR
    return {
        "root": root,
        "db": root / "mlflow.db",
        "artifacts": root / "artifacts",
        "log": root / "server.log",
        "info": root / "server.json",
    }


def health_error(url: str, timeout: float = 3.0) -> str | None:
    """Why ``GET <url>/health`` fails within ``timeout`` seconds, or None when it answers OK."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return None
            return f"/health answered HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"/health answered HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason) or type(exc).__name__


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Raise :class:`RegistryUnavailableError` unless an http(s) tracking URI answers /health.

    Other URIs (``sqlite:``, ``file:``, ``databricks``...) are not probed.
    """
    if not uri.startswith(("http://", "https://")):
        return
    problem = health_error(uri, timeout)
    if problem is not None:
        raise RegistryUnavailableError(
            f"MLflow tracking server {uri} is unreachable ({problem}); start it "
            f"(`orch ui --run-dir DIR` serves a run's store) or fix the tracking URI "
            f"in the configuration"
        )


def free_port(host: str = "127.0.0.1", port: int = 0) -> int:
    """A TCP port free on ``host`` right now (``port``, or any; OSError if ``port`` is taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, port))
        return int(sock.getsockname()[1])


def mlflow_executable() -> Path:
    """The ``mlflow`` command installed beside the running Python."""
    path = Path(sys.executable).parent / "mlflow"
    if not path.exists():
        raise TrackingServerError(
            f"no mlflow command beside {sys.executable}; install the full `mlflow` package "
            "in this environment (mlflow-skinny has no server)"
        )
    return path


def read_server_info(run_dir: Path) -> dict[str, Any] | None:
    """The ``server.json`` of a run directory, or None when there is none (or it is unreadable)."""
    try:
        info = json.loads(store_paths(run_dir)["info"].read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def live_server_url(run_dir: Path, timeout: float = 3.0) -> str | None:
    """The URL of the server that ``server.json`` names if it is alive and healthy, else None."""
    info = read_server_info(run_dir)
    if not info or not isinstance(info.get("url"), str) or not isinstance(info.get("pid"), int):
        return None
    if not psutil.pid_exists(info["pid"]):
        return None
    return info["url"] if health_error(info["url"], timeout) is None else None


class TrackingServer:
    """An MLflow tracking server: ``with TrackingServer(run_dir) as server: server.url``.

    ``TrackingServer.external(uri)`` wraps a server (or any tracking URI) from configuration:
    nothing is started or stopped.
    """

    def __init__(
        self,
        run_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = 90.0,
    ) -> None:
        self.run_dir: Path | None = Path(run_dir).absolute()
        self.host = host
        self.port = port  # the port served on (once started)
        self._requested_port = port
        self.startup_timeout = startup_timeout
        self._uri: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def external(cls, uri: str) -> TrackingServer:
        """A tracking URI from configuration (no process is started)."""
        server = cls.__new__(cls)
        server.run_dir = None
        server.host = ""
        server.port = None
        server._requested_port = None
        server.startup_timeout = 0.0
        server._uri = uri.rstrip("/")
        server._proc = None
        return server

    # --- state ---------------------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when this object starts and stops the server itself."""
        return self.run_dir is not None

    @property
    def url(self) -> str:
        """The tracking URI (``http://127.0.0.1:PORT`` for an embedded server)."""
        if self._uri is None:
            raise TrackingServerError("the tracking server is not started; call start() first")
        return self._uri

    @property
    def pid(self) -> int | None:
        """The server's process id (None when external or not running)."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the embedded server process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def healthy(self, timeout: float = 3.0) -> bool:
        """True when the server answers ``GET /health``."""
        return self._uri is not None and health_error(self._uri, timeout) is None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> TrackingServer:
        """Start the embedded server and wait until it is healthy (external: probe it)."""
        if not self.embedded:
            check_reachable(self.url)
            return self
        if self._proc is not None:
            return self
        paths = store_paths(self._run_dir)
        paths["artifacts"].mkdir(parents=True, exist_ok=True)
        # a port picked here could be taken before the server binds it: then try another
        requested = self._requested_port
        attempts = 1 if requested is not None else 3
        for attempt in range(attempts):
            port = requested if requested is not None else free_port(self.host)
            try:
                self._launch(port, paths)
                return self
            except TrackingServerError as exc:
                address_taken = "already in use" in str(exc)
                if not address_taken or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self, port: int, paths: dict[str, Path]) -> None:
        command = [
            str(mlflow_executable()),
            "server",
            "--backend-store-uri", f"sqlite:///{paths['db']}",
            "--artifacts-destination", str(paths["artifacts"]),
            "--host", self.host,
            "--port", str(port),
            "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, **SERVER_ENV}
        with open(paths["log"], "ab") as log:
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=paths["root"],
                start_new_session=True,  # its own process group: stop() ends all of it
            )
        url = f"http://{self.host}:{port}"
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self._proc.poll()
            if code is not None:
                self._reap()
                raise TrackingServerError(
                    f"mlflow server exited with code {code} before answering /health "
                    f"(log {paths['log']}): {_tail(paths['log'])}"
                )
            if health_error(url, timeout=1.0) is None:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise TrackingServerError(
                    f"mlflow server did not answer {url}/health within "
                    f"{self.startup_timeout:.0f} s (log {paths['log']}): {_tail(paths['log'])}"
                )
            time.sleep(0.1)  # polling interval of the health check above
        self.port, self._uri = port, url
        info = {
            "url": url,
            "pid": self._proc.pid,
            "port": port,
            "backend_store_uri": f"sqlite:///{paths['db']}",
            "artifacts_destination": str(paths["artifacts"]),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        tmp = paths["info"].with_suffix(".json.tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(paths["info"])

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server's whole process group and reap it; remove ``server.json``."""
        if self._proc is None:
            return
        pid = self._proc.pid
        self._reap(timeout)
        if self.run_dir is not None:
            info_path = store_paths(self.run_dir)["info"]
            info = read_server_info(self.run_dir)
            if info is not None and info.get("pid") == pid:
                info_path.unlink(missing_ok=True)
        if self.run_dir is not None:
            self._uri = None

    def _reap(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            members = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.Error:
            members = []
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)  # the group id is the leader's pid (new session)
            for member in members:  # any that left the group
                with contextlib.suppress(psutil.Error):
                    member.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                continue
            _, alive = psutil.wait_procs(members, timeout=timeout)
            if not alive:
                return
            members = alive

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the embedded server exits (or ``timeout``); its exit code or None."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def _run_dir(self) -> Path:
        assert self.run_dir is not None
        return self.run_dir

    def __enter__(self) -> TrackingServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.run_dir if self.embedded else "external"
        return f"TrackingServer({where}, url={self._uri})"


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty log)"
