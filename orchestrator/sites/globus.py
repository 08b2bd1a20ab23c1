"""Remote sites: a Globus Compute endpoint reached through the Globus Compute cloud service.

Tasks travel through ``globus_compute_sdk.Executor``: ``submit`` sends ``run_task(fn, args,
kwargs)`` to the site's endpoint and returns the SDK's ``ComputeFuture``; ``outcome`` decodes
the ``run_task`` dict that comes back.

Behaviour worth knowing (measured with globus-compute-sdk 4.19.0 / globus-sdk 4.9):

* **Bounded waits.** Every HTTP client the SDK builds for the site (the Compute web clients,
  the Globus Auth login client and the app's consent client) gets ``config.http_timeout`` as
  its transport timeout and at most one retry (:data:`MAX_HTTP_RETRIES`), so one call to an
  unreachable service gives up after about ``2 * http_timeout + 1`` seconds instead of the
  SDK defaults (60 s, 5 retries with back-off: 6-7 minutes on a black-holed network). These
  are set on each client object, never through ``GLOBUS_SDK_HTTP_TIMEOUT`` in ``os.environ``.
* **Credentials are Globus's own.** ``GLOBUS_COMPUTE_CLIENT_ID``/``GLOBUS_COMPUTE_CLIENT_SECRET``
  (a client identity) or the login stored by ``globus-compute-endpoint login`` in the SDK's
  token storage (``~/.globus_compute/storage.db``, or ``$GLOBUS_COMPUTE_USER_DIR``). orch
  only hands the variables to globus-sdk, as the Compute SDK itself does; it never touches
  tokens, never stores or logs a secret, and scrubs credentials out of every message it
  builds. An interactive login is never started from here (the SDK's would wait on
  ``input()``): without stored tokens the site fails at once with a reason that says how to
  log in.
* **Down-marking.** Any failure to reach or use the service (network, authentication, a
  rejected request, the SDK's executor stopping, the result stream dying) marks the site down
  with a one-line reason, fails the task with ``where='site'``, and makes later ``submit``
  calls raise :class:`~orchestrator.exceptions.SiteUnavailableError`. The SDK's executor stops
  for good after such a failure; :meth:`GlobusSite.revive` drops it so that the next submit
  builds a fresh one.
* **Endpoint watch.** While tasks are in flight, the site asks the service for the endpoint's
  status every :data:`STATUS_POLL_S` seconds. An endpoint the service reports as not online
  (e.g. it crashed and stopped heartbeating) marks the site down; its in-flight tasks fail
  with a site failure, which the dispatcher re-places on a peer. A failed status call changes
  nothing (submissions and the result stream report service failures themselves).
  A broker outage needs no watch: the SDK's result watcher gives up after five reconnect
  attempts (0.5-10 s apart), failing its futures with the AMQP error, which marks the site down.
* **Per-task resources.** Every task's context carries its ``resources``
  (``Resources.worker_view()``). On a site with ``mpi:`` each task is also sent with its own
  ``resource_specification`` (nodes, ranks and ``mpi.options`` as ``launcher_options``, over
  the site's static one), which the endpoint's ``GlobusMPIEngine`` reads: the SDK copies its
  executor's public ``resource_specification`` into a task at ``submit()``, so the site sets
  it just before each submit, under its submit lock; the SDK then sends tasks whose
  specifications differ in batches of their own. Any other site sends its static
  ``resource_specification`` with every task.
* **Service URL override.** ``GLOBUS_SDK_SERVICE_URL_COMPUTE`` (globus-sdk's standard
  per-service override, which the Compute SDK's ``Client`` otherwise ignores) points the site
  at another Compute service, e.g. a proxy or a test double; ``GLOBUS_SDK_SERVICE_URL_AUTH``
  and ``GLOBUS_SDK_ENVIRONMENT`` are honoured by globus-sdk itself.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import globus_sdk
import pika.exceptions
import requests
from globus_compute_sdk import Client, Executor
from globus_compute_sdk.errors import SerdeError, TaskExecutionFailed
from globus_compute_sdk.sdk import executor as _sdk_executor
from globus_compute_sdk.sdk.auth.client_login import get_client_creds
from globus_compute_sdk.sdk.auth.globus_app import DEFAULT_CLIENT_ID
from globus_compute_sdk.sdk.auth.token_storage import get_token_storage
from globus_sdk.gare import GlobusAuthorizationParameters
from globus_sdk.login_flows import LoginFlowManager
from globus_sdk.token_storage import TokenValidationError

from orchestrator.apps.runtime import run_task
from orchestrator.config.sites import SiteConfig
from orchestrator.exceptions import ConfigError, SiteUnavailableError
from orchestrator.resources import Resources
from orchestrator.sites.base import Outcome, Site

log = logging.getLogger(__name__)

MAX_HTTP_RETRIES = 1
"""Retries of one HTTP call to a Globus service (the SDK's default is 5)."""

MAX_RETRY_SLEEP_S = 1.0
"""Longest back-off between two tries of one HTTP call (the SDK's default is 10 s)."""

MAX_TASK_PAYLOAD = 10_000_000
"""Largest serialized task input the Compute service accepts (its documented 10 MB limit).

A bigger task is failed here, alone: sent upstream it would be rejected with
``TASK_PAYLOAD_TOO_LARGE`` and the rejection would stop the SDK's executor for every task.
"""

STATUS_POLL_S = 5.0
"""Seconds between two endpoint-status checks while the site has tasks in flight.

A crashed endpoint loses the tasks it holds without a word: the service only stops seeing
its heartbeats, and the SDK's futures would wait for ever. Asking the status (one bounded
call) is how the site notices and hands those tasks back for re-placement.
"""

SERVICE_URL_VAR = "GLOBUS_SDK_SERVICE_URL_COMPUTE"
"""Environment variable that overrides the Compute service's base URL."""

_LOGIN_HINT = (
    "set GLOBUS_COMPUTE_CLIENT_ID/GLOBUS_COMPUTE_CLIENT_SECRET or run "
    "`globus-compute-endpoint login`"
)
_DETAIL_LIMIT = 300
_SECRET_PATTERNS = (
    # Authorization header values.
    (re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1 ***"),
    # user:password@ in URLs (the AMQP result-stream URL carries credentials).
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.IGNORECASE), r"\1***@"),
    # token=... style fields in error bodies.
    (
        re.compile(
            r"((?:access|refresh)_token|client_secret|password)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",&}]+"
        ),
        r"\1\2***",
    ),
)


