"""Faults on the real engine: lost results, killed interchanges, pools and workers, stalls,
outages waited out. Each test injects the fault through ``LocalSite.inject`` (what
``orch launch --inject-faults`` uses) and checks every task ends with exactly one result."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from apps_for_tests import nap, nap_marked, square
from conftest import TESTS_DIR, assert_no_new_engine_processes, engine_processes

from orchestrator.config.faults import parse_faults
from orchestrator.config.sites import SiteConfig
from orchestrator.dispatch import Method, MethodRegistry
from orchestrator.dispatch.journal import Journal
from orchestrator.exceptions import ConfigError
from orchestrator.runner import Session, open_session
from orchestrator.sites import htex

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

METHODS = MethodRegistry([Method(square), Method(nap), Method(nap_marked)])
TOPICS = {"square", "nap", "nap_marked"}


def cpu(name: str, capacity: int = 2) -> SiteConfig:
    return SiteConfig(name=name, kind="cpu", backend="local", capacity=capacity)


def session(run_dir: Path, *configs: SiteConfig):
    run_dir.mkdir(parents=True, exist_ok=True)
    return open_session(
        list(configs),
        METHODS,
        TOPICS,
        run_dir,
        extra_paths=[str(TESTS_DIR)],
        journal=Journal(run_dir),
    )


def until(condition: Callable[[], object], limit: float = 60.0) -> float:
    """Poll ``condition`` until it holds; the seconds it took (fails past ``limit``)."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < limit, "condition not met in time"
        time.sleep(0.02)
    return time.monotonic() - start


def events(run_dir: Path, state: str) -> list[tuple[float, str, str, str]]:
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        return db.execute(
            "SELECT time, task_id, site, detail FROM events WHERE state = ? ORDER BY seq",
            (state,),
        ).fetchall()


def collect(s: Session, topic: str, n: int) -> list:
    return [s.queues.get_result(topic, timeout=120) for _ in range(n)]


def test_htex_attributes_orch_reads_are_there(tmp_path):
    """Fails when a Parsl / Globus Compute upgrade removes what ``sites.htex`` reads."""
    before = {p.pid for p in engine_processes()}
    with session(tmp_path / "run", cpu("reach")) as s:
        site = s.sites[0]
        s.queues.send_inputs(2, method="square", topic="square")
        assert s.queues.get_result("square", timeout=60).value == 4
        engine = site._engine  # the one reach into a site's engine, for this check only
        assert htex.interchange_pid(engine) and htex.interchange_exit_code(engine) is None
        assert len(htex.connected_managers(engine)) == 1
        assert htex.connected_blocks(engine)
        assert not htex.tracks(engine, "no such task")
        pools = htex.pool_processes(engine)
        assert len(pools) == 1 and len(htex.worker_processes(engine)) == 2
    assert_no_new_engine_processes(before)


def test_a_dropped_result_is_found_lost_and_sent_again(tmp_path):
    run_dir = tmp_path / "run"
    with session(run_dir, cpu("lossy")) as s:
        site = s.sites[0]
        assert site.inject("drop_result", random.Random(0)) is not None
        s.queues.send_inputs(3, method="square", topic="square", max_retries=1)
        result = s.queues.get_result("square", timeout=60)
        assert result.success is True and result.value == 9 and result.retries == 1
        (move,) = result.moves
        assert move.reason == "site_failure" and "task lost at site 'lossy'" in move.message
        assert "result never reached orch" in move.message
        found_after = move.time - result.timestamps.created
        # Without a retry budget the lost task fails with the reason; nothing hangs
        site.inject("drop_result", random.Random(0))
        s.queues.send_inputs(4, method="square", topic="square", max_retries=0)
        failed = s.queues.get_result("square", timeout=60)
        assert failed.success is False and failed.failure_info.reason == "site_failure"
        assert "task lost" in failed.failure_info.message
        assert s.dispatcher.lost_tasks == 2
    print(f"dropped result: found lost {found_after:.2f} s after the task was created")


