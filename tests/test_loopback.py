"""orch's Globus backend end to end, offline: real SDK, real RabbitMQ, real endpoint.

Nothing here is mocked on the task path: ``GlobusSite`` (built by ``make_site`` from a
``backend: globus`` ``SiteConfig``) drives the unmodified ``globus_compute_sdk.Executor``,
which talks HTTP to the loopback service (:mod:`loopback.service`) and reads results from a
private RabbitMQ (:mod:`loopback.broker`); the tasks run on a real ``globus-compute-endpoint``
manager started with the public CLI from the files ``orch deploy`` writes
(:mod:`loopback.endpoint`), whose user endpoint runs a ``GlobusComputeEngine`` with a
``LocalProvider`` worker pool on this machine.

orch's side is pointed at the service the way ``tests/test_site_globus.py`` does it:
``GLOBUS_SDK_SERVICE_URL_COMPUTE`` (applied by ``GlobusSite``), ``GLOBUS_SDK_SERVICE_URL_AUTH``
and client credentials in ``GLOBUS_COMPUTE_CLIENT_ID``/``SECRET``, plus a scratch
``GLOBUS_COMPUTE_USER_DIR`` for the token storage.

Timings (manager ready, cold first result, warm round trip, 50-task campaign) are printed;
run with ``-s`` to see them.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import wait
from typing import Any

import pytest
from conftest import TESTS_DIR, read_results
from loopback import skip_reason
from loopback.broker import RabbitBroker
from loopback.campaign import SpreadCampaign, SpreadOptions
from loopback.endpoint import CLIENT_ID, CLIENT_SECRET, LoopbackEndpoint
from loopback.service import LoopbackService
from loopback.tasks import ENDPOINT_MARK, fail, where

from orchestrator.config.sites import SiteConfig
from orchestrator.runner import run_campaign
from orchestrator.sites import make_site
from orchestrator.sites.globus import GlobusSite

SKIP = skip_reason()

pytestmark = [
    pytest.mark.loopback,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(SKIP is not None, reason=f"loopback Globus Compute: {SKIP}"),
]

ENDPOINT_NAME = "orch-loopback"
CAMPAIGN_TASKS = 50
TIMINGS: dict[str, float] = {}


def _timing(name: str, seconds: float) -> None:
    TIMINGS[name] = seconds
    print(f"\nloopback timing: {name}: {seconds:.2f} s")


def globus_site_config(endpoint_id: uuid.UUID, name: str = "remote") -> SiteConfig:
    """The ``backend: globus`` site the endpoint is deployed for (and orch submits to)."""
    return SiteConfig(
        name=name,
        kind="cpu",
        backend="globus",
        capacity=2,
        endpoint_id=endpoint_id,
        # The workers reach the interchange on loopback (orch's template variable).
        user_endpoint_config={"address": "127.0.0.1"},
        http_timeout=30,
    )


# -- the loopback stack, once per module -----------------------------------------------------


@pytest.fixture(scope="module")
def broker():
    with RabbitBroker() as running:
        _timing("broker ready", running.ready_seconds or 0.0)
        yield running


@pytest.fixture(scope="module")
def service(broker):
    with LoopbackService(broker.url, lock_timeout=240) as running:
        yield running


@pytest.fixture(scope="module")
def endpoint_id() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture(scope="module")
def endpoint(service, endpoint_id, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("loopback-endpoint")
    ep = LoopbackEndpoint(
        globus_site_config(endpoint_id),
        service,
        workdir,
        name=ENDPOINT_NAME,
        python_paths=[str(TESTS_DIR)],
        extra_env={ENDPOINT_MARK: ENDPOINT_NAME},
    )
    try:
        ep.start()
        _timing("endpoint configure (CLI)", ep.configure_seconds or 0.0)
        _timing("manager endpoint ready (start to first heartbeat)", ep.ready_seconds or 0.0)
        yield ep
    finally:
        stopping = time.monotonic()
        ep.stop()
        _timing("endpoint stop", time.monotonic() - stopping)
    assert not ep.forced, f"processes left after `globus-compute-endpoint stop`: {ep.forced}"
    # The manager's last heartbeat says it is going away.
    assert service.wait_offline(ep.endpoint_id, 15), service.status(ep.endpoint_id)


@pytest.fixture(scope="module")
def orch_env(service, tmp_path_factory):
    """orch's process environment for the Globus backend, pointed at the service."""
    client_dir = tmp_path_factory.mktemp("globus-client")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("GLOBUS_SDK_ENVIRONMENT", raising=False)
        mp.setenv("GLOBUS_SDK_SERVICE_URL_COMPUTE", service.url)
        mp.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", service.auth_url)
        mp.setenv("GLOBUS_COMPUTE_CLIENT_ID", CLIENT_ID)
        mp.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", CLIENT_SECRET)
        mp.setenv("GLOBUS_COMPUTE_USER_DIR", str(client_dir))
        yield