def scrub(text: str) -> str:
    """Remove credentials from ``text``: the Globus client id/secret, tokens, URL passwords.

    Args:
        text: Any message that may be shown, logged or stored.

    Returns:
        ``text`` with every secret replaced by ``***``.
    """
    client_id, client_secret = get_client_creds()
    for value in (client_secret, client_id):
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class LoginRequiredError(Exception):
    """No usable Globus credentials, and orch will not start an interactive login."""


class _NoInteractiveLogin(LoginFlowManager):
    """A login flow that refuses at once instead of prompting on a terminal.

    The SDK's default flow prints a URL and waits on ``input()``: that blocks a process whose
    stdin is an open pipe, and would stall a dispatcher thread mid-campaign even on a terminal.
    """

    def run_login_flow(
        self, auth_parameters: GlobusAuthorizationParameters
    ) -> globus_sdk.OAuthTokenResponse:
        """Refuse to log in interactively.

        Raises:
            LoginRequiredError: always.
        """
        raise LoginRequiredError(
            "no stored Globus login or client credentials (orch never starts an interactive login)"
        )


class _InputRejectedError(Exception):
    """A task whose input cannot be sent (unserializable or too large); the site is fine."""

    def __init__(self, exception_type: str, message: str):
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message


@dataclass(frozen=True)
class _Sent:
    """What the site remembers about a future it handed out."""

    executor: Any
    input_size: int | None


