"""The MLflow tracking server a campaign logs to: embedded (one per run dir) or external.

An embedded server keeps its store in the run directory::

    <run_dir>/mlflow/mlflow.db        runs, metrics, registered models (SQLite)
    <run_dir>/mlflow/artifacts/       models and other artifacts (served by the server)
    <run_dir>/mlflow/server.log       the server's stdout and stderr
    <run_dir>/mlflow/server.json      {"url", "pid", "username", "credentials"} while it runs
    <run_dir>/mlflow/credentials      the server's user name and password (mode 0600)
    <run_dir>/mlflow/basic_auth.ini   MLflow's auth configuration (mode 0600, no password)
    <run_dir>/mlflow/basic_auth.db    MLflow's user store (SQLite)

**A secret per run directory.** The server runs MLflow's own basic-auth app
(``mlflow server --app-name basic-auth``) with ``default_permission = NO_PERMISSIONS``: every
request but ``/health`` and the UI's static files needs the user name and password of the
run's ``credentials`` file (401 without them or with a wrong password). The password is made
with :mod:`secrets` the first time a server starts for the run directory and kept, so that
``orch ui --run-dir`` and ``--resume`` serve the same store with the same secret. The file uses
the format of MLflow's own ``~/.mlflow/credentials`` (``[mlflow]`` with
``mlflow_tracking_username`` / ``mlflow_tracking_password``); another tool passes the two
values as ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``. The password reaches the
server only through its own environment (``MLFLOW_AUTH_ADMIN_PASSWORD``), never its command
line, ``server.json`` or log. An external server (``TrackingServer.external``) is used as it
is: orch adds no credentials, MLflow's own environment variables keep working.

It is started with an argument list (no shell) in its own process group, with job execution
and telemetry off (healthy in ~7 s), under a watcher (:mod:`orchestrator.registry.watch`) that
ends the group when orch dies, even by ``kill -9``; ``stop()`` ends the whole group and reaps it.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from orchestrator.exceptions import ConfigError
from orchestrator.registry.errors import RegistryUnavailableError, TrackingServerError

STORE_DIR = "mlflow"
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
USERNAME = "orch"
"""The user name of an embedded server (MLflow's admin user of that server)."""
AUTH_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"
"""An API call that needs credentials: proves that the server takes the run's secret."""
WATCH_SCRIPT = Path(__file__).with_name("watch.py")
TRACKING_SCHEMES = {
    "http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks",
}  # fmt: skip
"""URI schemes MLflow's tracking and registry stores both take (``+driver`` allowed on DBs)."""
DATABASE_SCHEMES = {"sqlite", "postgresql", "mysql", "mssql"}
"""The schemes of :data:`TRACKING_SCHEMES` that take a ``+driver`` suffix."""


def store_paths(run_dir: Path) -> dict[str, Path]:
    """Where a run directory keeps its MLflow store (the paths need not exist)."""
    root = Path(run_dir).absolute() / STORE_DIR
    return {
        "root": root,
        "db": root / "mlflow.db",
        "artifacts": root / "artifacts",
        "log": root / "server.log",
        "info": root / "server.json",
        "credentials": root / "credentials",
        "auth_ini": root / "basic_auth.ini",
        "auth_db": root / "basic_auth.db",
    }


@dataclass(frozen=True)
class Credentials:
    """The user name and password of an embedded server (the password never shows in repr).

    Args:
        username: The server's user.
        password: Its password.
        path: The file they were read from, if any.
    """

    username: str
    password: str = field(repr=False)
    path: Path | None = None

    def header(self) -> str:
        """The value of an HTTP ``Authorization`` header (basic auth)."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older tmp file may have had another mode
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_credentials(run_dir: Path) -> Credentials | None:
    """The credentials of a run directory's server, or None when it has none (yet).

    Raises:
        TrackingServerError: the file exists but cannot be read or lacks a value.
    """
    path = store_paths(run_dir)["credentials"]
    if not path.exists():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text())
        section = parser["mlflow"]
        username = section["mlflow_tracking_username"].strip()
        password = section["mlflow_tracking_password"].strip()
    except (OSError, UnicodeDecodeError, configparser.Error, KeyError) as exc:
        raise TrackingServerError(
            f"credentials file {path} cannot be read ({type(exc).__name__}); delete it and "
            f"{store_paths(run_dir)['auth_db']} to make a new secret"
        ) from None
    if not username or not password:
        raise TrackingServerError(
            f"credentials file {path} lacks a user name or password; delete it and "
            f"{store_paths(run_dir)['auth_db']} to make a new secret"
        )
    return Credentials(username, password, path)


def ensure_credentials(run_dir: Path) -> Credentials:
    """The run directory's credentials; made (and kept, mode 0600) the first time."""
    paths = store_paths(run_dir)
    found = read_credentials(run_dir)
    if found is not None:
        with contextlib.suppress(OSError):
            paths["credentials"].chmod(0o600)
        return found
    # MLflow ignores a new admin password once its user store has the admin: a store left
    # without its credentials file is useless, start it afresh (it holds no campaign data)
    paths["auth_db"].unlink(missing_ok=True)
    password = secrets.token_urlsafe(32)
    paths["root"].mkdir(parents=True, exist_ok=True)
    _write_private(
        paths["credentials"],
        "# The MLflow tracking server of this orch run directory: user and password.\n"
        "# Keep it private (mode 0600). Same format as MLflow's ~/.mlflow/credentials.\n"
        f"[mlflow]\nmlflow_tracking_username = {USERNAME}\n"
        f"mlflow_tracking_password = {password}\n",
    )
    return Credentials(USERNAME, password, paths["credentials"])


def _auth_ini(paths: dict[str, Path], username: str) -> str:
    return (
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{paths['auth_db']}\n"
        f"admin_username = {username}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # a password check (scrypt) costs ~0.15 s, on every request without this cache; one
        # worker and no other writer of the user store: no staleness to fear
        "auth_cache_ttl_seconds = 600\n"
    )


def _redacted(uri: str) -> str:
    """``uri`` with any ``user:password@`` replaced by ``***@`` (for messages)."""
    return re.sub(r"//[^/@]*@", "//***@", uri)


def validate_tracking_uri(uri: str, what: str = "--tracking-uri") -> str:
    """Check a tracking URI from the user; return it without a trailing slash.

    Raises:
        ConfigError: one line naming ``what`` and the fix (no scheme, an unknown scheme,
            no host, a bad port, credentials in the URI...).
    """
    text = uri.strip()
    fix = "pass http://HOST:PORT of an MLflow server, or leave it out to use the run's own"
    shown = _redacted(text)
    if not text or any(c.isspace() for c in text):
        raise ConfigError(f"{what} {shown!r}: not a URI (empty or with spaces); {fix}")
    if text.lower() == "databricks":  # MLflow's name for the default Databricks profile
        return text
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if not scheme or "://" not in text:
        raise ConfigError(f"{what} {shown!r}: no scheme (like http://); {fix}")
    base, _, driver = scheme.partition("+")
    if base not in TRACKING_SCHEMES or driver and base not in DATABASE_SCHEMES:
        known = ", ".join(sorted(TRACKING_SCHEMES))
        raise ConfigError(f"{what} {shown!r}: unknown scheme {scheme!r} (known: {known}); {fix}")
    if scheme in ("http", "https"):
        if parts.username is not None or parts.password is not None:
            raise ConfigError(
                f"{what} {shown!r}: credentials in the URI would show in logs; remove them "
                "and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead"
            )
        if not parts.hostname:
            raise ConfigError(f"{what} {shown!r}: no host; {fix}")
        try:
            parts.port  # noqa: B018 - parsing the port is the check
        except ValueError:
            problem = "the port is not a number 1-65535"
            raise ConfigError(f"{what} {shown!r}: {problem}; {fix}") from None
        if parts.query or parts.fragment:
            raise ConfigError(f"{what} {shown!r}: a server URI takes no ?query or #part; {fix}")
    elif scheme != "databricks" and not (parts.path.strip("/") or parts.netloc):
        raise ConfigError(f"{what} {shown!r}: no path or database after {scheme}://; {fix}")
    return text.rstrip("/")


def health_error(url: str, timeout: float = 3.0) -> str | None:
    """Why ``GET <url>/health`` fails within ``timeout`` seconds, or None when it answers OK.

    No credentials: MLflow's basic-auth app serves ``/health`` to anyone (it says only that
    the server is up); :func:`auth_error` checks that a server takes a run's secret.
    """
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


def auth_error(url: str, credentials: Credentials | None, timeout: float = 5.0) -> str | None:
    """Why an API call with ``credentials`` (none: anonymous) is refused, or None if it works."""
    request = urllib.request.Request(f"{url.rstrip('/')}{AUTH_PROBE}")
    if credentials is not None:
        request.add_header("Authorization", credentials.header())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
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
    nothing is started or stopped, and no credentials are added.

    Args:
        run_dir: The run directory whose ``mlflow/`` store the server serves.
        host: The address to bind (loopback by default).
        port: The port (default: a free one).
        startup_timeout: Seconds to wait for the server to answer ``/health``.
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
        self._watch_fd: int | None = None  # the write end of the watcher's pipe
        self.credentials: Credentials | None = None  # an embedded server's, once started

    @classmethod
    def external(cls, uri: str) -> TrackingServer:
        """A tracking URI from configuration (no process is started).

        Raises:
            ConfigError: ``uri`` is malformed (see :func:`validate_tracking_uri`).
        """
        server = cls.__new__(cls)
        server.run_dir = None
        server.host = ""
        server.port = None
        server._requested_port = None
        server.startup_timeout = 0.0
        server._uri = validate_tracking_uri(uri)
        server._proc = None
        server._watch_fd = None
        server.credentials = None
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
        self.credentials = ensure_credentials(self._run_dir)
        _write_private(paths["auth_ini"], _auth_ini(paths, self.credentials.username))
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
        assert self.credentials is not None
        command = [
            str(mlflow_executable()),
            "server",
            "--app-name", "basic-auth",
            "--backend-store-uri", f"sqlite:///{paths['db']}",
            "--artifacts-destination", str(paths["artifacts"]),
            "--host", self.host,
            "--port", str(port),
            "--workers", "1",
        ]  # fmt: skip
        env = {
            **os.environ,
            **SERVER_ENV,
            "MLFLOW_AUTH_CONFIG_PATH": str(paths["auth_ini"]),
            "MLFLOW_AUTH_ADMIN_USERNAME": self.credentials.username,
            # only the server's own environment holds the password (not its argv, not orch's)
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.credentials.password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),  # CSRF of the UI's forms
        }
        # the watcher reads end-of-file on this pipe when orch dies: then it ends the server
        read_fd, self._watch_fd = os.pipe()
        watched = [sys.executable, str(WATCH_SCRIPT), str(os.getpid()), str(read_fd), "--"]
        try:
            with open(paths["log"], "ab") as log:
                self._proc = subprocess.Popen(
                    [*watched, *command],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=paths["root"],
                    pass_fds=(read_fd,),
                    start_new_session=True,  # its own process group: stop() ends all of it
                )
        except BaseException:
            self._close_watch()
            raise
        finally:
            os.close(read_fd)
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
        refused = auth_error(url, self.credentials)
        if refused is not None:
            self.stop()
            raise TrackingServerError(
                f"mlflow server at {url} refuses the credentials in {paths['credentials']} "
                f"({refused}); delete that file and {paths['auth_db']} to make a new secret"
            )
        with contextlib.suppress(OSError):  # MLflow made it: password hashes, owner only
            paths["auth_db"].chmod(0o600)
        self.port, self._uri = port, url
        info = {
            "url": url,
            "pid": self._proc.pid,
            "port": port,
            "username": self.credentials.username,
            "credentials": str(paths["credentials"]),
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

    def _close_watch(self) -> None:
        fd, self._watch_fd = self._watch_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _reap(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            self._close_watch()
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
                break
            members = alive
        self._close_watch()

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