@pytest.fixture
def site(endpoint, orch_env, endpoint_id, tmp_path):
    built = make_site(globus_site_config(endpoint_id), tmp_path)
    assert isinstance(built, GlobusSite)
    built.start()
    try:
        yield built
    finally:
        built.shutdown()


def _result(site: GlobusSite, future: Any, timeout: float = 180.0) -> Any:
    done, _ = wait([future], timeout=timeout)
    assert done, f"no result within {timeout:g} s"
    return site.outcome(future)


# -- the tests --------------------------------------------------------------------------------


def test_endpoint_registers_and_reports_online(endpoint, service, site):
    eid = endpoint.endpoint_id
    assert f"PUT /v3/endpoints/{eid}" in service.calls
    assert "GET /auth/v2/oauth2/userinfo" in service.calls
    registered = service.endpoints[eid].metadata
    # The manager registered with orch's template and schema, as `orch deploy` wrote them.
    assert "GlobusComputeEngine" in registered["user_config_template"]
    assert registered["user_config_schema"]["additionalProperties"] is False
    assert service.status(eid)["status"] == "online"
    assert site.check() is None


def test_globus_site_returns_a_value(site, service, endpoint):
    started = time.monotonic()
    future = site.submit(where, (7,), {})
    outcome = _result(site, future)
    _timing("first result (cold user endpoint)", time.monotonic() - started)
    assert outcome.ok, outcome.failure
    assert outcome.value["square"] == 49
    # It ran on the endpoint's workers, which carry the endpoint's mark.
    assert outcome.value["endpoint"] == ENDPOINT_NAME
    assert outcome.pid == outcome.value["pid"]
    # The future is the SDK's, with the id the service handed out.
    assert future.task_id in service.task_ids()
    assert future.task_id in service.relayed

    started = time.monotonic()
    outcome = _result(site, site.submit(where, (8,), {}), timeout=60)
    _timing("warm round trip", time.monotonic() - started)
    assert outcome.ok and outcome.value["square"] == 64
    assert len(service.user_endpoints(endpoint.endpoint_id)) == 1


def test_raising_task_is_a_failed_outcome_with_the_remote_message(site):
    message = f"remote failure {uuid.uuid4().hex[:8]}"
    outcome = _result(site, site.submit(fail, (message,), {}))
    assert not outcome.ok
    assert outcome.failure is not None
    assert outcome.failure["where"] == "task"
    assert outcome.failure["message"] == message
    assert outcome.failure["exception_type"].endswith("ValueError")
    assert f"ValueError: {message}" in outcome.failure["traceback"]
    # The site stays usable after a task failure.
    assert not site.is_down
    assert _result(site, site.submit(where, (2,), {}), timeout=60).value["square"] == 4


def test_many_tasks_on_one_site_all_come_back(site, service):
    futures = [site.submit(where, (i,), {}) for i in range(20)]
    done, pending = wait(futures, timeout=180)
    assert not pending
    values = sorted(site.outcome(f).value["square"] for f in futures)
    assert values == [i * i for i in range(20)]
    assert {f.task_id for f in futures} <= set(service.relayed)


def test_function_the_workers_cannot_import_fails_with_the_remote_message(site, tmp_path):
    """The worker cannot unpickle the call: the SDK's TaskExecutionFailed path in orch."""
    import importlib
    import sys

    module = f"loopback_local_only_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text("def hidden(x):\n    return x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        hidden = importlib.import_module(module).hidden
        outcome = _result(site, site.submit(hidden, (1,), {}), timeout=60)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)
    assert not outcome.ok
    assert outcome.failure is not None
    assert outcome.failure["where"] == "site"
    assert module in outcome.failure["traceback"]
    assert "the endpoint could not run the task" in outcome.failure["message"]
    print(f"\nloopback: unimportable function -> {outcome.failure['message']}")
    # One task the endpoint could not run does not take the site down.
    assert not site.is_down, site.down_reason