def _short(text: str, limit: int = _DETAIL_LIMIT) -> str:
    """Collapse whitespace to one line and cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _network_detail(exc: BaseException) -> str:
    """Say where a network call went and why it failed, from a (wrapped) requests error."""
    underlying = getattr(exc, "underlying_exception", None) or exc
    text = str(underlying)
    where = ""
    host = re.search(r"host='([^']+)', port=(\d+)", text)
    if host:
        where = f" to {host.group(1)}:{host.group(2)}"
    why = re.search(r"\[Errno -?\d+\][^'\")]*|(?:Read |Connect )?timed out", text)
    cause = f": {why.group(0).strip()}" if why else ""
    if not host and not why and underlying is not exc:
        cause = f": {type(underlying).__name__}: {text}"
    return f"{type(exc).__name__}: {exc}{where}{cause}"


def describe(exc: BaseException) -> str:
    """One line naming an exception and what it says, without secrets or response bodies."""
    if isinstance(exc, globus_sdk.GlobusAPIError):
        parts = [f"{type(exc).__name__}: HTTP {exc.http_status}"]
        if exc.code and exc.code != "Error":
            parts.append(str(exc.code))
        if exc.message:
            parts.append(str(exc.message))
        detail = " ".join(parts)
    elif isinstance(exc, globus_sdk.NetworkError | requests.RequestException):
        detail = _network_detail(exc)
    else:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    return scrub(_short(detail))


def _is_auth_error(exc: BaseException) -> bool:
    if isinstance(exc, LoginRequiredError | TokenValidationError):
        return True
    if isinstance(exc, globus_sdk.AuthAPIError):
        return True
    return isinstance(exc, globus_sdk.GlobusAPIError) and exc.http_status in (401, 403)


def _is_network_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        globus_sdk.NetworkError | requests.RequestException | OSError | pika.exceptions.AMQPError,
    )


def _is_site_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the site (service, credentials, SDK) failed, not one task."""
    return isinstance(
        exc, LoginRequiredError | globus_sdk.GlobusError | RuntimeError
    ) or _is_network_error(exc)


def _bound_client(client: globus_sdk.BaseClient, http_timeout: float) -> None:
    """Give one globus-sdk client a finite HTTP timeout and at most one retry."""
    client.transport.http_timeout = http_timeout
    client.retry_config.max_retries = MAX_HTTP_RETRIES
    client.retry_config.max_sleep = min(MAX_RETRY_SLEEP_S, http_timeout)


def _shutdown_sdk_executor(executor: Any, http_timeout: float) -> None:
    """Shut an SDK executor and its result stream down, cancelling what they hold.

    Runs on a background thread: it waits for the SDK's submitter thread, which finishes a
    batch already on the wire before it stops and, if that batch is accepted, starts a result
    watcher for it; only then can every watcher of the executor be stopped.
    """
    try:
        executor.shutdown(wait=False, cancel_futures=True)
    except Exception:  # noqa: BLE001 - shutting down must not fail
        log.debug("executor shutdown failed", exc_info=True)
    submitter = getattr(executor, "_task_submitter", None)  # private to the SDK
    if isinstance(submitter, threading.Thread) and submitter is not threading.current_thread():
        # One batch call, then one result-stream address call it may wait on: each up to
        # (1 + MAX_HTTP_RETRIES) tries of http_timeout plus the back-off.
        tries = 1 + MAX_HTTP_RETRIES
        submitter.join(timeout=2 * tries * (http_timeout + MAX_RETRY_SLEEP_S) + 5)
    _stop_result_watcher(executor)


def _stop_result_watcher(executor: Any) -> None:
    """Stop the SDK's result-stream threads serving ``executor``, cancelling their futures.

    ``Executor.shutdown(wait=False)`` leaves those threads (non-daemon) waiting for results of
    tasks already sent, and the SDK's exit hook then waits for them too: a process whose site
    is unreachable would not exit. Watchers are kept per task group in a registry private to
    the SDK; each site's executor has its own ``Client``, which identifies its watchers. Best
    effort.
    """
    watchers = getattr(_sdk_executor, "_RESULT_WATCHERS", None)
    if not isinstance(watchers, dict):
        return
    client = getattr(executor, "client", None)
    for watcher in list(watchers.values()):
        if client is None or getattr(watcher, "client", None) is not client:
            continue
        try:
            watcher.shutdown(wait=False, cancel_futures=True)
        except Exception:  # noqa: BLE001 - shutting down must not fail
            log.debug("result watcher shutdown failed", exc_info=True)


