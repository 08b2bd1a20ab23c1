"""GlobusSite against a local stand-in for the Globus services; no real network anywhere.

How the request capture works: the real SDK stack runs unmodified (``GlobusSite`` ->
``globus_compute_sdk.Executor`` -> ``Client`` -> globus-sdk clients -> ``requests``) and its
HTTP requests land on a tiny HTTP server on 127.0.0.1 that plays both Globus Auth and the
Globus Compute web service. globus-sdk's own ``GLOBUS_SDK_SERVICE_URL_AUTH`` points the auth
client there; ``GLOBUS_SDK_SERVICE_URL_COMPUTE`` (which the Compute SDK's ``Client`` ignores,
so ``GlobusSite`` applies it) points the Compute web clients there. With fake
``GLOBUS_COMPUTE_CLIENT_ID``/``SECRET`` the SDK runs its real client-credentials flow against
the stand-in, registers ``run_task`` and POSTs the batch exactly as it would to Globus.

What the stand-in does not play is the AMQP result stream (the SDK reads results over AMQP,
after asking the web service for a connection URL): it hands out a broker address where
nothing listens, so no result ever arrives through the SDK here. Decoding of results is
covered by feeding ``outcome`` done futures; a real round trip is the live test, which runs
only when ``ORCH_GLOBUS_ENDPOINT_ID`` names a real endpoint.
"""

from __future__ import annotations

import base64
import builtins
import json
import logging
import math
import os
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import globus_sdk
import pytest
from globus_compute_sdk.errors import TaskExecutionFailed
from globus_compute_sdk.sdk.auth.token_storage import get_token_storage
from globus_compute_sdk.serialize import ComputeSerializer
from globus_sdk.token_storage import TokenStorageData

from orchestrator.apps.runtime import run_task
from orchestrator.config.sites import SiteConfig
from orchestrator.exceptions import ConfigError, SiteUnavailableError
from orchestrator.resources import Resources
from orchestrator.sites import globus as globus_site
from orchestrator.sites.base import Site
from orchestrator.sites.globus import GlobusSite, scrub

ENDPOINT_ID = uuid.UUID("2f1e3c4d-5b6a-4789-8abc-def012345678")
FUNCTION_ID = "0d7e7d6c-1111-4222-8333-944455556666"
COMPUTE_SCOPE = "https://auth.globus.org/scopes/facd7ccc-c5f4-42aa-916b-a0e270e2c2a9/all"
USER_ENDPOINT_CONFIG = {"account": "chem-proj", "walltime": "00:30:00", "nodes": 2}
RESOURCE_SPEC = {"num_nodes": 1, "ranks_per_node": 4}


def scale(x: float, factor: float = 1.0) -> float:
    """A task function importable by reference (as the worker would import it)."""
    return x * factor


