"""A loopback stand-in for the Globus Compute cloud API and the few Globus Auth routes it uses.

What it plays (all on ``http://127.0.0.1:5000``, plain HTTP, in-memory state):

Globus Auth, under ``/auth/`` (point ``GLOBUS_SDK_SERVICE_URL_AUTH`` at ``<url>/auth/``):
  ``POST /auth/v2/oauth2/token`` (client credentials: one token per resource server, echoing
  the requested scopes), ``GET /auth/v2/oauth2/userinfo`` (one fixed identity) and
  ``POST /auth/v2/oauth2/token/introspect``. Bearer tokens are never checked.

Globus Compute:
  ``GET /v2/version``; ``POST /v3/endpoints`` and ``PUT /v3/endpoints/<id>`` (endpoint
  registration as globus-compute-endpoint 4.19 does it: the reply names the command and
  heartbeat queues); ``GET /v2/endpoints/<id>`` and ``GET /v2/endpoints/<id>/status``
  (``online`` while the endpoint's heartbeats keep coming); ``POST /v3/functions`` (and
  ``/v2/functions``); ``POST /v3/endpoints/<id>/submit`` (creates the task group's result
  queue, a user endpoint per distinct ``user_endpoint_config``, sends the manager its start
  command and the tasks to the user endpoint's queue); ``GET /v2/get_amqp_result_connection_url``;
  ``GET /v2/tasks/<id>``, ``POST /v2/batch_status`` and ``GET /v2/taskgroup/<id>`` for polling.

AMQP (a real RabbitMQ, see :mod:`loopback.broker`): the endpoints publish results and
heartbeats to two exchange+queue pairs declared here; a relay thread consumes both, records
heartbeats for the status route and republishes each result to the queue of the task group it
was submitted in (endpoint results carry no task group, so RabbitMQ routing alone cannot do
this). Every queue the service declares is deleted again by :meth:`LoopbackService.close`;
task-group queues also expire on their own (``x-expires``) once nobody consumes them.

The port. The SDK's ``local`` environment (``GLOBUS_SDK_ENVIRONMENT=local``), which is the only
way to point an unmodified ``globus-compute-endpoint`` at another Compute service, hard-wires
``http://localhost:5000``. Port 5000 is therefore fixed, and :meth:`LoopbackService.start`
first takes an exclusive ``fcntl.flock`` on :data:`PORT_LOCK` (waiting a bounded time): two
test runs on one machine then take turns instead of talking to each other's service. The lock
is held until :meth:`LoopbackService.close`. Everything else (the broker's ports) is chosen at
run time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pika
import pika.exceptions
from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import EPStatusReport, Result, Task

log = logging.getLogger(__name__)

PORT = 5000
"""The Compute service port of the SDK's ``local`` environment (fixed by the SDK)."""

PORT_LOCK = "/tmp/orch-loopback-globus-5000.lock"
"""File locked (``flock``) while a service holds port 5000 on this machine."""

IDENTITY = "9c1a2b3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
USERNAME = "loopback@localhost"
COMPUTE_RESOURCE_SERVER = "funcx_service"
COMPUTE_SCOPE_PREFIX = "https://auth.globus.org/scopes/facd7ccc-c5f4-42aa-916b-a0e270e2c2a9/"

RESULTS = "loopback.results"
"""Exchange and queue the endpoints publish results to."""
HEARTBEATS = "loopback.heartbeats"
"""Exchange and queue the endpoints publish status reports to."""
TASK_GROUP_PREFIX = "loopback.tg."
"""Prefix of the per-task-group result queues (``queue_prefix`` for the SDK)."""
TASK_GROUP_EXPIRES_MS = 15 * 60 * 1000


class ServiceError(RuntimeError):
    """The service could not start (port busy, lock not obtained, broker unreachable)."""


@dataclass
class TaskRecord:
    """What the service keeps per task it handed out."""

    task_group: str
    endpoint: str
    function: str
    submitted: float = field(default_factory=time.time)
    result: Result | None = None
    completed: float | None = None