def _endpoint_state(status: Any) -> str:
    """The ``status`` field of ``get_endpoint_status``'s answer (``""`` when it has none)."""
    return str(status.get("status", "")) if hasattr(status, "get") else ""


class GlobusSite(Site):
    """A remote Globus Compute endpoint, driven through the SDK's ``Executor``.

    The executor is built lazily, on the first :meth:`submit`; :meth:`start` touches no
    network. The first submit after a build registers ``run_task`` with the service (one
    round trip, bounded by ``http_timeout``); later submits only queue the task, which the
    SDK's submitter thread sends in batches.

    Args:
        config: The site's description; ``endpoint_id`` is required, ``http_timeout`` bounds
            every call to the Globus services.
        run_dir: The campaign directory.
    """

    def __init__(self, config: SiteConfig, run_dir: Path, context: Mapping[str, Any] | None = None):
        super().__init__(config, run_dir, context)
        self._state_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        self._executor: Any = None
        self._closed = False
        self._sent: weakref.WeakKeyDictionary[Future[Any], _Sent] = weakref.WeakKeyDictionary()
        self._lost: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        """Executors dropped because their endpoint went offline -> the down reason."""
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Check the configuration; contacts no network (the executor is built lazily).

        Raises:
            ConfigError: the site has no ``endpoint_id``.
        """
        if self.config.endpoint_id is None:
            raise ConfigError(
                f"site '{self.name}': endpoint_id is required for backend 'globus'; set it "
                "to the endpoint's UUID (`globus-compute-endpoint list` shows it)"
            )

    def revive(self) -> None:
        """Forget a down state and the stopped executor, so the next submit builds a new one.

        Futures of the old executor that are still pending are cancelled (the dispatcher has
        re-placed those tasks when the site went down). Does nothing after :meth:`shutdown`.
        """
        with self._state_lock:
            if self._closed:
                return
            old, self._executor = self._executor, None
            with self._lock:
                self.down_reason = None
        if old is not None:
            self._stop_executor(old)
        log.info(
            "site '%s': revived; the next submit builds a new Globus Compute executor", self.name
        )

    def shutdown(self) -> None:
        """Stop the executor without waiting for remote tasks (idempotent, never blocks).

        Tasks not yet sent and tasks waiting for results are cancelled; a batch already on
        the wire finishes (or fails) within the HTTP timeout bound.
        """
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            old, self._executor = self._executor, None
        self._watch_stop.set()
        if old is not None:
            self._stop_executor(old)

    def _stop_executor(self, executor: Any) -> None:
        """Drop an executor without waiting; its tasks that were sent end cancelled at once.

        Tasks already sent (they have a task id) may wait hours for results: their futures are
        cancelled here, at once. The SDK's own shutdown runs on a background thread, because
        it can block: ``Executor.shutdown`` waits for a lock the SDK's submitter thread holds
        while the result-stream thread fetches its connection URL over HTTP (up to about
        ``2 * http_timeout``). It cancels the tasks not yet sent; a batch already on the wire
        (no task id yet) fails or finishes within the HTTP bound. Cancelling that batch's
        futures here would make the SDK's submitter thread die on ``InvalidStateError``.
        """
        with self._state_lock:
            waiting = [
                future
                for future, sent in self._sent.items()
                if sent.executor is executor and getattr(future, "task_id", None)
            ]
        for future in waiting:
            future.cancel()
        threading.Thread(
            target=_shutdown_sdk_executor,
            args=(executor, self.config.http_timeout),
            name=f"orch-globus-shutdown-{self.name}",
            daemon=True,
        ).start()

    # -- submission ------------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        walltime: float | None = None,
        task_id: str | None = None,
        resources: Resources | None = None,
    ) -> Future[Any]:
        """Send ``run_task(fn, args, kwargs)`` to the endpoint.

        ``task_id`` is not sent: the service has no remote cancel, so :meth:`cancel` (the
        default) only lets the dispatcher ignore the result. ``resources`` (default: one rank)
        reach the worker as ``task_context()["resources"]``; on a site with ``mpi:`` the task
        is also sent with its own ``resource_specification`` (:meth:`_resource_specification`),
        which the endpoint's ``GlobusMPIEngine`` reads to give it its nodes.

        Returns:
            The SDK's ``ComputeFuture`` (or, for an input that cannot be sent at all, an
            already failed future; the site stays up).

        Raises:
            SiteUnavailableError: the site is down or shut down, or it could not reach or
                use the service now (it is then marked down).
        """
        executor = self._current_executor()
        try:
            payload = executor.serializer.serialize((fn, tuple(args), dict(kwargs)))
        except Exception as exc:  # noqa: BLE001 - any serializer failure rejects the task
            # The SDK would raise this inside its submitter thread, which then dies and
            # leaves the task's future pending for ever (globus-compute-sdk 4.19.0).
            cause = f" ({describe(exc.__cause__)})" if exc.__cause__ is not None else ""
            return self._rejected(
                "SerializationError",
                f"site '{self.name}': task input cannot be serialized: {describe(exc)}{cause}",
            )
        input_size = len(payload)
        if input_size > MAX_TASK_PAYLOAD:
            return self._rejected(
                "PayloadTooLarge",
                f"site '{self.name}': task input is {input_size} bytes serialized, over the "
                f"Globus Compute limit of {MAX_TASK_PAYLOAD}; pass large inputs by proxy",
                input_size,
            )
        resources = resources or Resources()
        context = {**self.task_context, "resources": resources.worker_view()}
        if walltime is not None:
            context["walltime"] = walltime
        spec = self._resource_specification(resources) if self.is_mpi else None
        try:
            with self._submit_lock:
                if spec is not None:
                    # The SDK copies its executor's resource_specification into the task at
                    # submit(): set per task, under the lock, so that each carries its own.
                    executor.resource_specification = spec
                future = executor.submit(run_task, fn, tuple(args), dict(kwargs), context)
        except Exception as exc:  # noqa: BLE001 - registration/submission failures
            if executor is not self._executor:
                raise SiteUnavailableError(
                    self.down_reason or f"site '{self.name}' was shut down or revived"
                ) from exc
            reason = self._reason(exc)
            self._mark_down(reason)
            raise SiteUnavailableError(reason) from exc
        with self._state_lock:
            self._sent[future] = _Sent(executor, input_size)
            current = executor is self._executor
        if not current:
            # Shut down or revived while this task was being queued: it may never be sent.
            future.cancel()
        future.add_done_callback(self._on_done)
        return future

    def _resource_specification(self, resources: Resources) -> dict[str, Any]:
        """What an ``mpi:`` site sends as one task's ``resource_specification``.

        The site's static ``resource_specification``, overridden by the task's nodes and ranks
        (``num_nodes``, ``ranks_per_node``, ``num_ranks``) and, when ``mpi.options`` is set,
        ``launcher_options``. Never empty (Parsl's MPI mode refuses an empty one).
        """
        mpi = self.config.mpi
        options = mpi.options if mpi is not None else ""
        return {
            **self.config.resource_specification,
            **resources.resource_specification(options),
        }

    def _current_executor(self) -> Any:
        """The live executor, built on first use.

        Raises:
            SiteUnavailableError: the site is down, shut down, or the build failed.
        """
        with self._state_lock:
            if self._closed:
                raise SiteUnavailableError(f"site '{self.name}' is shut down")
            if self.down_reason is not None:
                raise SiteUnavailableError(self.down_reason)
            if self._executor is not None:
                return self._executor
            try:
                self._executor = self._build_executor()
            except Exception as exc:  # noqa: BLE001 - any build failure makes the site unusable
                reason = self._reason(exc, building=True)
            else:
                if self._watcher is None:
                    self._watcher = threading.Thread(
                        target=self._watch_endpoint,
                        name=f"orch-globus-watch-{self.name}",
                        daemon=True,
                    )
                    self._watcher.start()
                return self._executor
        self._mark_down(reason)
        raise SiteUnavailableError(reason)

    def _rejected(
        self, exception_type: str, message: str, input_size: int | None = None
    ) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_exception(_InputRejectedError(exception_type, message))
        with self._state_lock:
            self._sent[future] = _Sent(None, input_size)
        return future

    # -- watching the endpoint -------------------------------------------------------------

    def _watch_endpoint(self) -> None:
        """Every :data:`STATUS_POLL_S` s while tasks are in flight, ask the endpoint's status."""
        while not self._watch_stop.wait(STATUS_POLL_S):
            with self._state_lock:
                executor = None if self._closed or self.is_down else self._executor
                in_flight = (
                    0
                    if executor is None
                    else sum(
                        1
                        for future, sent in self._sent.items()
                        if sent.executor is executor and not future.done()
                    )
                )
            if executor is None or not in_flight:
                continue
            try:
                status = executor.client.get_endpoint_status(self.config.endpoint_id)
            except Exception as exc:  # noqa: BLE001 - a failed check decides nothing
                log.debug("site '%s': endpoint status check failed: %s", self.name, describe(exc))
                continue
            state = _endpoint_state(status)
            if state and state != "online":
                self._endpoint_lost(executor, state, in_flight)

    def _endpoint_lost(self, executor: Any, state: str, in_flight: int) -> None:
        """The service says the endpoint is not online: down, and hand its tasks back."""
        reason = (
            f"site '{self.name}': endpoint {self.config.endpoint_id} went {state}; its "
            f"{in_flight} task(s) are re-placed"
        )
        with self._state_lock:
            if self._closed or executor is not self._executor:
                return
            self._executor = None
            self._lost[executor] = reason
        # Down first, so that the dispatcher re-places the cancelled tasks on a peer.
        self._mark_down(reason)
        self._stop_executor(executor)

    # -- building the SDK objects ----------------------------------------------------------

    def _build_executor(self) -> Any:
        """Build the SDK objects; no network traffic happens here."""
        endpoint_id = self.config.endpoint_id
        if endpoint_id is None:
            raise ConfigError("endpoint_id is required for backend 'globus'")
        client = self._build_client()
        executor = Executor(
            endpoint_id=endpoint_id,
            client=client,
            user_endpoint_config=dict(self.config.user_endpoint_config) or None,
            resource_specification=dict(self.config.resource_specification) or None,
            label=f"orch-{self.name}",
        )
        # Executors inherit the last task group any Executor in the process used; a site
        # sharing one would share its result stream with other sites (and cancel their
        # futures on shutdown). Let the service create a task group for this executor.
        executor.task_group_id = None
        return executor

    def _build_client(self) -> Any:
        """A Compute ``Client`` whose every HTTP call is bounded by ``http_timeout``."""
        timeout = self.config.http_timeout
        app = self._build_app(timeout)
        # do_version_check=False: the check is a network call in the constructor; the first
        # submit contacts the service anyway.
        client = Client(app=app, do_version_check=False)
        # The Compute SDK gives no public handle on its web clients; their transports and
        # retry settings are public globus-sdk attributes.
        web = client._compute_web_client
        service_url = os.environ.get(SERVICE_URL_VAR)
        for web_client in (web.v2, web.v3):
            _bound_client(web_client, timeout)
            if service_url:
                web_client.base_url = service_url
        return client

    def check(self) -> str | None:
        """Pre-flight: credentials work and the service says the endpoint is online."""
        try:
            status = self._build_client().get_endpoint_status(self.config.endpoint_id)
        except Exception as exc:  # noqa: BLE001 - every failure is a reason to report
            return self._reason(exc)
        state = _endpoint_state(status)
        if state and state != "online":
            return (
                f"site '{self.name}': endpoint {self.config.endpoint_id} is {state}; start it "
                "on the site (`globus-compute-endpoint start <name>`)"
            )
        return None

    def try_revive(self) -> bool:
        """Ask the service for the endpoint's status; revive the site if it answers online."""
        if self._closed:
            return False
        reason = self.check()
        if reason is not None:
            log.info("site '%s': still down: %s", self.name, reason)
            return False
        self.revive()
        return not self.is_down

    def _build_app(self, timeout: float) -> globus_sdk.GlobusApp:
        """A GlobusApp like the SDK's own, with bounded HTTP and no interactive login."""
        environment = globus_sdk.config.get_environment_name()
        client_id, client_secret = get_client_creds()
        app_name = platform.node() or "orch"
        storage = get_token_storage(environment=environment)
        app: globus_sdk.GlobusApp
        if client_id and client_secret:
            confidential = globus_sdk.ConfidentialAppAuthClient(
                client_id=client_id,
                client_secret=client_secret,
                app_name=app_name,
                environment=environment,
            )
            _bound_client(confidential, timeout)
            app = globus_sdk.ClientApp(
                app_name,
                login_client=confidential,
                config=globus_sdk.GlobusAppConfig(
                    token_storage=storage, request_refresh_tokens=True, environment=environment
                ),
            )
        elif client_secret:
            raise LoginRequiredError(
                "GLOBUS_COMPUTE_CLIENT_SECRET is set but GLOBUS_COMPUTE_CLIENT_ID is not"
            )
        else:
            native = globus_sdk.NativeAppAuthClient(
                client_id=client_id or DEFAULT_CLIENT_ID,
                app_name=app_name,
                environment=environment,
            )
            _bound_client(native, timeout)
            app = globus_sdk.UserApp(
                app_name,
                login_client=native,
                config=globus_sdk.GlobusAppConfig(
                    token_storage=storage,
                    request_refresh_tokens=True,
                    environment=environment,
                    login_flow_manager=_NoInteractiveLogin(native, request_refresh_tokens=True),
                ),
            )
        # The app's own consent client (only used for dependent scopes) gets the same bounds.
        for validator in getattr(app.token_storage, "validators", []):
            consent = getattr(validator, "consent_client", None)
            if isinstance(consent, globus_sdk.BaseClient):
                _bound_client(consent, timeout)
        return app

    # -- results ---------------------------------------------------------------------------

    def outcome(self, future: Future[Any]) -> Outcome:
        """Decode a done future from :meth:`submit`; never raises.

        A failure to reach or use the service marks the site down (if the future belongs to
        the live executor) and becomes a failed outcome carrying the same reason.
        """
        with self._state_lock:
            sent = self._sent.get(future)
        input_size = sent.input_size if sent else None
        outcome = self._decode(future, input_size)
        task_id = getattr(future, "task_id", None)  # ComputeFuture: the service's task id
        outcome.remote_id = str(task_id) if task_id else None
        return outcome

    def _decode(self, future: Future[Any], input_size: int | None) -> Outcome:
        try:
            try:
                exc = future.exception(timeout=0)
            except CancelledError:
                return self._cancelled_outcome(future, input_size)
            if exc is None:
                return self._value_outcome(future.result(timeout=0), input_size)
            return self._failure_outcome(future, exc, input_size)
        except Exception as exc:  # noqa: BLE001 - outcome never raises
            return Outcome.site_failure(
                type(exc).__name__, f"site '{self.name}': {describe(exc)}", input_size=input_size
            )

    def _value_outcome(self, record: Any, input_size: int | None) -> Outcome:
        if not isinstance(record, dict) or "ok" not in record:
            return Outcome.site_failure(
                "TypeError",
                f"site '{self.name}': the worker returned {type(record).__name__}, not the "
                "run_task record (is the endpoint running orch's run_task?)",
                input_size=input_size,
            )
        return Outcome.from_worker(record, input_size=input_size, value_size=None)

    def _failure_outcome(
        self, future: Future[Any], exc: BaseException, input_size: int | None
    ) -> Outcome:
        if isinstance(exc, _InputRejectedError):
            return Outcome.site_failure(exc.exception_type, exc.message, input_size=input_size)
        if isinstance(exc, TaskExecutionFailed):
            remote = scrub(exc.remote_data or "")
            # the endpoint ends its error text with a rule of dashes: skip such lines
            lines = [line.strip() for line in remote.splitlines() if line.strip(" -+=\t")]
            last = lines[-1] if lines else "remote task failed"
            head = last.split(":", 1)[0]
            exception_type = head if re.fullmatch(r"[\w.]+", head) else "TaskExecutionFailed"
            return Outcome.site_failure(
                exception_type,
                f"site '{self.name}': the endpoint could not run the task: {_short(last)}",
                traceback=remote[-4000:],
                input_size=input_size,
            )
        if _is_site_error(exc):
            reason = self._reason(exc)
            if self._is_live(future):
                self._mark_down(reason)
            return Outcome.site_failure(type(exc).__name__, reason, input_size=input_size)
        kind = "SerializationError" if isinstance(exc, SerdeError) else type(exc).__name__
        return Outcome.site_failure(
            kind, f"site '{self.name}': {describe(exc)}", input_size=input_size
        )

    def _cancelled_outcome(self, future: Future[Any], input_size: int | None) -> Outcome:
        with self._state_lock:
            sent = self._sent.get(future)
            lost = self._lost.get(sent.executor) if sent and sent.executor is not None else None
        if lost is not None:
            return Outcome.site_failure("EndpointOffline", lost, input_size=input_size)
        if self._stopped_by_sdk(future):
            # The SDK cancels the queued futures of an executor that stopped after a failure.
            reason = self.down_reason or (
                f"site '{self.name}': the Globus Compute executor stopped before sending the task"
            )
            self._mark_down(reason)
            return Outcome.site_failure("CancelledError", reason, input_size=input_size)
        return Outcome.site_failure(
            "CancelledError",
            f"site '{self.name}': task cancelled before it ran (cancelled by the caller, or the "
            "site was shut down or revived)",
            input_size=input_size,
        )

    def _on_done(self, future: Future[Any]) -> None:
        """Mark the site down as soon as a future fails for a site-level reason."""
        try:
            if not self._is_live(future):
                return
            if future.cancelled():
                if self._stopped_by_sdk(future):
                    self._cancelled_outcome(future, None)
                return
            exc = future.exception(timeout=0)
            if exc is not None and _is_site_error(exc):
                self._mark_down(self._reason(exc))
        except Exception:  # noqa: BLE001 - a done-callback must not raise
            log.debug("site '%s': done-callback failed", self.name, exc_info=True)

    def _is_live(self, future: Future[Any]) -> bool:
        """Whether ``future`` came from the executor the site runs now (and not shut down)."""
        with self._state_lock:
            sent = self._sent.get(future)
            return (
                not self._closed
                and sent is not None
                and sent.executor is not None
                and sent.executor is self._executor
            )

    def _stopped_by_sdk(self, future: Future[Any]) -> bool:
        """Whether ``future`` belongs to the live executor and that executor has stopped.

        The SDK stops its executor for good after a failed submission (``_stopped`` is its
        private flag; there is no public one). orch only stops executors it has dropped.
        """
        if not self._is_live(future):
            return False
        with self._state_lock:
            sent = self._sent.get(future)
        return sent is not None and bool(getattr(sent.executor, "_stopped", False))

    # -- reasons ---------------------------------------------------------------------------

    def _mark_down(self, reason: str) -> None:
        if not self.is_down:
            log.warning("%s", reason)
        self.mark_down(reason)

    def _reason(self, exc: BaseException, *, building: bool = False) -> str:
        """The one-line, secret-free reason the site is unusable because of ``exc``."""
        detail = describe(exc)
        site = f"site '{self.name}'"
        if _is_auth_error(exc):
            return f"{site}: Globus authentication failed ({detail}); {_LOGIN_HINT}"
        if building:
            return f"{site}: cannot set up the Globus Compute executor ({detail})"
        if _is_network_error(exc):
            return (
                f"{site}: Globus Compute service unreachable ({detail}); check the network "
                f"and GLOBUS_COMPUTE_CLIENT_ID/SECRET or run `globus-compute-endpoint login`"
            )
        if isinstance(exc, globus_sdk.GlobusAPIError):
            return (
                f"{site}: Globus Compute service refused the request ({detail}); check "
                f"endpoint_id {self.config.endpoint_id} and the site's settings"
            )
        if isinstance(exc, ConfigError | TypeError | ValueError):
            return f"{site}: cannot set up the Globus Compute executor ({detail})"
        if isinstance(exc, RuntimeError):
            return (
                f"{site}: the Globus Compute executor stopped ({detail}); the result stream or "
                "the service connection failed"
            )
        return f"{site}: Globus Compute submission failed ({detail})"
