"""Faults on the real Globus path, mid-campaign (issue 12, item 4).

A :class:`loopback.faults.SteadyCampaign` keeps tasks flowing to two sites at once: the
loopback Globus site (real SDK, real RabbitMQ, real ``globus-compute-endpoint``; see
``tests/test_loopback.py``) and a local site. While the Globus site has tasks in flight, each
test injects one fault and shows that orch

* marks the Globus site down within a bounded time (asserted generously, measured figure
  printed),
* re-places its unfinished work on the local peer,
* revives the Globus site once it answers again, and sends it tasks again,
* loses no task and delivers none twice: every task id once in the results file, each value
  correct; executions are counted with one marker file per completed execution: a task that
  never moved completed exactly once; a task re-placed off the lost site completed once on
  the peer, and may also have completed on the Globus endpoint, whose result was never
  delivered (counted and reported),
* and leaves nothing running.

The faults: the broker stopped (and started again on the same ports), the endpoint's manager
process group SIGKILLed (and the endpoint started again), the service answering 503 to
submit and status requests (and answering again). Run with ``-s`` for the figures.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import TESTS_DIR, engine_processes, read_results
from loopback import skip_reason
from loopback.broker import RabbitBroker
from loopback.endpoint import CLIENT_ID, CLIENT_SECRET, LoopbackEndpoint, tagged_processes
from loopback.faults import CONTROLS, Control, SteadyCampaign, SteadyOptions, executions
from loopback.service import LoopbackService
from loopback.tasks import ENDPOINT_MARK

from orchestrator.config.sites import SiteConfig
from orchestrator.runner import Session, run_campaign
from orchestrator.sites.base import Site
from orchestrator.sites.globus import GlobusSite

SKIP = skip_reason()

pytestmark = [
    pytest.mark.loopback,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(SKIP is not None, reason=f"loopback Globus Compute: {SKIP}"),
]

ENDPOINT_NAME = "orch-loopback-faults"
HEARTBEAT_PERIOD = 5
"""The manager's heartbeat period: the service calls it offline 20 s after its last one."""

DETECT_BOUND = 120.0
"""Generous bound on fault -> site down (measured figures are printed)."""
REVIVE_BOUND = 120.0
"""Generous bound on fault repaired -> site up (the dispatcher's first try is 10 s after down)."""


def globus_site_config(endpoint_id: uuid.UUID) -> SiteConfig:
    return SiteConfig(
        name="remote",
        kind="cpu",
        backend="globus",
        capacity=2,
        endpoint_id=endpoint_id,
        user_endpoint_config={"address": "127.0.0.1"},
        http_timeout=10,
    )


# -- the loopback stack, once per module -----------------------------------------------------


@pytest.fixture(scope="module")
def broker():
    with RabbitBroker() as running:
        yield running


@pytest.fixture(scope="module")
def service(broker):
    with LoopbackService(broker.url, lock_timeout=600) as running:
        yield running


@pytest.fixture(scope="module")
def endpoint_id() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture(scope="module")
def endpoint(service, endpoint_id, tmp_path_factory):
    ep = LoopbackEndpoint(
        globus_site_config(endpoint_id),
        service,
        tmp_path_factory.mktemp("loopback-faults-endpoint"),
        name=ENDPOINT_NAME,
        python_paths=[str(TESTS_DIR)],
        extra_env={ENDPOINT_MARK: ENDPOINT_NAME},
        heartbeat_period=HEARTBEAT_PERIOD,
    )
    try:
        ep.start()
        yield ep
    finally:
        ep.stop()
    assert not ep.forced, f"processes that had to be killed: {ep.forced}"


@pytest.fixture(scope="module")
def orch_env(service, tmp_path_factory):
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
def stack(broker, service, endpoint, orch_env, endpoint_id):
    """The healthy stack; whatever a test broke is repaired afterwards, also on failure."""
    assert service.wait_online(endpoint.endpoint_id, 60), service.status(endpoint.endpoint_id)
    yield {"broker": broker, "service": service, "endpoint": endpoint, "id": endpoint_id}
    service.recover()
    broker.start_node()
    if endpoint.process is None:
        endpoint.start()


# -- the scenario ------------------------------------------------------------------------------