@pytest.mark.parametrize("fault", ["kill_interchange", "kill_pool"])
def test_a_dead_engine_marks_the_site_down_moves_its_tasks_and_comes_back(tmp_path, fault):
    run_dir = tmp_path / "run"
    with session(run_dir, cpu("far"), cpu("near")) as s:
        far = s.sites[0]
        for i in range(8):
            s.queues.send_inputs(1.0, i, method="nap", topic="nap", max_retries=2)
        until(lambda: s.dispatcher.stats["far"].in_flight >= 2)
        until(lambda: len(htex.connected_managers(far._engine)) == 1)
        hit = time.monotonic()
        assert far.inject(fault, random.Random(1)) is not None
        down_s = until(lambda: far.is_down)
        results = collect(s, "nap", 8)
        assert sorted(r.value for r in results) == list(range(8))
        assert all(r.success for r in results)
        moved = [r for r in results if r.moves]
        assert moved and all(m.site == "far" for r in moved for m in r.moves)
        up_s = until(lambda: not far.is_down and s.dispatcher.stats["far"].down is None, 90)
        # Back up: it takes tasks again
        for i in range(8, 14):
            s.queues.send_inputs(0.2, i, method="nap", topic="nap")
        again = collect(s, "nap", 6)
        assert {r.value for r in again} == set(range(8, 14))
        assert any(r.site == "far" for r in again)
    assert [e[2] for e in events(run_dir, "site_down")] == ["far"]
    assert [e[2] for e in events(run_dir, "site_up")] == ["far"]
    lines = (run_dir / "results" / "nap.jsonl").read_text().splitlines()
    assert len(lines) == 14 and len(set(lines)) == 14
    print(
        f"{fault}: site down {down_s:.2f} s after the fault, {len(moved)} task(s) moved, "
        f"up again {up_s:.2f} s later ({time.monotonic() - hit:.1f} s after the fault)"
    )


def test_tasks_wait_out_an_outage_of_the_only_site(tmp_path):
    run_dir = tmp_path / "run"
    with session(run_dir, cpu("only")) as s:
        only = s.sites[0]
        for i in range(6):
            s.queues.send_inputs(0.5, i, method="nap", topic="nap", max_retries=1)
        until(lambda: s.dispatcher.stats["only"].in_flight >= 2)
        until(lambda: len(htex.connected_managers(only._engine)) == 1)
        only.inject("kill_pool", random.Random(2))
        until(lambda: only.is_down)
        for i in range(6, 9):  # sent during the outage: they wait, they do not fail
            s.queues.send_inputs(0.1, i, method="nap", topic="nap")
        results = collect(s, "nap", 9)
    assert all(r.success for r in results), [r.failure_info for r in results if not r.success]
    assert sorted(r.value for r in results) == list(range(9))
    waited = [e for e in events(run_dir, "waiting") if e[3] == "no cpu site is up"]
    assert len(waited) >= 3
    print(f"outage: {len(waited)} task(s) waited for the site to come back")


def test_a_killed_worker_fails_its_task_which_is_retried(tmp_path):
    marker = tmp_path / "running"
    with session(tmp_path / "run", cpu("w", capacity=1)) as s:
        site = s.sites[0]
        s.queues.send_inputs(
            2.0, 1, str(marker), method="nap_marked", topic="nap_marked", max_retries=1
        )
        until(lambda: marker.exists() and marker.read_text())
        first = int(marker.read_text())
        assert (
            site.inject("kill_worker", random.Random(3)) == f"SIGKILL to the worker (pid {first})"
        )
        result = s.queues.get_result("nap_marked", timeout=120)
    assert result.success is True and result.value == 1 and result.worker_pid != first
    assert result.retries == 1 and result.moves[0].reason == "site_failure"
    print(f"killed worker: {result.moves[0].message}")


def test_a_stalled_worker_finishes_late_not_twice(tmp_path):
    with session(tmp_path / "run", cpu("slow", capacity=1)) as s:
        site = s.sites[0]
        s.queues.send_inputs(0.5, 1, method="nap", topic="nap", max_retries=1)
        until(lambda: any(m["tasks"] for m in htex.connected_managers(site._engine)))
        stalled = time.monotonic()
        assert "SIGSTOP" in site.inject("stall_worker", random.Random(4), stall_s=2.0)
        result = s.queues.get_result("nap", timeout=60)
        took = time.monotonic() - stalled
    assert result.success is True and result.retries == 0
    print(f"stalled worker: result {took:.2f} s after a 2 s stall")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("kill_worker", "has no '='"),
        ("kill_everything=0.1", "unknown 'kill_everything'"),
        ("kill_worker=2", "kill_worker=2"),
        ("seed=3", "no fault has a rate above 0"),
    ],
)
def test_bad_fault_specs_are_one_line(spec, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_faults(spec)
    assert "\n" not in str(info.value)