@dataclass
class EndpointRecord:
    """A registered (manager) endpoint and the user endpoints the service assigned it."""

    name: str | None
    metadata: dict[str, Any]
    registrations: int = 0
    user_endpoints: dict[str, str] = field(default_factory=dict)  # config key -> uep id


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("HTTP client %s dropped its connection", client_address, exc_info=True)


class LoopbackService:
    """The stand-in; :meth:`start` it, point clients at :attr:`url`, :meth:`close` it.

    Args:
        amqp_url: The broker (``amqp://guest:guest@127.0.0.1:<port>/%2F``).
        host: Address to listen on (loopback only).
        port: Port to listen on; 5000 is what the SDK's ``local`` environment expects.
        lock_timeout: Seconds to wait for another test run to release port 5000.
    """

    def __init__(
        self,
        amqp_url: str,
        host: str = "127.0.0.1",
        port: int = PORT,
        lock_timeout: float = 600.0,
    ):
        self.amqp_url = amqp_url
        self.host = host
        self.port = port
        self.lock_timeout = lock_timeout
        self.calls: list[str] = []
        """``"METHOD /path"`` of every HTTP request, in order."""
        self.endpoints: dict[str, EndpointRecord] = {}
        self.functions: dict[str, str] = {}
        self.tasks: dict[str, TaskRecord] = {}
        self.heartbeats: dict[str, tuple[float, dict[str, Any]]] = {}
        """Endpoint id -> (arrival time, ``global_state``) of its last status report."""
        self.relayed: list[str] = []
        """Task ids whose results were relayed to their task group, in order."""
        self.start_commands: list[dict[str, Any]] = []
        self._queues: set[str] = set()
        self._lock = threading.RLock()
        self._amqp_lock = threading.Lock()
        self._pub: pika.BlockingConnection | None = None
        self._stop = threading.Event()
        self._relay_thread: threading.Thread | None = None
        self._relay_ready = threading.Event()
        self._relay_error: BaseException | None = None
        self._server: _Server | None = None
        self._http_thread: threading.Thread | None = None
        self._lock_file: Any = None
        self._result_event = threading.Condition(self._lock)
        self._fail_code: int | None = None
        self.failed_calls: list[str] = []
        """``"METHOD /path"`` of every request answered by :meth:`fail_with`'s error."""

    # -- fault injection ---------------------------------------------------------------------

    def fail_with(self, code: int = 503) -> None:
        """Answer ``code`` (e.g. 503) to every submit and endpoint-status request from now on.

        Only those routes fail: registration, functions, the result-stream address and task
        polling keep working, as when the service's task front end is overloaded.
        """
        if not 500 <= code <= 599:
            raise ValueError(f"fail_with takes a 5xx status, not {code}")
        self._fail_code = code

    def recover(self) -> None:
        """Undo :meth:`fail_with`: submit and status answer normally again."""
        self._fail_code = None

    def _injected_failure(self, method: str, path: str) -> tuple[int, dict[str, Any]] | None:
        code = self._fail_code
        if code is None:
            return None
        parts = path.strip("/").split("/")
        submit = method == "POST" and parts[:2] == ["v3", "endpoints"] and parts[3:] == ["submit"]
        status = parts[:2] == ["v2", "endpoints"] and parts[3:] == ["status"]
        if not (submit or status):
            return None
        with self._lock:
            self.failed_calls.append(f"{method} {path}")
        return code, {"code": "SERVICE_UNAVAILABLE", "error": f"loopback fault: HTTP {code}"}

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL of the Compute routes (auth routes are under ``/auth/``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def auth_url(self) -> str:
        """What ``GLOBUS_SDK_SERVICE_URL_AUTH`` should be."""
        return f"{self.url}/auth/"

    def __enter__(self) -> LoopbackService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> LoopbackService:
        """Take the port lock, declare the AMQP topology, start the relay and HTTP threads.

        Raises:
            ServiceError: the lock was not obtained in time, the port is busy, or the broker
                could not be reached.
        """
        try:
            self._take_port_lock()
            self._declare_topology()
            self._relay_thread = threading.Thread(
                target=self._relay, name="loopback-relay", daemon=True
            )
            self._relay_thread.start()
            if not self._relay_ready.wait(30):
                raise ServiceError(f"relay did not connect to the broker: {self._relay_error!r}")
            if self._relay_error is not None:
                raise ServiceError(f"relay failed: {self._relay_error!r}")
            try:
                self._server = _Server((self.host, self.port), self._handler_class())
            except OSError as exc:
                raise ServiceError(
                    f"cannot listen on {self.host}:{self.port} ({exc.strerror}); another "
                    "process holds it, and clients would silently talk to it"
                ) from exc
            self._http_thread = threading.Thread(
                target=self._server.serve_forever,
                args=(0.1,),
                name="loopback-http",
                daemon=True,
            )
            self._http_thread.start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop HTTP and the relay, delete the queues declared here, release the lock."""
        self._stop.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._http_thread is not None:
            self._http_thread.join(timeout=10)
        if self._relay_thread is not None:
            self._relay_thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._delete_queues()
        with self._amqp_lock:
            pub, self._pub = self._pub, None
        if pub is not None:
            with contextlib.suppress(Exception):
                pub.close()
        lock_file, self._lock_file = self._lock_file, None
        if lock_file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(lock_file, fcntl.LOCK_UN)
            lock_file.close()

    def _take_port_lock(self) -> None:
        self._lock_file = open(PORT_LOCK, "a+")  # noqa: SIM115 - held until close()
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"another test run holds {PORT_LOCK} (port {self.port}) after "
                        f"{self.lock_timeout:g} s"
                    ) from None
                time.sleep(0.5)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((self.host, self.port)) == 0:
                raise ServiceError(
                    f"port {self.port} on {self.host} is already in use by a process that is "
                    "not a loopback service of a test run; stop it"
                )

    # -- AMQP helpers ------------------------------------------------------------------------

    def _connect(self) -> pika.BlockingConnection:
        params = pika.URLParameters(self.amqp_url)
        params.heartbeat = 0
        params.socket_timeout = 10
        params.blocked_connection_timeout = 30
        return pika.BlockingConnection(params)

    def _amqp(self, work: Callable[[Any], Any]) -> Any:
        """Run ``work(channel)`` on the shared publishing connection (one caller at a time)."""
        with self._amqp_lock:
            for attempt in (1, 2):
                try:
                    if self._pub is None or self._pub.is_closed:
                        self._pub = self._connect()
                    channel = self._pub.channel()
                    try:
                        return work(channel)
                    finally:
                        if channel.is_open:
                            channel.close()
                except pika.exceptions.AMQPConnectionError:
                    self._pub = None
                    if attempt == 2:
                        raise
        return None

    def _declare_queue(self, channel: Any, name: str, **arguments: Any) -> None:
        channel.queue_declare(name, durable=True, arguments=arguments or None)
        with self._lock:
            self._queues.add(name)

    def _declare_topology(self) -> None:
        def declare(channel: Any) -> None:
            for name in (RESULTS, HEARTBEATS):
                channel.exchange_declare(name, exchange_type="direct", durable=True)
                self._declare_queue(channel, name)
                channel.queue_bind(name, name, routing_key=name)

        try:
            self._amqp(declare)
        except pika.exceptions.AMQPError as exc:
            raise ServiceError(f"cannot reach the broker at {self.amqp_url}: {exc!r}") from exc

    def _delete_queues(self) -> None:
        with self._lock:
            names = sorted(self._queues)

        def delete(channel: Any) -> None:
            for name in names:
                channel.queue_delete(name)
            for name in (RESULTS, HEARTBEATS):
                channel.exchange_delete(name)

        self._amqp(delete)
        with self._lock:
            self._queues.clear()

    def queue_depths(self) -> dict[str, int]:
        """Messages waiting in each queue the service declared (for leak checks)."""
        with self._lock:
            names = sorted(self._queues)

        def depths(channel: Any) -> dict[str, int]:
            out = {}
            for name in names:
                try:
                    ok = channel.queue_declare(name, passive=True)
                except pika.exceptions.ChannelClosedByBroker:
                    channel = self._pub.channel()  # type: ignore[union-attr]
                    continue
                out[name] = ok.method.message_count
            return out

        result: dict[str, int] = self._amqp(depths)
        return result

    def _publish_info(self, name: str) -> dict[str, Any]:
        return {
            "connection_url": self.amqp_url,
            "exchange": name,
            "queue": name,
            "queue_publish_kwargs": {
                "exchange": name,
                "routing_key": name,
                "mandatory": True,
                "properties": {"delivery_mode": 2},
            },
        }

    def _amqp_creds(self, endpoint_id: str) -> dict[str, Any]:
        """The credentials document a user endpoint is started with."""
        return {
            "endpoint_id": endpoint_id,
            "task_queue_info": {
                "connection_url": self.amqp_url,
                "queue": self.task_queue(endpoint_id),
            },
            "result_queue_info": self._publish_info(RESULTS),
            "heartbeat_queue_info": self._publish_info(HEARTBEATS),
        }

    @staticmethod
    def task_queue(endpoint_id: str) -> str:
        return f"loopback.tasks.{endpoint_id}"

    @staticmethod
    def command_queue(endpoint_id: str) -> str:
        return f"loopback.commands.{endpoint_id}"

    # -- the relay ---------------------------------------------------------------------------

    def _relay(self) -> None:
        """Consume results and heartbeats until :meth:`close`; reconnect if the link drops."""
        while not self._stop.is_set():
            try:
                connection = self._connect()
            except pika.exceptions.AMQPError as exc:
                self._relay_error = exc
                self._relay_ready.set()
                if self._stop.wait(1.0):
                    return
                continue
            try:
                channel = connection.channel()
                channel.basic_qos(prefetch_count=200)
                channel.basic_consume(RESULTS, self._on_result)
                channel.basic_consume(HEARTBEATS, self._on_heartbeat)
                self._relay_error = None
                self._relay_ready.set()
                while not self._stop.is_set():
                    connection.process_data_events(time_limit=0.2)
            except pika.exceptions.AMQPError as exc:
                log.warning("relay lost the broker (%r); reconnecting", exc)
                self._relay_error = exc
                self._stop.wait(0.5)
            finally:
                with contextlib.suppress(Exception):
                    connection.close()

    def _on_result(self, channel: Any, deliver: Any, props: Any, body: bytes) -> None:
        try:
            result = messagepack.unpack(body)
            task_id = str(result.task_id)
            with self._lock:
                record = self.tasks.get(task_id)
                if record is not None:
                    record.result = result
                    record.completed = time.time()
            if record is None:
                log.warning("result for unknown task %s dropped", task_id)
            else:
                channel.basic_publish(
                    "",
                    TASK_GROUP_PREFIX + record.task_group,
                    body,
                    pika.BasicProperties(
                        timestamp=int(time.time()),
                        content_type="application/octet-stream",
                        delivery_mode=2,
                    ),
                )
                with self._result_event:
                    self.relayed.append(task_id)
                    self._result_event.notify_all()
        except Exception:  # noqa: BLE001 - a bad message must not stop the relay
            log.exception("undecodable result message dropped")
        channel.basic_ack(deliver.delivery_tag)

    def _on_heartbeat(self, channel: Any, deliver: Any, props: Any, body: bytes) -> None:
        try:
            report = messagepack.unpack(body)
            if isinstance(report, EPStatusReport):
                with self._lock:
                    self.heartbeats[str(report.endpoint_id)] = (
                        time.time(),
                        dict(report.global_state),
                    )
                    self._result_event.notify_all()
        except Exception:  # noqa: BLE001
            log.exception("undecodable heartbeat dropped")
        channel.basic_ack(deliver.delivery_tag)

    # -- state queries -----------------------------------------------------------------------

    def status(self, endpoint_id: str) -> dict[str, Any]:
        """``online`` while heartbeats arrive (within three periods of the last one)."""
        with self._lock:
            last = self.heartbeats.get(endpoint_id)
        if last is None:
            return {"status": "offline", "details": None}
        arrived, state = last
        period = float(state.get("heartbeat_period") or 0)
        online = period > 0 and time.time() - arrived <= 3 * period + 5
        return {
            "status": "online" if online else "offline",
            "details": state,
            "last_heartbeat": arrived,
        }

    def wait_online(self, endpoint_id: str, timeout: float) -> bool:
        """Wait until ``endpoint_id`` heartbeats (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        with self._result_event:
            while self.status(endpoint_id)["status"] != "online":
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._result_event.wait(min(left, 0.5))
        return True

    def wait_offline(self, endpoint_id: str, timeout: float) -> bool:
        """Wait until ``endpoint_id``'s last heartbeat says it is shutting down."""
        deadline = time.monotonic() + timeout
        with self._result_event:
            while self.status(endpoint_id)["status"] == "online":
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._result_event.wait(min(left, 0.5))
        return True

    def task_ids(self, task_group: str | None = None) -> list[str]:
        """Task ids handed out (of one task group, or all)."""
        with self._lock:
            return [
                tid
                for tid, rec in self.tasks.items()
                if task_group is None or rec.task_group == task_group
            ]

    def user_endpoints(self, endpoint_id: str) -> list[str]:
        """Ids of the user endpoints assigned under a manager endpoint."""
        with self._lock:
            record = self.endpoints.get(endpoint_id)
            return list(record.user_endpoints.values()) if record else []

    # -- Compute API -------------------------------------------------------------------------

    def _register(self, endpoint_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
        endpoint_id = endpoint_id or str(uuid.uuid4())

        def declare(channel: Any) -> None:
            self._declare_queue(channel, self.command_queue(endpoint_id))

        self._amqp(declare)
        with self._lock:
            record = self.endpoints.get(endpoint_id)
            if record is None:
                record = self.endpoints[endpoint_id] = EndpointRecord(
                    name=body.get("endpoint_name"), metadata=dict(body.get("metadata") or {})
                )
            record.registrations += 1
        reply = {
            "endpoint_id": endpoint_id,
            "command_queue_info": {
                "connection_url": self.amqp_url,
                "queue": self.command_queue(endpoint_id),
            },
            "heartbeat_queue_info": self._publish_info(HEARTBEATS),
        }
        return reply

    def _start_command(
        self, manager_id: str, uep_id: str, user_opts: dict[str, Any], runtime: dict[str, Any]
    ) -> tuple[dict[str, Any], pika.BasicProperties]:
        message = {
            "command": "cmd_start_endpoint",
            "args": [],
            "kwargs": {
                "name": f"uep.{manager_id}.{uep_id}",
                "amqp_creds": self._amqp_creds(uep_id),
                "user_opts": user_opts,
                "user_runtime": runtime,
            },
            "globus_effective_identity": IDENTITY,
            "globus_identity_set": [{"sub": IDENTITY, "username": USERNAME}],
            "globus_username": USERNAME,
        }
        props = pika.BasicProperties(
            content_type="application/json", timestamp=int(time.time()), delivery_mode=2
        )
        return message, props

    def _submit(self, endpoint_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            return 404, {"code": "ENDPOINT_NOT_FOUND", "error": f"no endpoint {endpoint_id}"}
        task_group = body.get("task_group_id") or str(uuid.uuid4())
        user_opts = body.get("user_endpoint_config") or {}
        runtime = body.get("user_runtime") or {}
        key = json.dumps(user_opts, sort_keys=True)
        with self._lock:
            uep_id = endpoint.user_endpoints.get(key)
            if uep_id is None:
                uep_id = endpoint.user_endpoints[key] = str(uuid.uuid4())
        spec = body.get("resource_specification")
        serializers = body.get("result_serializers")
        messages: list[tuple[dict[str, Any], bytes]] = []
        reply_tasks: dict[str, list[str]] = {}
        new_records: dict[str, TaskRecord] = {}
        for function_id, payloads in (body.get("tasks") or {}).items():
            with self._lock:
                code = self.functions.get(function_id)
            if code is None:
                return 404, {"code": "FUNCTION_NOT_FOUND", "error": f"no function {function_id}"}
            for payload in payloads:
                task_id = str(uuid.uuid4())
                headers: dict[str, Any] = {"function_uuid": function_id, "task_uuid": task_id}
                if spec:
                    headers["resource_specification"] = json.dumps(spec)
                if serializers:
                    headers["result_serializers"] = serializers
                # The worker unpacks the function's buffer and the arguments' buffers from one
                # length-prefixed string: registration and submission each packed theirs.
                task = Task(task_id=uuid.UUID(task_id), task_buffer=code + payload)
                messages.append((headers, messagepack.pack(task)))
                reply_tasks.setdefault(function_id, []).append(task_id)
                new_records[task_id] = TaskRecord(task_group, endpoint_id, function_id)
        command, command_props = self._start_command(endpoint_id, uep_id, user_opts, runtime)
        with self._lock:
            self.tasks.update(new_records)
            self.start_commands.append(command)

        def publish(channel: Any) -> None:
            if body.get("create_queue", True):
                self._declare_queue(
                    channel,
                    TASK_GROUP_PREFIX + task_group,
                    **{"x-expires": TASK_GROUP_EXPIRES_MS},
                )
            self._declare_queue(channel, self.task_queue(uep_id))
            # The manager starts the user endpoint (or, when it runs, only refreshes it).
            channel.basic_publish(
                "", self.command_queue(endpoint_id), json.dumps(command), command_props
            )
            for headers, packed in messages:
                channel.basic_publish(
                    "",
                    self.task_queue(uep_id),
                    packed,
                    pika.BasicProperties(
                        headers=headers,
                        delivery_mode=2,
                        content_type="application/octet-stream",
                    ),
                )

        self._amqp(publish)
        return 200, {
            "request_id": str(uuid.uuid4()),
            "task_group_id": task_group,
            "endpoint_id": endpoint_id,
            "tasks": reply_tasks,
        }

    def _task_doc(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            record = self.tasks.get(task_id)
        if record is None:
            return {"task_id": task_id, "status": "unknown"}
        if record.result is None:
            return {"task_id": task_id, "status": "waiting-for-result"}
        doc: dict[str, Any] = {
            "task_id": task_id,
            "completion_t": str(record.completed),
            "details": record.result.details,
        }
        if record.result.is_error:
            doc.update(status="failed", exception=record.result.data)
        else:
            doc.update(status="success", result=record.result.data)
        return doc

    # -- HTTP --------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http %s", fmt % args)

            def do_GET(self) -> None:
                service._handle(self, "GET")

            def do_POST(self) -> None:
                service._handle(self, "POST")

            def do_PUT(self) -> None:
                service._handle(self, "PUT")

            def do_DELETE(self) -> None:
                service._handle(self, "DELETE")

        return Handler

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, code: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        path = urlsplit(h.path).path.rstrip("/")
        with self._lock:
            self.calls.append(f"{method} {path}")
        try:
            injected = self._injected_failure(method, path)
            if injected is not None:
                code, doc = injected
            else:
                code, doc = self._route(method, path, raw, h.headers.get("Content-Type", ""))
        except Exception as exc:  # noqa: BLE001 - answer 500 rather than hang the client
            log.exception("loopback service failed on %s %s", method, path)
            code, doc = 500, {"code": "LOOPBACK_ERROR", "error": repr(exc)}
        self._reply(h, code, doc)

    def _route(
        self, method: str, path: str, raw: bytes, content_type: str
    ) -> tuple[int, dict[str, Any]]:
        parts = path.strip("/").split("/")

        def body() -> dict[str, Any]:
            if not raw:
                return {}
            if "json" in content_type:
                return dict(json.loads(raw))
            return {k: v[0] for k, v in parse_qs(raw.decode()).items()}

        # Globus Auth ---------------------------------------------------------------------
        if method == "POST" and path == "/auth/v2/oauth2/token":
            return 200, self._token(body())
        if path == "/auth/v2/oauth2/userinfo":
            return 200, self._identity() | {"identity_set": [self._identity()]}
        if method == "POST" and path == "/auth/v2/oauth2/token/introspect":
            return 200, {
                "active": True,
                "scope": "",
                "client_id": IDENTITY,
                "exp": int(time.time()) + 86400,
                "identity_set": [IDENTITY],
            } | self._identity()
        # Compute -------------------------------------------------------------------------
        if path == "/v2/version":
            return 200, {
                "api": "loopback",
                "min_sdk_version": "1.0.0",
                "min_ep_version": "1.0.0",
            }
        if method == "POST" and path == "/v3/endpoints":
            return 200, self._register(None, body())
        if method == "PUT" and parts[:2] == ["v3", "endpoints"] and len(parts) == 3:
            return 200, self._register(parts[2], body())
        if method == "POST" and parts[:2] == ["v3", "endpoints"] and parts[3:] == ["submit"]:
            return self._submit(parts[2], body())
        if parts[:2] == ["v2", "endpoints"] and parts[3:] == ["status"]:
            with self._lock:
                known = parts[2] in self.endpoints or parts[2] in self.heartbeats
            if not known:
                return 404, {"code": "ENDPOINT_NOT_FOUND", "error": f"no endpoint {parts[2]}"}
            return 200, self.status(parts[2])
        if method == "GET" and parts[:2] == ["v2", "endpoints"] and len(parts) == 3:
            with self._lock:
                record = self.endpoints.get(parts[2])
            if record is None:
                return 404, {"code": "ENDPOINT_NOT_FOUND", "error": f"no endpoint {parts[2]}"}
            return 200, {"uuid": parts[2], "name": record.name, "metadata": record.metadata}
        if method == "POST" and path in ("/v3/functions", "/v2/functions"):
            doc = body()
            function_id = str(uuid.uuid4())
            with self._lock:
                self.functions[function_id] = str(doc["function_code"])
            return 200, {"function_uuid": function_id}
        if path == "/v2/get_amqp_result_connection_url":
            return 200, {"connection_url": self.amqp_url, "queue_prefix": TASK_GROUP_PREFIX}
        if method == "GET" and parts[:2] == ["v2", "tasks"] and len(parts) == 3:
            return 200, self._task_doc(parts[2])
        if method == "POST" and path == "/v2/batch_status":
            ids = body().get("task_ids") or []
            return 200, {"response": "batch", "results": {t: self._task_doc(t) for t in ids}}
        if method == "GET" and parts[:2] == ["v2", "taskgroup"] and len(parts) == 3:
            ids = self.task_ids(parts[2])
            return 200, {"taskgroup_id": parts[2], "tasks": [{"id": t} for t in ids]}
        return 404, {"code": "NOT_FOUND", "error": f"loopback service has no {method} {path}"}

    @staticmethod
    def _identity() -> dict[str, Any]:
        return {
            "sub": IDENTITY,
            "username": USERNAME,
            "preferred_username": USERNAME,
            "name": "Loopback Test",
            "email": USERNAME,
            "identity_provider": IDENTITY,
            "organization": "loopback",
        }

    @staticmethod
    def _token(form: dict[str, Any]) -> dict[str, Any]:
        """Client-credentials tokens: one per resource server, echoing the requested scopes."""
        by_server: dict[str, list[str]] = {}
        for scope in str(form.get("scope") or "").split():
            server = (
                COMPUTE_RESOURCE_SERVER
                if scope.startswith(COMPUTE_SCOPE_PREFIX)
                else "auth.globus.org"
            )
            by_server.setdefault(server, []).append(scope)
        if not by_server:
            by_server["auth.globus.org"] = []
        tokens = [
            {
                "access_token": f"loopback-{uuid.uuid4().hex}",
                "scope": " ".join(scopes),
                "resource_server": server,
                "expires_in": 172800,
                "token_type": "Bearer",
            }
            for server, scopes in by_server.items()
        ]
        return tokens[0] | {"other_tokens": tokens[1:]}
