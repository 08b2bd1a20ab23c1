"""A private RabbitMQ broker for one test session, on 127.0.0.1 only.

:class:`RabbitBroker` runs the packaged ``rabbitmq-server`` script directly (not the system
service and not the ``/usr/sbin`` wrapper, which switches to the ``rabbitmq`` user) with every
path it writes inside a scratch directory: its own Erlang cookie (``HOME``), Mnesia and log
directories, an empty plugin list and a minimal ``rabbitmq.conf``. Nothing listens beyond the
loopback interface:

* the AMQP listener is ``127.0.0.1:<free port>`` (``RABBITMQ_NODE_PORT``,
  ``RABBITMQ_NODE_IP_ADDRESS`` and ``listeners.tcp.default`` in the config);
* the Erlang distribution port is a free port (``RABBITMQ_DIST_PORT``) bound to 127.0.0.1
  (``-kernel inet_dist_use_interface``);
* epmd is started here, with ``-address 127.0.0.1`` on a free port (``ERL_EPMD_PORT``), so the
  node never launches a detached epmd of its own (``-start_epmd false``) and the epmd PID is
  known and stopped at the end;
* the node name is unique per instance (``orch-loopback-<hex>@localhost``).

All ports are chosen at run time, so several brokers (several test runs) can share a machine.
Free ports are found by binding port 0; the small race between finding one and RabbitMQ
binding it is covered by retrying the start once with new ports.

:meth:`RabbitBroker.stop` terminates the broker's process group (SIGTERM, then SIGKILL after a
bound) and then epmd, and checks that no process of either is left.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pika
import pika.exceptions
import psutil

SERVER_SCRIPT_GLOB = "/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server"
"""The packaged start script (what ``/usr/sbin/rabbitmq-server`` ends up running)."""


def server_script() -> Path | None:
    """The ``rabbitmq-server`` script to run as root, or ``None`` when RabbitMQ is missing."""
    import glob

    found = sorted(glob.glob(SERVER_SCRIPT_GLOB))
    if found:
        return Path(found[-1])
    real = shutil.which("rabbitmq-server")
    return Path(real) if real else None


def epmd_binary() -> str | None:
    """The ``epmd`` binary (Erlang's port mapper), or ``None``."""
    return shutil.which("epmd")


def missing_reason() -> str | None:
    """Why a broker cannot run here (``None`` when it can)."""
    if server_script() is None:
        return "rabbitmq-server is not installed (apt-get install rabbitmq-server)"
    if epmd_binary() is None:
        return "epmd (Erlang) is not installed"
    return None


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that are free right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"


class BrokerError(RuntimeError):
    """The broker did not start (the message carries the tail of its log)."""


class RabbitBroker:
    """A RabbitMQ node of its own, started and stopped by the caller.

    Args:
        workdir: Scratch directory for all the broker's files (created; default a new temp dir,
            removed by :meth:`stop`).
        start_timeout: Seconds to wait for the broker to accept AMQP connections.

    Use as a context manager, or call :meth:`start` and (always) :meth:`stop`.
    """

    def __init__(self, workdir: Path | None = None, start_timeout: float = 90.0):
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="orch-rabbit-"))
        self.start_timeout = start_timeout
        self.node = f"orch-loopback-{uuid.uuid4().hex[:10]}@localhost"
        self.port = 0
        self.dist_port = 0
        self.epmd_port = 0
        self.epmd: subprocess.Popen[bytes] | None = None
        self.server: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None

    # -- public ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """AMQP URL of the broker (``guest`` is allowed from loopback; no heartbeats)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def __enter__(self) -> RabbitBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RabbitBroker:
        """Start epmd and the node; return once an AMQP connection succeeds.

        Raises:
            BrokerError: missing RabbitMQ, or the node did not accept connections in time.
        """
        reason = missing_reason()
        if reason:
            raise BrokerError(reason)
        began = time.monotonic()
        try:
            for attempt in (1, 2):
                try:
                    self._start_once()
                    break
                except BrokerError:
                    self._stop_processes()
                    if attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop the node and epmd (idempotent); no beam or epmd process of ours is left."""
        self._stop_processes()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_node(self) -> None:
        """Stop the RabbitMQ node only (a broker outage); epmd, ports and data stay.

        Every client connection drops. :meth:`start_node` brings the node back on the same
        ports, with the durable queues (and their persistent messages) it had.
        """
        server, self.server = self.server, None
        if server is not None:
            _stop_group(server, grace=30.0)

    def start_node(self) -> None:
        """Start the node again after :meth:`stop_node`, on the same ports; wait until ready.

        Raises:
            BrokerError: the node did not accept connections in time.
        """
        if self.server is not None:
            return
        script = server_script()
        assert script is not None
        with open(self._out, "ab") as out:
            self.server = subprocess.Popen(
                [str(script)],
                env=self._env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def connection(self) -> pika.BlockingConnection:
        """A new blocking connection to the broker."""
        return pika.BlockingConnection(pika.URLParameters(self.url + "?heartbeat=0"))

    # -- starting ----------------------------------------------------------------------------

    def _start_once(self) -> None:
        self.port, self.dist_port, self.epmd_port = free_ports(3)
        home = self.workdir / "home"
        mnesia = self.workdir / "mnesia"
        logs = self.workdir / "log"
        for folder in (home, mnesia, logs):
            folder.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "rabbitmq.conf"
        conf.write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        env_file = self.workdir / "rabbitmq-env.conf"
        env_file.write_text("")
        plugins = self.workdir / "enabled_plugins"
        plugins.write_text("[].\n")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(mnesia),
            "RABBITMQ_LOG_BASE": str(logs),
            "RABBITMQ_CONFIG_FILE": str(conf),
            "RABBITMQ_CONF_ENV_FILE": str(env_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.workdir / "advanced.config"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": (
                "-kernel inet_dist_use_interface {127,0,0,1} -start_epmd false"
            ),
        }
        self._env = env
        epmd = epmd_binary()
        assert epmd is not None
        self.epmd = subprocess.Popen(
            [epmd, "-address", "127.0.0.1", "-port", str(self.epmd_port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while not _port_open(self.epmd_port):
            if self.epmd.poll() is not None:
                raise BrokerError(f"epmd exited with {self.epmd.returncode}")
            if time.monotonic() > deadline:
                raise BrokerError(f"epmd did not listen on 127.0.0.1:{self.epmd_port}")
            time.sleep(0.05)
        script = server_script()
        assert script is not None
        self._out = self.workdir / "server.out"
        with open(self._out, "wb") as out:
            self.server = subprocess.Popen(
                [str(script)],
                env=env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self.server is not None
        deadline = time.monotonic() + self.start_timeout
        params = pika.URLParameters(
            self.url + "?heartbeat=0&socket_timeout=2&connection_attempts=1"
        )
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise BrokerError(
                    f"rabbitmq-server exited with {self.server.returncode}: {self._log_tail()}"
                )
            if _port_open(self.port):
                try:
                    pika.BlockingConnection(params).close()
                    return
                except pika.exceptions.AMQPError as exc:
                    last = exc
            time.sleep(0.2)
        raise BrokerError(
            f"RabbitMQ did not accept AMQP connections on 127.0.0.1:{self.port} within "
            f"{self.start_timeout:g} s ({last!r}): {self._log_tail()}"
        )

    def _log_tail(self) -> str:
        logs = sorted((self.workdir / "log").glob("*.log"))
        text = _tail(self._out, 1500)
        if logs:
            text += "\n" + _tail(logs[0], 1500)
        return " ".join(text.split())[-2500:]

    # -- stopping ----------------------------------------------------------------------------

    def _stop_processes(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            _stop_group(server, grace=30.0)
        epmd, self.epmd = self.epmd, None
        if epmd is not None:
            _stop_group(epmd, grace=10.0)
        # Anything that still names our node (an escaped child) goes too.
        leftovers = []
        for proc in psutil.process_iter(["cmdline"]):
            cmd = " ".join(proc.info["cmdline"] or ())
            if self.node in cmd or (
                self.epmd_port and "epmd" in cmd and f"-port {self.epmd_port}" in cmd
            ):
                leftovers.append(proc)
        for proc in leftovers:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(leftovers, timeout=5)


def _stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM ``proc``'s process group (it leads its own session), SIGKILL after ``grace``."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        pgid = None
    members: list[psutil.Process] = []
    if pgid is not None:
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if os.getpgid(p.pid) == pgid:
                    members.append(p)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        if pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=10)
    _, alive = psutil.wait_procs(members, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