def _until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` every 0.1 s; the monotonic time it held, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)
    return time.monotonic()


def run_fault(
    stack: dict[str, Any],
    tmp_path: Path,
    label: str,
    inject: Callable[[], Any],
    restore: Callable[[Any], None],
) -> dict[str, Any]:
    """Run a campaign; inject the fault while the Globus site has tasks in flight, repair it
    once the site is down, finish once the revived site has completed tasks again.

    Returns the measured times, the records, executions and the site's down reason; checks
    that every task came back once with its value.
    """
    endpoint: LoopbackEndpoint = stack["endpoint"]
    marker_dir = tmp_path / "markers"
    marker_dir.mkdir()
    run_dir = tmp_path / "run"
    key = uuid.uuid4().hex
    control = CONTROLS[key] = Control()
    before = {p.pid for p in engine_processes()}
    captured: dict[str, Any] = {}
    done_remote: list[float] = []
    downs: list[tuple[float, str]] = []

    def on_session(session: Session) -> contextlib.AbstractContextManager[Any]:
        remote = next(s for s in session.sites if s.name == "remote")

        def listener(state: str, task: Any, site: Site | None) -> None:
            if state == "done" and site is remote:
                done_remote.append(time.monotonic())

        session.dispatcher.listeners.append(listener)
        remote.on_down(lambda _site, reason: downs.append((time.monotonic(), reason)))
        captured["session"] = session
        captured["remote"] = remote
        return contextlib.nullcontext()

    sites = [
        globus_site_config(stack["id"]),
        SiteConfig(name="local", kind="cpu", backend="local", capacity=2),
    ]
    options = SteadyOptions(control=key, marker_dir=str(marker_dir), outstanding=8, pause=0.3)
    figures: dict[str, Any] = {}
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaign")
    started = time.monotonic()
    campaign = pool.submit(
        run_campaign,
        SteadyCampaign,
        sites,
        run_dir,
        options,
        extra_paths=[str(TESTS_DIR)],
        on_session=on_session,
    )
    token: Any = None
    injected = restored = False
    try:
        _until(lambda: "remote" in captured or campaign.done(), 120, "the campaign started")
        assert not campaign.done(), campaign.exception()
        remote: GlobusSite = captured["remote"]
        stats = captured["session"].dispatcher.stats["remote"]
        _until(
            lambda: len(done_remote) >= 2 and stats.in_flight >= 2,
            180,
            "the Globus site completed 2 tasks and has 2 in flight",
        )
        in_flight = stats.in_flight
        t_fault = time.monotonic()
        token = inject()
        injected = True
        t_down = _until(lambda: remote.is_down, DETECT_BOUND, f"{label}: Globus site down")
        reason = remote.down_reason or ""
        t_restore = time.monotonic()
        restore(token)
        restored = True
        t_repaired = time.monotonic()
        t_up = _until(lambda: not remote.is_down, REVIVE_BOUND, f"{label}: Globus site up again")
        _until(
            lambda: sum(1 for t in done_remote if t > t_up) >= 2,
            180,
            f"{label}: the revived Globus site completed 2 new tasks",
        )
        figures.update(
            detect_s=t_down - t_fault,
            repair_s=t_repaired - t_restore,
            revive_after_repair_s=t_up - t_repaired,
            down_for_s=t_up - t_down,
            in_flight_at_fault=in_flight,
            reason=reason,
            downs=len(downs),
        )
    finally:
        control.finish.set()
        if injected and not restored:
            with contextlib.suppress(Exception):
                restore(token)
        summary = campaign.result(timeout=300)
        pool.shutdown()
        CONTROLS.pop(key, None)
    figures["wall_s"] = time.monotonic() - started

    # Every task once, with its value, no agent error.
    assert not summary.agent_errors, summary.agent_errors
    records = read_results(run_dir, "counted")
    sent = len(records)
    assert sorted(r["value"]["x"] for r in records) == list(range(sent))
    assert len({r["task_id"] for r in records}) == sent
    assert all(r["success"] for r in records), [r["failure_info"] for r in records]
    assert all(r["value"]["square"] == r["value"]["x"] ** 2 for r in records)
    assert all(r["worker_pid"] == r["value"]["pid"] for r in records)

    # Executions: each delivered result is one recorded execution; only a task that moved
    # can have completed more often (on the lost side, its result never delivered).
    runs = executions(marker_dir)
    extra: dict[int, int] = {}
    for r in records:
        x = r["value"]["x"]
        mine = runs.get(x, [])
        assert any(e["pid"] == r["worker_pid"] for e in mine), (x, mine)
        if not r["moves"]:
            assert len(mine) == 1, (x, mine)
        else:
            # At-least-once on the lost side: RabbitMQ redelivers a task message whose ack the
            # endpoint had not sent yet, so the endpoint may complete it more than once.
            others = [e for e in mine if e["pid"] != r["worker_pid"]]
            assert all(e["endpoint"] == ENDPOINT_NAME for e in others), (x, mine)
            assert sum(1 for e in mine if e["endpoint"] is None) <= 1, (x, mine)
        if len(mine) > 1:
            extra[x] = len(mine) - 1
    assert set(runs) == set(range(sent)), sorted(set(runs) - set(range(sent)))

    moved = [r for r in records if any(m["site"] == "remote" for m in r["moves"])]
    assert moved, "no task moved off the Globus site"
    assert all(r["site"] == "local" for r in moved if r["moves"][-1]["site"] == "remote"), [
        (r["site"], r["moves"]) for r in moved
    ]
    by_site = {name: sum(1 for r in records if r["site"] == name) for name in ("remote", "local")}
    assert by_site["remote"] and by_site["local"], by_site

    # Nothing left running: the local site's workers are gone (the endpoint's stay, by design).
    ours = {p.pid for p in tagged_processes(endpoint.tag)}
    for pid in list(ours):  # with what they started: the endpoint's interchange renames itself
        with contextlib.suppress(psutil.Error):
            ours.update(c.pid for c in psutil.Process(pid).children(recursive=True))
    left = [p for p in engine_processes() if p.pid not in before and p.pid not in ours]
    _, alive = psutil.wait_procs(left, timeout=15)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [" ".join(p.cmdline())[:120] for p in alive]

    figures.update(
        tasks=sent,
        moved=len(moved),
        extra_executions=extra,
        per_site=by_site,
        move_reasons=sorted({m["message"][:140] for r in moved for m in r["moves"]}),
    )
    print(
        f"\nloopback fault [{label}]: detected in {figures['detect_s']:.1f} s "
        f"({figures['in_flight_at_fault']} in flight); reason: {figures['reason']}; "
        f"{len(moved)} task(s) moved to local; repaired in {figures['repair_s']:.1f} s; "
        f"revived {figures['revive_after_repair_s']:.1f} s after repair "
        f"(down {figures['down_for_s']:.1f} s); {sent} tasks, per site {by_site}; "
        f"extra completed executions on the lost side: {extra or 'none'}; "
        f"campaign {figures['wall_s']:.1f} s; move messages: {figures['move_reasons']}"
    )
    return figures


# -- the faults --------------------------------------------------------------------------------


def test_broker_stopped_mid_campaign(stack, tmp_path):
    broker: RabbitBroker = stack["broker"]
    figures = run_fault(
        stack,
        tmp_path,
        "broker stopped",
        inject=broker.stop_node,
        restore=lambda _token: broker.start_node(),
    )
    assert figures["detect_s"] < DETECT_BOUND


def test_endpoint_killed_and_restarted(stack, tmp_path):
    endpoint: LoopbackEndpoint = stack["endpoint"]
    left: list[str] = []

    def restore(killed: list[psutil.Process]) -> None:
        # The user endpoint and its workers notice their manager is gone, and exit.
        left.extend(endpoint.wait_gone(killed, 60))
        endpoint.start()

    figures = run_fault(stack, tmp_path, "endpoint killed", inject=endpoint.kill, restore=restore)
    assert "went offline" in figures["reason"], figures["reason"]
    assert not left, f"processes of the killed endpoint still alive after 60 s: {left}"


def test_service_answering_503(stack, tmp_path):
    service: LoopbackService = stack["service"]
    figures = run_fault(
        stack,
        tmp_path,
        "service 503",
        inject=lambda: service.fail_with(503),
        restore=lambda _token: service.recover(),
    )
    assert "HTTP 503" in figures["reason"], figures["reason"]
    assert service.failed_calls