# -- a stand-in for the Globus services --------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeGlobus:
    """Globus Auth + Globus Compute web service on 127.0.0.1, recording every request.

    ``submit_mode``: ``ok`` answers batch submissions; ``hang`` holds them without an answer
    (until ``release``); ``hold`` answers them only after ``release``; ``404`` answers
    "endpoint not found". ``auth_mode``: ``ok`` issues a
    token, ``reject`` answers 401 invalid_client. ``results_mode``: ``hang`` holds the request
    for the result stream's address (until ``release``).
    """

    submit_mode: str = "ok"
    auth_mode: str = "ok"
    results_mode: str = "ok"
    endpoint_status: str = "online"
    access_token: str = field(default_factory=lambda: f"fake-access-{uuid.uuid4().hex}")
    requests: list[Recorded] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    submit_seen: threading.Event = field(default_factory=threading.Event)
    results_url_requested: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and hung up is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def paths(self) -> list[str]:
        with self._lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    def find(self, method: str, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()

    # -- request handling

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(h.path).path
        with self._lock:
            self.requests.append(Recorded(method, path, dict(h.headers.items()), body))
        if method == "POST" and path == "/v2/oauth2/token":
            if self.auth_mode == "reject":
                return self._reply(h, 401, {"error": "invalid_client"})
            return self._reply(
                h,
                200,
                {
                    "access_token": self.access_token,
                    "expires_in": 3600,
                    "resource_server": "funcx_service",
                    "scope": f"{COMPUTE_SCOPE} openid",
                    "token_type": "Bearer",
                    "other_tokens": [],
                },
            )
        if method == "POST" and path == "/v3/functions":
            return self._reply(h, 200, {"function_uuid": FUNCTION_ID})
        if method == "POST" and path.startswith("/v3/endpoints/") and path.endswith("/submit"):
            self.submit_seen.set()
            if self.submit_mode in ("hang", "hold"):
                self.released.wait(120)
            if self.submit_mode == "hang":
                h.close_connection = True  # drop it without an answer
                return None
            endpoint_id = path.split("/")[3]
            if self.submit_mode == "404":
                return self._reply(
                    h, 404, {"code": "ENDPOINT_NOT_FOUND", "error": f"no endpoint {endpoint_id}"}
                )
            batch = json.loads(body)
            tasks = {}
            for function_id, payloads in batch["tasks"].items():
                ids = [str(uuid.uuid4()) for _ in payloads]
                with self._lock:
                    self.task_ids.extend(ids)
                tasks[function_id] = ids
            return self._reply(
                h,
                200,
                {
                    "request_id": str(uuid.uuid4()),
                    # like the service: the batch's task group, or a new one
                    "task_group_id": batch.get("task_group_id") or str(uuid.uuid4()),
                    "endpoint_id": endpoint_id,
                    "tasks": tasks,
                },
            )
        if method == "GET" and path.startswith("/v2/endpoints/") and path.endswith("/status"):
            return self._reply(h, 200, {"status": self.endpoint_status, "logs": []})
        if method == "GET" and path == "/v2/get_amqp_result_connection_url":
            # The result stream is AMQP, which this stand-in does not speak: it hands out a
            # broker address where nothing listens, so no result ever arrives (the SDK's
            # result watcher retries quietly until the site shuts it down).
            self.results_url_requested.set()
            if self.results_mode == "hang":
                self.released.wait(120)
            return self._reply(
                h,
                200,
                {"connection_url": f"amqp://u:p@{closed_port_url()[7:]}/", "queue_prefix": "q."},
            )
        return self._reply(h, 404, {"code": "NOT_FOUND"})

    @staticmethod
    def _reply(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


class BlackHole:
    """A port that accepts TCP connections and never answers (a black-holed service)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self.accepted)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted.append(conn)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(timeout=10)
        with self._lock:
            for conn in self.accepted:
                conn.close()


def closed_port_url() -> str:
    """A local URL on which nothing listens (connection refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- fixtures -------------------------------------------------------------------------------


@dataclass
class Creds:
    client_id: str
    client_secret: str

    def assert_absent(self, *texts: str | None) -> None:
        """Neither the client id nor the secret appears in orch's messages."""
        for text in texts:
            assert text is not None
            assert self.client_secret not in text
            assert self.client_id not in text

    def assert_secret_absent(self, logs: str) -> None:
        """The secret appears in no log record (globus-sdk itself logs the client id)."""
        assert self.client_secret not in logs


@pytest.fixture(scope="module", autouse=True)
def no_lingering_sdk_threads() -> Iterator[None]:
    """After every site is shut down, no SDK thread may keep the process from exiting.

    The SDK's result watcher is a non-daemon thread; one left waiting for results would hold
    the interpreter open at exit (the SDK's exit hook waits for it too).
    """
    before = set(threading.enumerate())
    yield
    lingering = [t for t in threading.enumerate() if t not in before and not t.daemon]
    for thread in lingering:
        thread.join(timeout=60)
    alive = [t.name for t in lingering if t.is_alive()]
    assert not alive, f"threads still alive after shutdown: {alive}"


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Creds:
    """Fake client credentials and a private SDK state directory; no stray Globus settings."""
    for var in (
        "GLOBUS_SDK_ENVIRONMENT",
        "GLOBUS_SDK_HTTP_TIMEOUT",
        "GLOBUS_SDK_SERVICE_URL_AUTH",
        "GLOBUS_SDK_SERVICE_URL_COMPUTE",
        "GLOBUS_COMPUTE_CLIENT_ID",
        "GLOBUS_COMPUTE_CLIENT_SECRET",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path / "globus_compute"))
    found = Creds(client_id=str(uuid.uuid4()), client_secret=f"orch-secret-{uuid.uuid4().hex}")
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_ID", found.client_id)
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", found.client_secret)
    return found


def point_at(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", url + "/")
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_COMPUTE", url)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, creds: Creds) -> Iterator[FakeGlobus]:
    service = FakeGlobus()
    point_at(monkeypatch, service.url)
    yield service
    service.close()


@pytest.fixture
def black_hole(monkeypatch: pytest.MonkeyPatch, creds: Creds) -> Iterator[BlackHole]:
    hole = BlackHole()
    point_at(monkeypatch, hole.url)
    yield hole
    hole.close()


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[Any]:
    made: list[GlobusSite] = []

    def make(name: str = "polaris", **overrides: Any) -> GlobusSite:
        settings: dict[str, Any] = {
            "name": name,
            "kind": "cpu",
            "backend": "globus",
            "capacity": 4,
            "endpoint_id": ENDPOINT_ID,
            "user_endpoint_config": USER_ENDPOINT_CONFIG,
            "resource_specification": RESOURCE_SPEC,
            "http_timeout": 1.0,
        }
        settings.update(overrides)
        site = GlobusSite(SiteConfig(**settings), tmp_path / "run")
        made.append(site)
        return site

    yield make
    for site in made:
        site.shutdown()


class DownListener:
    def __init__(self, site: Site) -> None:
        self.calls: list[tuple[Site, str]] = []
        site.on_down(lambda s, reason: self.calls.append((s, reason)))


def decode_buffers(packed: str) -> list[Any]:
    serializer = ComputeSerializer()
    return [serializer.deserialize(buf) for buf in serializer.unpack_buffers(packed)]


# -- the request the SDK sends ----------------------------------------------------------


def test_start_contacts_no_network(make_site: Any, fake: FakeGlobus) -> None:
    site = make_site()
    site.start()
    assert fake.paths() == []
    assert not site.is_down


def test_start_requires_an_endpoint_id(tmp_path: Path, creds: Creds) -> None:
    # SiteConfig validation already refuses this; the site checks again for configs built
    # without validation.
    config = SiteConfig.model_construct(
        name="polaris", kind="cpu", backend="globus", capacity=1, endpoint_id=None
    )
    site = GlobusSite(config, tmp_path)
    with pytest.raises(ConfigError, match="endpoint_id"):
        site.start()
    with pytest.raises(SiteUnavailableError, match="endpoint_id"):
        site.submit(scale, (1.0,), {})
    site.shutdown()


@pytest.mark.timeout(60)
def test_submission_reaches_the_service_as_the_sdk_sends_it(
    make_site: Any, fake: FakeGlobus, creds: Creds
) -> None:
    site = make_site(commands={"lammps": "mpiexec -n 4 lmp"})
    site.start()
    future = site.submit(scale, (3.0,), {"factor": 2.0})
    assert fake.results_url_requested.wait(30), fake.paths()

    assert fake.paths() == [
        "POST /v2/oauth2/token",
        "POST /v3/functions",
        f"POST /v3/endpoints/{ENDPOINT_ID}/submit",
        "GET /v2/get_amqp_result_connection_url",
    ]

    # Credentials went through Globus's own client-credentials flow.
    (token_request,) = fake.find("POST", "/v2/oauth2/token")
    scheme, encoded = token_request.headers["Authorization"].split()
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == f"{creds.client_id}:{creds.client_secret}"
    form = urllib.parse.parse_qs(token_request.body.decode())
    assert form["grant_type"] == ["client_credentials"]
    assert COMPUTE_SCOPE in form["scope"][0].split()

    # Compute calls carry the token the auth service issued.
    for request in fake.requests[1:]:
        assert request.headers["Authorization"] == f"Bearer {fake.access_token}"

    # The registered function is run_task, by reference.
    (registration,) = fake.find("POST", "/v3/functions")
    function = registration.json()
    assert function["function_name"] == "run_task"
    (registered,) = decode_buffers(function["function_code"])
    assert registered is run_task

    # One batch, to this endpoint, with the site's endpoint config and resources.
    (batch_request,) = fake.find("POST", f"/v3/endpoints/{ENDPOINT_ID}/submit")
    batch = batch_request.json()
    assert batch["user_endpoint_config"] == USER_ENDPOINT_CONFIG
    assert batch["resource_specification"] == RESOURCE_SPEC
    assert batch["create_queue"] is True
    assert "task_group_id" not in batch  # the service makes a task group for this site
    assert list(batch["tasks"]) == [FUNCTION_ID]
    (payload,) = batch["tasks"][FUNCTION_ID]
    call_args, call_kwargs = decode_buffers(payload)
    assert call_kwargs == {}
    fn, args, kwargs, context = call_args
    assert fn is scale
    assert (args, kwargs) == ((3.0,), {"factor": 2.0})
    # The site's launch commands travel with the task, for simulation wrappers to read, and
    # so do the task's resources (one rank when it asks nothing).
    assert context == {
        "commands": {"lammps": ["mpiexec", "-n", "4", "lmp"]},
        "resources": Resources().worker_view(),
    }
    # What the worker will do with it.
    record = run_task(*call_args)
    assert record["ok"] is True and record["value"] == 6.0

    assert future.task_id == fake.task_ids[0]
    assert not future.done()

    # Shutting down cancels the task waiting for its result; the site is not "down".
    site.shutdown()
    assert future.cancelled()
    outcome = site.outcome(future)
    assert outcome.ok is False
    assert outcome.failure is not None
    assert outcome.failure["where"] == "site"
    assert outcome.failure["exception_type"] == "CancelledError"
    assert outcome.input_size is not None and outcome.input_size > 0
    assert not site.is_down


@pytest.mark.timeout(60)
def test_each_site_gets_its_own_task_group(make_site: Any, fake: FakeGlobus) -> None:
    # The SDK makes every new Executor reuse the last task group any Executor saw; two sites
    # sharing one would share a result stream (and cancel each other's tasks on shutdown).
    first = make_site("polaris")
    first.submit(scale, (1.0,), {})
    assert fake.results_url_requested.wait(30)
    fake.results_url_requested.clear()
    second = make_site("aurora", endpoint_id=uuid.uuid4())
    second.submit(scale, (2.0,), {})
    assert fake.results_url_requested.wait(30)
    batches = [r.json() for r in fake.requests if r.path.endswith("/submit")]
    assert len(batches) == 2
    assert all("task_group_id" not in b for b in batches)


# -- unreachable service ----------------------------------------------------------------


def tasks_sent(fake: FakeGlobus, count: int, timeout: float = 30.0) -> list[tuple[Any, ...]]:
    """The first ``count`` tasks the SDK POSTed to the endpoint (waits for them).

    Each as ``(batch, fn, args, kwargs, context)``: the batch's JSON (which carries the
    task's ``resource_specification``) and the call as the worker gets it.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = [
            (batch, *decode_buffers(payload)[0])
            for request in fake.find("POST", f"/v3/endpoints/{ENDPOINT_ID}/submit")
            for batch in (request.json(),)
            for payload in batch["tasks"][FUNCTION_ID]
        ]
        if len(found) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(found) >= count, fake.paths()
    return found[:count]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("options", ["--cpu-bind depth", ""])
def test_an_mpi_task_is_sent_with_its_own_resource_specification(
    make_site: Any, fake: FakeGlobus, options: str
) -> None:
    site = make_site(mpi={"launcher": "mpiexec", "options": options})
    wide, narrow = Resources(nodes=2, ranks_per_node=4), Resources(ranks=3, threads_per_rank=2)
    # Back to back: the SDK queues both before its submitter thread sends anything, and
    # sends tasks with different specifications in batches of their own.
    site.submit(scale, (1.0,), {}, resources=wide)
    site.submit(scale, (2.0,), {}, resources=narrow)
    sent = tasks_sent(fake, 2)
    launcher_options = {"launcher_options": options} if options else {}
    expected = {
        1.0: ({"num_nodes": 2, "ranks_per_node": 4, "num_ranks": 8} | launcher_options, wide),
        2.0: ({"num_nodes": 1, "ranks_per_node": 3, "num_ranks": 3} | launcher_options, narrow),
    }
    assert sorted(args[0] for _, _, args, _, _ in sent) == [1.0, 2.0]
    for batch, fn, args, _kwargs, context in sent:
        spec, resources = expected[args[0]]
        # The site's static {num_nodes: 1, ranks_per_node: 4} is overridden by the task's.
        assert batch["resource_specification"] == spec
        assert batch["user_endpoint_config"] == USER_ENDPOINT_CONFIG
        assert len(batch["tasks"][FUNCTION_ID]) == 1
        assert fn is scale
        assert context["resources"] == resources.worker_view()
        assert context["mpi"] == {"launcher": "mpiexec", "options": options, "nodes": []}
    # A task that asks nothing still sends one (Parsl's MPI mode refuses an empty one).
    site.submit(scale, (3.0,), {})
    batch, *_ = tasks_sent(fake, 3)[2]
    assert batch["resource_specification"] == {
        "num_nodes": 1, "ranks_per_node": 1, "num_ranks": 1,
    } | launcher_options  # fmt: skip
    assert fake.results_url_requested.wait(30)  # the result stream is up: quiet teardown
    site.shutdown()


@pytest.mark.timeout(60)
def test_a_site_without_mpi_sends_its_static_resource_specification(
    make_site: Any, fake: FakeGlobus
) -> None:
    site = make_site()
    site.submit(scale, (1.0,), {}, resources=Resources(ranks_per_node=2, threads_per_rank=2))
    site.submit(scale, (2.0,), {})
    sent = tasks_sent(fake, 2)
    assert all(batch["resource_specification"] == RESOURCE_SPEC for batch, *_ in sent)
    assert sorted((args[0], context["resources"]["ranks"]) for _, _, args, _, context in sent) == [
        (1.0, 2),
        (2.0, 1),
    ]
    assert all("mpi" not in context for *_, context in sent)
    assert fake.results_url_requested.wait(30)
    site.shutdown()


@pytest.mark.timeout(30)
def test_refused_connection_marks_the_site_down(
    make_site: Any, monkeypatch: pytest.MonkeyPatch, creds: Creds, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    point_at(monkeypatch, closed_port_url())
    site = make_site()
    listener = DownListener(site)
    site.start()

    with pytest.raises(SiteUnavailableError) as first:
        site.submit(scale, (1.0,), {})

    reason = site.down_reason
    assert reason is not None and site.is_down
    assert str(first.value) == reason
    assert reason.startswith("site 'polaris': Globus Compute service unreachable (")
    assert "GlobusConnectionError" in reason
    assert "Connection refused" in reason
    assert "globus-compute-endpoint login" in reason
    assert "\n" not in reason
    assert listener.calls == [(site, reason)]

    with pytest.raises(SiteUnavailableError) as later:
        site.submit(scale, (2.0,), {})
    assert str(later.value) == reason
    assert len(listener.calls) == 1
    creds.assert_absent(reason)
    creds.assert_secret_absent(caplog.text)


@pytest.mark.timeout(30)
def test_black_holed_service_gives_up_within_the_configured_timeout(
    make_site: Any, black_hole: BlackHole, monkeypatch: pytest.MonkeyPatch, creds: Creds
) -> None:
    # The process-wide setting says 10 minutes; the site's http_timeout (1 s) must win, and
    # the SDK's retries (5 by default) must be bounded: pytest-timeout fails this otherwise.
    monkeypatch.setenv("GLOBUS_SDK_HTTP_TIMEOUT", "600")
    site = make_site(http_timeout=1.0)

    with pytest.raises(SiteUnavailableError) as raised:
        site.submit(scale, (1.0,), {})

    reason = str(raised.value)
    assert reason == site.down_reason
    assert reason.startswith("site 'polaris': Globus Compute service unreachable (")
    assert "GlobusTimeoutError" in reason and "timed out" in reason
    assert f"127.0.0.1:{black_hole.port}" in reason
    assert black_hole.connections == 1 + globus_site.MAX_HTTP_RETRIES

    with pytest.raises(SiteUnavailableError):
        site.submit(scale, (2.0,), {})
    assert black_hole.connections == 1 + globus_site.MAX_HTTP_RETRIES  # no new attempt
    creds.assert_absent(reason)


@pytest.mark.timeout(60)
def test_failed_batch_submission_fails_the_future_and_marks_the_site_down(
    make_site: Any, fake: FakeGlobus, creds: Creds
) -> None:
    fake.submit_mode = "hang"
    site = make_site(http_timeout=1.0)
    listener = DownListener(site)

    future = site.submit(scale, (1.0,), {"factor": 3.0})
    done, _ = wait([future], timeout=45)
    assert future in done

    outcome = site.outcome(future)
    assert outcome.ok is False
    assert outcome.failure is not None
    assert outcome.failure["where"] == "site"
    assert outcome.failure["exception_type"] == "GlobusTimeoutError"
    reason = outcome.failure["message"]
    assert reason == site.down_reason
    assert reason.startswith("site 'polaris': Globus Compute service unreachable (")
    assert "timed out" in reason
    assert listener.calls == [(site, reason)]
    assert len(fake.find("POST", f"/v3/endpoints/{ENDPOINT_ID}/submit")) == (
        1 + globus_site.MAX_HTTP_RETRIES
    )

    with pytest.raises(SiteUnavailableError, match="unreachable"):
        site.submit(scale, (2.0,), {})
    creds.assert_absent(reason, outcome.failure["traceback"])


@pytest.mark.timeout(60)
def test_rejected_submission_names_the_endpoint(make_site: Any, fake: FakeGlobus) -> None:
    fake.submit_mode = "404"
    site = make_site()
    future = site.submit(scale, (1.0,), {})
    done, _ = wait([future], timeout=45)
    assert future in done
    outcome = site.outcome(future)
    assert outcome.failure is not None and outcome.failure["where"] == "site"
    reason = outcome.failure["message"]
    assert reason == site.down_reason
    assert "refused the request" in reason
    assert "HTTP 404" in reason and "ENDPOINT_NOT_FOUND" in reason
    assert str(ENDPOINT_ID) in reason


# -- credentials ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_rejected_client_credentials(
    make_site: Any, fake: FakeGlobus, creds: Creds, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.auth_mode = "reject"
    site = make_site()
    with pytest.raises(SiteUnavailableError) as raised:
        site.submit(scale, (1.0,), {})
    reason = str(raised.value)
    assert reason.startswith("site 'polaris': Globus authentication failed (")
    assert "HTTP 401" in reason
    assert "GLOBUS_COMPUTE_CLIENT_ID/GLOBUS_COMPUTE_CLIENT_SECRET" in reason
    assert fake.paths() == ["POST /v2/oauth2/token"]
    creds.assert_absent(reason)
    creds.assert_secret_absent(caplog.text)


@pytest.mark.timeout(30)
def test_no_credentials_fails_fast_without_prompting(
    make_site: Any, fake: FakeGlobus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_ID")
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_SECRET")
    prompts: list[str] = []

    def no_input(prompt: str = "") -> str:
        prompts.append(prompt)
        raise AssertionError("GlobusSite must never prompt for a login")

    monkeypatch.setattr(builtins, "input", no_input)
    site = make_site()
    with pytest.raises(SiteUnavailableError) as raised:
        site.submit(scale, (1.0,), {})
    reason = str(raised.value)
    assert reason.startswith("site 'polaris': Globus authentication failed (")
    assert "LoginRequiredError" in reason
    assert "globus-compute-endpoint login" in reason
    assert prompts == []
    assert fake.paths() == []  # nothing was sent without credentials


@pytest.mark.timeout(30)
def test_stored_login_is_used(
    make_site: Any, fake: FakeGlobus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tokens as `globus-compute-endpoint login` leaves them in the SDK's storage (user
    # namespace, the SDK's own client id): the site uses them and never prompts.
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_ID")
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_SECRET")
    monkeypatch.setattr(builtins, "input", None)  # any prompt would fail loudly
    identity = str(uuid.uuid4())
    expires = int(time.time()) + 3600
    storage = get_token_storage()
    storage.store_token_data_by_resource_server(
        {
            "funcx_service": TokenStorageData(
                "funcx_service",
                identity,
                COMPUTE_SCOPE,
                "stored-access",
                "stored-refresh",
                expires,
                "Bearer",
            ),
            "auth.globus.org": TokenStorageData(
                "auth.globus.org",
                identity,
                "openid",
                "stored-auth",
                "stored-refresh-2",
                expires,
                "Bearer",
            ),
        }
    )
    storage.close()

    site = make_site()
    future = site.submit(scale, (1.0,), {})
    assert fake.results_url_requested.wait(20)
    assert fake.paths()[0] == "POST /v3/functions"  # no token request: the stored one is used
    assert {r.headers["Authorization"] for r in fake.requests} == {"Bearer stored-access"}
    assert future.task_id == fake.task_ids[0]


@pytest.mark.timeout(30)
def test_secret_without_client_id_is_refused(
    make_site: Any, fake: FakeGlobus, creds: Creds, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GLOBUS_COMPUTE_CLIENT_ID")
    site = make_site()
    with pytest.raises(SiteUnavailableError, match="GLOBUS_COMPUTE_CLIENT_ID is not") as raised:
        site.submit(scale, (1.0,), {})
    assert creds.client_secret not in str(raised.value)
    assert fake.paths() == []


def test_scrub_removes_secrets(creds: Creds) -> None:
    text = (
        f"client {creds.client_id} secret {creds.client_secret} "
        "Authorization: Bearer abc.def-ghi amqp://user:pa55@amqp.example:5671/vhost "
        '{"access_token": "tok123", "refresh_token":"r456"}'
    )
    cleaned = scrub(text)
    creds.assert_absent(cleaned)
    for secret in ("abc.def-ghi", "pa55", "tok123", "r456"):
        assert secret not in cleaned
    assert "amqp.example:5671" in cleaned


# -- revive and shutdown ----------------------------------------------------------------


@pytest.mark.timeout(60)
def test_revive_builds_a_new_executor(
    make_site: Any, monkeypatch: pytest.MonkeyPatch, creds: Creds
) -> None:
    point_at(monkeypatch, closed_port_url())
    site = make_site()
    listener = DownListener(site)
    with pytest.raises(SiteUnavailableError):
        site.submit(scale, (1.0,), {})
    assert site.is_down

    service = FakeGlobus()
    try:
        point_at(monkeypatch, service.url)
        with pytest.raises(SiteUnavailableError):  # still down until revived
            site.submit(scale, (1.0,), {})
        assert service.paths() == []

        site.revive()
        assert not site.is_down and site.down_reason is None
        future = site.submit(scale, (5.0,), {})
        assert service.results_url_requested.wait(30)
        assert future.task_id == service.task_ids[0]
        assert len(listener.calls) == 1
        site.shutdown()
    finally:
        service.close()


@pytest.mark.timeout(60)
def test_try_revive_asks_the_endpoint_status(
    make_site: Any, monkeypatch: pytest.MonkeyPatch, creds: Creds
) -> None:
    point_at(monkeypatch, closed_port_url())
    site = make_site()
    with pytest.raises(SiteUnavailableError):
        site.submit(scale, (1.0,), {})
    assert site.is_down
    assert site.try_revive() is False and site.is_down  # still unreachable

    service = FakeGlobus()
    try:
        point_at(monkeypatch, service.url)
        service.endpoint_status = "offline"
        assert site.try_revive() is False and site.is_down
        assert f"GET /v2/endpoints/{ENDPOINT_ID}/status" in service.paths()
        service.endpoint_status = "online"
        assert site.try_revive() is True and not site.is_down
        site.submit(scale, (5.0,), {})
        assert service.results_url_requested.wait(30)
        site.shutdown()
        assert site.try_revive() is False  # never after shutdown
    finally:
        service.close()


@pytest.mark.timeout(30)
def test_revive_after_shutdown_does_nothing(make_site: Any, fake: FakeGlobus) -> None:
    site = make_site()
    site.shutdown()
    site.revive()
    with pytest.raises(SiteUnavailableError, match="shut down"):
        site.submit(scale, (1.0,), {})
    assert fake.paths() == []


@pytest.mark.timeout(30)
def test_shutdown_is_idempotent_and_does_not_wait_for_the_service(
    make_site: Any, fake: FakeGlobus
) -> None:
    # A batch is on the wire to a service that does not answer, with a 10-minute timeout:
    # shutdown must return at once anyway (pytest-timeout fails the test otherwise).
    fake.submit_mode = "hang"
    site = make_site(http_timeout=600.0)
    listener = DownListener(site)
    future = site.submit(scale, (1.0,), {})
    assert fake.submit_seen.wait(20)

    site.shutdown()
    site.shutdown()
    with pytest.raises(SiteUnavailableError, match="shut down"):
        site.submit(scale, (2.0,), {})

    # The service drops the held batch; the failure reaches the future but does not mark a
    # site that was shut down as down.
    fake.release()
    done, _ = wait([future], timeout=20)
    assert future in done
    outcome = site.outcome(future)
    assert outcome.ok is False
    assert outcome.failure is not None and outcome.failure["where"] == "site"
    assert not site.is_down
    assert listener.calls == []


@pytest.mark.timeout(30)
def test_shutdown_does_not_wait_for_a_stalled_result_stream(
    make_site: Any, fake: FakeGlobus
) -> None:
    # The task was sent; the SDK's result watcher is stuck fetching its AMQP address (with a
    # 10-minute timeout) while holding a lock the SDK's own shutdown needs. The site's
    # shutdown must still return at once, and the waiting task must end cancelled at once.
    fake.results_mode = "hang"
    site = make_site(http_timeout=600.0)
    future = site.submit(scale, (1.0,), {})
    assert fake.results_url_requested.wait(20)
    assert future.task_id == fake.task_ids[0]

    site.shutdown()
    assert future.cancelled()
    outcome = site.outcome(future)
    assert outcome.failure is not None
    assert outcome.failure["exception_type"] == "CancelledError"
    assert not site.is_down


@pytest.mark.timeout(90)
def test_a_batch_accepted_after_shutdown_ends_cancelled(make_site: Any, fake: FakeGlobus) -> None:
    # Shutdown happens while the batch is on the wire; the service then accepts it. The SDK
    # starts a result watcher for it after its own shutdown: the site must stop that one too,
    # or the task would wait for a result no one collects.
    fake.submit_mode = "hold"
    site = make_site(http_timeout=30.0)
    future = site.submit(scale, (1.0,), {})
    assert fake.submit_seen.wait(20)
    site.shutdown()
    fake.release()
    done, _ = wait([future], timeout=80)
    assert future in done
    assert future.task_id == fake.task_ids[0]  # the service did accept it
    assert future.cancelled()


@pytest.mark.timeout(30)
def test_a_caller_cancelling_a_task_does_not_mark_the_site_down(
    make_site: Any, fake: FakeGlobus
) -> None:
    site = make_site()
    future = site.submit(scale, (1.0,), {})
    assert fake.results_url_requested.wait(20)
    assert future.cancel()
    outcome = site.outcome(future)
    assert outcome.failure is not None
    assert outcome.failure["exception_type"] == "CancelledError"
    assert not site.is_down
    again = site.submit(scale, (2.0,), {})
    assert not again.done()


def test_shutdown_before_any_submit(make_site: Any, fake: FakeGlobus) -> None:
    site = make_site()
    site.shutdown()
    site.shutdown()
    assert fake.paths() == []


# -- inputs that cannot be sent ---------------------------------------------------------


@pytest.mark.timeout(60)
def test_unserializable_input_fails_only_that_task(make_site: Any, fake: FakeGlobus) -> None:
    # Sent to the SDK, this would kill its submitter thread and leave the future pending
    # for ever; the site rejects it up front and stays usable.
    site = make_site()
    bad = site.submit(scale, ((i for i in range(3)),), {})
    assert bad.done()
    outcome = site.outcome(bad)
    assert outcome.failure is not None
    assert outcome.failure["where"] == "site"
    assert outcome.failure["exception_type"] == "SerializationError"
    assert "generator" in outcome.failure["message"]
    assert not site.is_down
    assert fake.paths() == []

    good = site.submit(scale, (1.0,), {})
    assert fake.results_url_requested.wait(30)
    assert good.task_id == fake.task_ids[0]


def test_oversized_input_fails_only_that_task(
    make_site: Any, fake: FakeGlobus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(globus_site, "MAX_TASK_PAYLOAD", 1000)
    site = make_site()
    future = site.submit(scale, (b"x" * 2000,), {})
    outcome = site.outcome(future)
    assert outcome.failure is not None
    assert outcome.failure["exception_type"] == "PayloadTooLarge"
    assert "by proxy" in outcome.failure["message"]
    assert outcome.input_size is not None and outcome.input_size > 2000
    assert not site.is_down
    assert fake.paths() == []


# -- decoding results -------------------------------------------------------------------


def done_with(value: Any = None, exc: BaseException | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)
    return future


def test_outcome_of_a_successful_task(make_site: Any, creds: Creds) -> None:
    site = make_site()
    outcome = site.outcome(done_with(run_task(scale, (2.0,), {"factor": 3.0})))
    assert outcome.ok is True
    assert outcome.value == 6.0
    assert outcome.failure is None
    assert outcome.host and outcome.pid
    assert outcome.started is not None and outcome.finished is not None


def test_outcome_of_a_task_that_raised(make_site: Any, creds: Creds) -> None:
    site = make_site()
    outcome = site.outcome(done_with(run_task(math.sqrt, (-1.0,), {})))
    assert outcome.ok is False
    assert outcome.failure is not None
    assert outcome.failure["where"] == "task"
    assert outcome.failure["exception_type"] == "builtins.ValueError"
    assert not site.is_down


def test_outcome_of_an_endpoint_failure(make_site: Any, creds: Creds) -> None:
    site = make_site()
    remote = (
        "Traceback (most recent call last):\n  ...\n"
        "parsl.executors.high_throughput.errors.WorkerLost: Task failure due to loss of "
        "worker 3 on host nid00042"
    )
    outcome = site.outcome(done_with(exc=TaskExecutionFailed(remote, "1700000000.0")))
    assert outcome.ok is False
    assert outcome.failure is not None
    assert outcome.failure["where"] == "site"
    assert outcome.failure["exception_type"] == "parsl.executors.high_throughput.errors.WorkerLost"
    assert "nid00042" in outcome.failure["message"]
    assert "WorkerLost" in outcome.failure["traceback"]
    assert not site.is_down  # the endpoint answered: one task failed, the site is fine


def test_outcome_of_an_unexpected_value(make_site: Any, creds: Creds) -> None:
    site = make_site()
    outcome = site.outcome(done_with(42))
    assert outcome.ok is False
    assert outcome.failure is not None
    assert outcome.failure["where"] == "site"
    assert "run_task" in outcome.failure["message"]


def test_outcome_of_a_foreign_transport_failure_does_not_mark_down(
    make_site: Any, creds: Creds
) -> None:
    # A failure on a future this site did not hand out (or from a dropped executor) is
    # reported but says nothing about the site's current executor.
    site = make_site()
    error = globus_sdk.GlobusConnectionError("ConnectionError on request", OSError("boom"))
    outcome = site.outcome(done_with(exc=error))
    assert outcome.failure is not None and outcome.failure["where"] == "site"
    assert "unreachable" in outcome.failure["message"]
    assert not site.is_down


# -- the real service (opt-in) ----------------------------------------------------------


@pytest.mark.timeout(600)
def test_live_round_trip(tmp_path: Path) -> None:
    """Run one task on a real endpoint (needs the Globus cloud service and credentials).

    Set ORCH_GLOBUS_ENDPOINT_ID to an endpoint whose workers can import ``orchestrator`` and
    provide credentials the usual way (GLOBUS_COMPUTE_CLIENT_ID/SECRET or a stored login).
    """
    endpoint_id = os.environ.get("ORCH_GLOBUS_ENDPOINT_ID")
    if not endpoint_id:
        pytest.skip(
            "needs the Globus Compute cloud service: set ORCH_GLOBUS_ENDPOINT_ID to a real "
            "endpoint (with orch installed on its workers) and Globus credentials"
        )
    config = SiteConfig(
        name="live",
        kind="cpu",
        backend="globus",
        capacity=1,
        endpoint_id=uuid.UUID(endpoint_id),
        http_timeout=30.0,
    )
    site = GlobusSite(config, tmp_path)
    try:
        site.start()
        future = site.submit(math.fsum, ([0.5, 1.5, 4.0],), {})
        done, _ = wait([future], timeout=540)
        assert future in done, "no result from the endpoint within 9 minutes"
        outcome = site.outcome(future)
        assert outcome.ok, outcome.failure
        assert outcome.value == 6.0
        assert outcome.host
    finally:
        site.shutdown()


# -- failover from an unreachable Globus site to a local one ---------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("unreachable", ["refused", "black-holed"])
def test_unreachable_globus_site_fails_over_to_a_local_site(
    unreachable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, creds: Creds
) -> None:
    from apps_for_tests import square

    from orchestrator.dispatch import Dispatcher, Method, MethodRegistry
    from orchestrator.queues import Queues
    from orchestrator.sites.local import LocalSite

    hole = BlackHole() if unreachable == "black-holed" else None
    point_at(monkeypatch, hole.url if hole else closed_port_url())
    remote = GlobusSite(
        SiteConfig(
            name="polaris", kind="cpu", backend="globus", capacity=4, endpoint_id=ENDPOINT_ID
        ),
        tmp_path,
    )  # default http_timeout (10 s, one retry)
    local = LocalSite(
        SiteConfig(name="laptop", kind="cpu", backend="local", capacity=2),
        tmp_path,
        extra_paths=[str(Path(__file__).parent)],
    )
    downs: list[float] = []
    remote.on_down(lambda site, reason: downs.append(time.monotonic()))
    queues = Queues({"t"})
    dispatcher = Dispatcher(
        [remote, local], MethodRegistry([Method(square)]), queues.put_result, tmp_path
    )
    dispatcher._last_used["laptop"] = 10**9  # the first task is placed on the Globus site
    queues.attach(dispatcher)
    try:
        local.start()
        remote.start()
        started = time.monotonic()
        for x in range(8):
            queues.send_inputs(float(x), method="square", topic="t")
        results = [queues.get_result("t", timeout=120) for _ in range(8)]
    finally:
        dispatcher.close()
        local.shutdown()
        remote.shutdown()
        if hole is not None:
            hole.close()
    assert sorted(r.value for r in results) == [float(x * x) for x in range(8)]
    assert all(r.success and r.site == "laptop" for r in results)
    assert remote.is_down and downs and downs[0] - started <= 30  # the requirement
    moved = [r for r in results if r.moves]
    assert len(moved) == 1 and moved[0].moves[0].site == "polaris"
    assert moved[0].moves[0].reason == "site_failure"
    assert "unreachable" in moved[0].moves[0].message
    assert dispatcher.stats["polaris"].down == remote.down_reason