@pytest.fixture(scope="module")
def campaign(endpoint, orch_env, endpoint_id, service, tmp_path_factory):
    """Run :class:`SpreadCampaign` once on the Globus site and a local site at once."""
    run_dir = tmp_path_factory.mktemp("campaign") / "run"
    sites = [
        globus_site_config(endpoint_id, name="remote"),
        SiteConfig(name="local", kind="cpu", backend="local", capacity=2),
    ]
    before = set(service.task_ids())
    started = time.monotonic()
    summary = run_campaign(
        SpreadCampaign,
        sites,
        run_dir,
        SpreadOptions(count=CAMPAIGN_TASKS, pause=0.2),
        extra_paths=[str(TESTS_DIR)],
    )
    _timing(f"{CAMPAIGN_TASKS}-task campaign wall time", time.monotonic() - started)
    campaign_ids = [t for t in service.task_ids() if t not in before]
    return {
        "summary": summary,
        "records": read_results(run_dir, "where"),
        "globus_task_ids": campaign_ids,
        "relayed": [t for t in service.relayed if t in set(campaign_ids)],
    }


def test_campaign_runs_on_the_globus_and_a_local_site_at_once(campaign):
    summary = campaign["summary"]
    records = campaign["records"]
    print(f"\nloopback campaign: {summary.summary}; per site: {summary.per_site}")
    assert not summary.agent_errors
    assert len(records) == CAMPAIGN_TASKS
    assert all(r["success"] for r in records), [r["failure_info"] for r in records]
    assert sorted(r["value"]["x"] for r in records) == list(range(CAMPAIGN_TASKS))
    assert all(r["value"]["square"] == r["value"]["x"] ** 2 for r in records)
    by_site: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_site.setdefault(r["site"], []).append(r)
    assert set(by_site) == {"remote", "local"}, {k: len(v) for k, v in by_site.items()}
    # Each result ran where orch says it did.
    assert all(r["value"]["endpoint"] == ENDPOINT_NAME for r in by_site["remote"])
    assert all(r["value"]["endpoint"] is None for r in by_site["local"])
    assert all(r["worker_pid"] == r["value"]["pid"] for r in records)
    assert summary.per_site["remote"]["done"] == len(by_site["remote"])
    assert summary.per_site["local"]["done"] == len(by_site["local"])
    # Every Globus result corresponds to one task the service handed out and relayed.
    assert len(campaign["globus_task_ids"]) == len(by_site["remote"])
    assert sorted(campaign["relayed"]) == sorted(campaign["globus_task_ids"])


def test_globus_results_carry_their_globus_task_ids(campaign):
    globus_ids = set(campaign["globus_task_ids"])
    remote = [r for r in campaign["records"] if r["site"] == "remote"]
    local = [r for r in campaign["records"] if r["site"] != "remote"]
    assert remote and local
    assert {r["remote_task_id"] for r in remote} <= globus_ids
    assert len({r["remote_task_id"] for r in remote}) == len(remote)
    assert all(r["remote_task_id"] is None for r in local)


def test_no_queue_piles_up(campaign, service):
    depths = service.queue_depths()
    assert depths, "the service declared no queues"
    assert all(n == 0 for n in depths.values()), depths


def test_timings_recorded(campaign):
    print("\nloopback timings: " + ", ".join(f"{k}: {v:.2f} s" for k, v in TIMINGS.items()))
    assert TIMINGS


def test_colmena_globus_task_server_runs_on_the_endpoint(endpoint, orch_env, endpoint_id, tmp_path):
    """A Colmena main script's Globus Compute task server, over the loopback service."""
    from orchestrator.colmena.queue import PipeQueues
    from orchestrator.colmena.task_server import GlobusComputeTaskServer

    queues = PipeQueues(topics=["where"])
    server = GlobusComputeTaskServer(
        {where: str(endpoint_id)},
        None,
        queues,
        sites=[globus_site_config(endpoint_id)],  # the deployed site (its template address)
        run_dir=tmp_path / "run",
    )
    server.start()
    try:
        for x in range(4):
            queues.send_inputs(x, topic="where")
        results = [queues.get_result("where", timeout=180) for _ in range(4)]
    finally:
        queues.send_kill_signal()
    server.join(120)
    assert not server.is_alive() and server.exitcode == 0, server.error
    assert sorted(r.value["square"] for r in results) == [0, 1, 4, 9]
    assert all(r.success and r.site == "remote" and r.remote_task_id for r in results)
    assert all(r.value["endpoint"] == ENDPOINT_NAME for r in results)
