"""Dispatcher placement, backlog, retries and site-down handling on fast thread-pool sites.

These sites run ``run_task`` in a thread pool (the fast unit-test site the design allows);
the real engine is exercised in test_local_sites.py.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from orchestrator.apps.runtime import run_task
from orchestrator.config.sites import SiteConfig
from orchestrator.data import DataConfig, DataPlane
from orchestrator.dispatch import Dispatcher, Method, MethodRegistry
from orchestrator.dispatch.journal import JOURNAL_NAME, Journal
from orchestrator.exceptions import ConfigError, SiteUnavailableError, TimeoutException
from orchestrator.models import Result, Task
from orchestrator.queues import Queues
from orchestrator.sites.base import Outcome, Site


class ThreadSite(Site):
    """Runs tasks in a thread pool; ``gate`` can hold every task until released."""

    def __init__(self, config, run_dir, gate: threading.Event | None = None):
        super().__init__(config, run_dir)
        self.gate = gate
        self.pool = ThreadPoolExecutor(max_workers=config.capacity)
        self.submitted = 0

    def start(self):
        pass

    def submit(self, fn, args, kwargs, walltime=None, task_id=None, resources=None) -> Future:
        if self.is_down:
            raise SiteUnavailableError(self.down_reason)
        self.submitted += 1

        def call():
            if self.gate is not None:
                self.gate.wait(30)
            return run_task(fn, args, kwargs)

        return self.pool.submit(call)

    def outcome(self, future) -> Outcome:
        if future.exception() is not None:
            return Outcome.site_failure("Lost", str(future.exception()))
        return Outcome.from_worker(future.result(), input_size=None, value_size=None)

    def shutdown(self):
        if self.gate is not None:
            self.gate.set()
        self.pool.shutdown(wait=True)


def ident(x):
    return x


def boom(x):
    raise KeyError(x)


def cfg(name, kind="cpu", capacity=2, max_in_flight=None):
    return SiteConfig(
        name=name, kind=kind, backend="local", capacity=capacity, max_in_flight=max_in_flight
    )


DEFAULT_METHODS = (Method(ident), Method(boom))


@pytest.fixture
def make(tmp_path):
    made = []

    def build(sites, methods=DEFAULT_METHODS, **options):
        queues = Queues({"t"})
        dispatcher = Dispatcher(
            sites, MethodRegistry(methods), queues.put_result, tmp_path, **options
        )
        queues.attach(dispatcher)
        made.append((dispatcher, sites))
        return queues, dispatcher

    yield build
    for dispatcher, sites in made:
        for site in sites:
            site.shutdown()
        dispatcher.close()


def test_tasks_spread_across_sites_of_the_kind(make, tmp_path):
    gate = threading.Event()
    a, b = ThreadSite(cfg("a"), tmp_path, gate), ThreadSite(cfg("b"), tmp_path, gate)
    queues, dispatcher = make([a, b])
    for i in range(6):
        queues.send_inputs(i, method="ident", topic="t")
    # Held at the sites by the gate: placement alternated by load
    assert (a.submitted, b.submitted) == (3, 3)
    assert dispatcher.stats["a"].running == 2 and dispatcher.stats["a"].queued == 1
    gate.set()
    sites = Counter(queues.get_result("t", timeout=10).site for _ in range(6))
    assert sites == {"a": 3, "b": 3}


def test_capacity_weighted_placement(make, tmp_path):
    gate = threading.Event()
    big = ThreadSite(cfg("big", capacity=3), tmp_path, gate)
    small = ThreadSite(cfg("small", capacity=1), tmp_path, gate)
    queues, _ = make([big, small])
    for i in range(8):
        queues.send_inputs(i, method="ident", topic="t")
    assert (big.submitted, small.submitted) == (6, 2)
    gate.set()
    for _ in range(8):
        queues.get_result("t", timeout=10)


def test_backlog_waits_for_room_then_drains(make, tmp_path):
    gate = threading.Event()
    site = ThreadSite(cfg("only", capacity=1, max_in_flight=2), tmp_path, gate)
    queues, dispatcher = make([site])
    for i in range(5):
        queues.send_inputs(i, method="ident", topic="t")
    assert site.submitted == 2 and dispatcher.waiting("cpu") == 3
    gate.set()
    values = sorted(queues.get_result("t", timeout=10).value for _ in range(5))
    assert values == [0, 1, 2, 3, 4]
    assert site.submitted == 5 and dispatcher.waiting("cpu") == 0


def test_kinds_are_respected(make, tmp_path):
    cpu, gpu = ThreadSite(cfg("c"), tmp_path), ThreadSite(cfg("g", kind="gpu"), tmp_path)
    queues, _ = make([cpu, gpu], methods=[Method(ident), Method(boom, kind="gpu")])
    queues.send_inputs(1, method="ident", topic="t")
    queues.send_inputs(1, method="boom", topic="t")
    got = {r.method: r.site for r in (queues.get_result("t", timeout=10) for _ in range(2))}
    assert got == {"ident": "c", "boom": "g"}


def test_missing_kind_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no site of kind gpu for method.*boom.*kind: gpu"):
        Dispatcher(
            [ThreadSite(cfg("c"), tmp_path)],
            MethodRegistry([Method(ident), Method(boom, kind="gpu")]),
            lambda r: None,
            tmp_path,
        )


def test_down_site_gets_no_new_tasks(make, tmp_path):
    a, b = ThreadSite(cfg("a"), tmp_path), ThreadSite(cfg("b"), tmp_path)
    queues, dispatcher = make([a, b])
    a.mark_down("site 'a': unreachable (test)")
    for i in range(4):
        queues.send_inputs(i, method="ident", topic="t")
    results = [queues.get_result("t", timeout=10) for _ in range(4)]
    assert {r.site for r in results} == {"b"} and all(r.success for r in results)
    assert dispatcher.stats["a"].down == "site 'a': unreachable (test)"


class LosingSite(ThreadSite):
    """Goes down with its first task: the task comes back as a site failure."""

    def outcome(self, future):
        self.mark_down("site 'lossy': workers lost")
        return Outcome.site_failure("WorkerLost", "workers lost")


def test_in_flight_task_fails_over_within_retry_budget(make, tmp_path):
    lossy, good = LosingSite(cfg("lossy"), tmp_path), ThreadSite(cfg("good"), tmp_path)
    queues, dispatcher = make([lossy, good])
    dispatcher._last_used["good"] = 10**9  # make the first placement pick 'lossy'
    queues.send_inputs(7, method="ident", topic="t", max_retries=1)
    result = queues.get_result("t", timeout=10)
    assert result.success is True and result.site == "good" and result.retries == 1
    assert [(m.site, m.reason, m.message) for m in result.moves] == [
        ("lossy", "site_failure", "workers lost")
    ]
    assert dispatcher.stats["lossy"].moved == 1
    queues.send_inputs(8, method="ident", topic="t")  # no budget needed: lossy is down
    assert queues.get_result("t", timeout=10).site == "good"


class RevivingSite(LosingSite):
    """Loses its first task, then answers when the dispatcher tries to revive it."""

    def __init__(self, config, run_dir):
        super().__init__(config, run_dir)
        self.revive_calls = 0
        self.lost_one = False

    def outcome(self, future):
        if not self.lost_one:
            self.lost_one = True
            return super().outcome(future)
        return ThreadSite.outcome(self, future)

    def try_revive(self):
        self.revive_calls += 1
        if self.revive_calls < 2:  # the first try finds it still down
            return False
        self.mark_up()
        return True


def test_down_site_is_tried_again_and_takes_tasks_once_up(make, tmp_path):
    site = RevivingSite(cfg("flaky", capacity=1), tmp_path)
    queues, dispatcher = make([site], down_retry=0.01)
    queues.send_inputs(1, method="ident", topic="t", max_retries=0)
    lost = queues.get_result("t", timeout=10)
    assert lost.success is False and lost.failure_info.reason == "site_failure"
    deadline = threading.Event()
    for _ in range(1000):  # wait (bounded) for the revive tries to bring it back
        if dispatcher.stats["flaky"].down is None:  # set once try_revive has returned True
            break
        deadline.wait(0.01)
    assert dispatcher.stats["flaky"].down is None
    assert not site.is_down and site.revive_calls == 2
    queues.send_inputs(2, method="ident", topic="t")
    back = queues.get_result("t", timeout=10)
    assert back.success is True and back.site == "flaky"


class StuckSite(ThreadSite):
    """Never returns: models a worker stuck where it cannot stop itself."""

    def submit(self, fn, args, kwargs, walltime=None, task_id=None, resources=None) -> Future:
        self.submitted += 1
        return Future()


def test_task_past_walltime_is_reported_by_orch_and_retried(make, tmp_path):
    stuck, good = StuckSite(cfg("stuck"), tmp_path), ThreadSite(cfg("good"), tmp_path)
    queues, dispatcher = make(
        [stuck, good], methods=[Method(ident, walltime=0.05)], walltime_grace=0.05
    )
    dispatcher._last_used["good"] = 10**9  # first placement on 'stuck'
    queues.send_inputs(5, method="ident", topic="t", max_retries=1)
    result = queues.get_result("t", timeout=10)
    assert result.success is True and result.site == "good" and result.value == 5
    assert [(m.site, m.reason) for m in result.moves] == [("stuck", "timeout")]
    assert "wall time of 0.05 s" in result.moves[0].message
    assert dispatcher.stats["stuck"].in_flight == 0 and dispatcher.stats["stuck"].moved == 1


def test_retry_backoff_doubles_up_to_the_cap():
    method = Method(ident, backoff=2.0)
    assert [method.retry_delay(n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert method.retry_delay(30) == 300.0
    assert Method(ident).retry_delay(3) == 0.0


def test_retry_waits_for_backoff_then_moves(make, tmp_path):
    lossy, good = LosingSite(cfg("lossy"), tmp_path), ThreadSite(cfg("good"), tmp_path)
    queues, dispatcher = make([lossy, good], methods=[Method(ident, backoff=0.05)])
    dispatcher._last_used["good"] = 10**9
    queues.send_inputs(3, method="ident", topic="t")
    result = queues.get_result("t", timeout=10)
    assert result.success is True and result.site == "good"
    assert result.timestamps.sent - result.moves[0].time >= 0.05


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retry_on": "sometimes"}, "retry_on must be 'any' or a set"),
        ({"backoff": -1}, "backoff must be >= 0"),
        ({"walltime": 0}, "walltime must be > 0"),
    ],
)
def test_bad_retry_settings_are_rejected(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Method(ident, **kwargs)


def test_in_flight_task_without_budget_fails_with_reason(make, tmp_path):
    queues, _ = make([LosingSite(cfg("lossy"), tmp_path)])
    queues.send_inputs(7, method="ident", topic="t", max_retries=0)
    result = queues.get_result("t", timeout=10)
    assert result.success is False and result.failure_info.where == "site"
    assert result.failure_info.message == "workers lost"
    assert result.moves == []


class OutageSite(ThreadSite):
    """Down until ``answering`` is set; then the dispatcher's revive brings it back."""

    def __init__(self, config, run_dir, gate=None):
        super().__init__(config, run_dir, gate)
        self.answering = threading.Event()

    def try_revive(self):
        if not self.answering.is_set():
            return False
        self.mark_up()
        return True


def test_tasks_wait_out_an_outage_then_run(make, tmp_path):
    gate = threading.Event()
    site = OutageSite(cfg("only", capacity=1, max_in_flight=1), tmp_path, gate)
    queues, dispatcher = make([site], down_retry=0.01)
    states: list[tuple[str, str]] = []
    dispatcher.listeners.append(lambda state, task, s: states.append((state, task.args[0])))
    queues.send_inputs(1, method="ident", topic="t")
    queues.send_inputs(2, method="ident", topic="t")  # waits in the backlog: no room
    site.mark_down("site 'only': service unreachable")
    queues.send_inputs(3, method="ident", topic="t")  # waits: no cpu site is up
    assert dispatcher.waiting("cpu") == 2
    assert ("waiting", 3) in states
    gate.set()
    assert queues.get_result("t", timeout=10).args == (1,)  # it was running: it finishes
    site.answering.set()
    later = [queues.get_result("t", timeout=10) for _ in range(2)]
    assert sorted(r.args[0] for r in later) == [2, 3]
    assert all(r.success and r.site == "only" and r.retries == 0 for r in later)


def test_outage_longer_than_site_wait_fails_with_no_site(make, tmp_path):
    site = OutageSite(cfg("only"), tmp_path)
    queues, dispatcher = make([site], down_retry=0.01, site_wait=0.05, monitor_interval=0.01)
    site.mark_down("site 'only': service unreachable")
    queues.send_inputs(1, method="ident", topic="t", max_retries=3)
    result = queues.get_result("t", timeout=10)
    assert result.success is False and result.failure_info.reason == "no_site"
    assert result.retries == 0  # no_site is not retried by default
    assert "no cpu site came back within site_wait (0.05 s)" in result.failure_info.message
    assert "service unreachable" in result.failure_info.message
    assert dispatcher.waiting("cpu") == 0


def test_task_error_not_retried_by_default(make, tmp_path):
    queues, dispatcher = make([ThreadSite(cfg("a"), tmp_path)])
    queues.send_inputs("k", method="boom", topic="t", max_retries=2)
    result = queues.get_result("t", timeout=10)
    assert result.success is False and result.retries == 0
    assert dispatcher.stats["a"].failed == 1


def test_failed_task_retried_then_reported(make, tmp_path):
    queues, dispatcher = make(
        [ThreadSite(cfg("a"), tmp_path)], methods=[Method(boom, retry_on="any")]
    )
    seen: list[str] = []
    dispatcher.listeners.append(lambda state, task, site: seen.append(state))
    queues.send_inputs("k", method="boom", topic="t", max_retries=2)
    result = queues.get_result("t", timeout=10)
    assert result.success is False and result.retries == 2
    assert result.failure_info.exception_type == "builtins.KeyError"
    assert seen == [
        "submitted",
        "sent",
        "retried",
        "sent",
        "retried",
        "sent",
        "failed",
        "received",
    ]
    assert dispatcher.stats["a"].failed == 3
    assert [m.reason for m in result.moves] == ["builtins.KeyError"] * 2
    assert all(m.site == "a" for m in result.moves)


def test_method_default_retries(make, tmp_path):
    methods = [Method(boom, max_retries=1, retry_on="any")]
    queues, _ = make([ThreadSite(cfg("a"), tmp_path)], methods=methods)
    queues.send_inputs("k", method="boom", topic="t")
    assert queues.get_result("t", timeout=10).retries == 1


def test_results_writer_appends_json_lines(make, tmp_path):
    queues, dispatcher = make([ThreadSite(cfg("a"), tmp_path)])
    for i in range(3):
        queues.send_inputs(i, method="ident", topic="t")
    for _ in range(3):
        queues.get_result("t", timeout=10)
    assert dispatcher.results.flush(timeout=10)
    lines = (tmp_path / "results" / "t.jsonl").read_text().splitlines()
    records = [Result.model_validate_json(line) for line in lines]
    assert sorted(r.value for r in records) == [0, 1, 2]
    assert all(r.timestamps.received is not None for r in records)


def test_undelivered_results_written_at_close(tmp_path):
    site = ThreadSite(cfg("a"), tmp_path)
    queues = Queues({"t"})
    dispatcher = Dispatcher([site], MethodRegistry([Method(ident)]), queues.put_result, tmp_path)
    queues.attach(dispatcher)
    queues.send_inputs(5, method="ident", topic="t")
    site.shutdown()  # waits for the task, whose result now sits in the topic queue
    dispatcher.undelivered(queues.drain())
    dispatcher.close()
    record = Result.model_validate_json((tmp_path / "results" / "t.jsonl").read_text())
    assert record.value == 5 and record.timestamps.received is None


def test_send_after_close_is_refused(tmp_path):
    site = ThreadSite(cfg("a"), tmp_path)
    dispatcher = Dispatcher([site], MethodRegistry([Method(ident)]), lambda r: None, tmp_path)
    dispatcher.close()
    with pytest.raises(SiteUnavailableError, match="shutting down"):
        dispatcher.submit(Task(method="ident", topic="t", args=(1,), kwargs={}))
    site.shutdown()


# -- cancel, drain, capacity (orch cancel / drain / undrain) -------------------------------


def test_cancel_on_a_site_without_remote_cancel_frees_the_slot_and_ignores_the_result(
    make, tmp_path
):
    gate = threading.Event()
    site = ThreadSite(cfg("remote", capacity=1, max_in_flight=1), tmp_path, gate=gate)
    queues, dispatcher = make([site])
    first = queues.send_inputs(1, method="ident", topic="t")
    second = queues.send_inputs(2, method="ident", topic="t")  # waits in orch: no room
    assert dispatcher.waiting("cpu") == 1
    found = dispatcher.cancel([first, "no-such-task"])
    assert found[first].startswith("cancelled on remote: the site has no remote cancel")
    assert found["no-such-task"].startswith("not running or waiting")
    cancelled = queues.get_result("t", timeout=10)
    assert cancelled.task_id == first and cancelled.success is False
    assert cancelled.failure_info.reason == "cancelled" and cancelled.retries == 0
    assert dispatcher.waiting("cpu") == 0  # the freed slot took the waiting task at once
    assert site.submitted == 2
    gate.set()  # the cancelled task's own result now comes back, and is ignored
    done = queues.get_result("t", timeout=10)
    assert done.task_id == second and done.success is True
    with pytest.raises(TimeoutException, match="no result"):
        queues.get_result("t", timeout=0.3)


def test_cancel_by_method_takes_waiting_and_delayed_tasks(make, tmp_path):
    gate = threading.Event()
    site = ThreadSite(cfg("one", capacity=1, max_in_flight=1), tmp_path, gate=gate)
    queues, dispatcher = make([site])
    ids = [queues.send_inputs(i, method="ident", topic="t") for i in range(3)]
    found = dispatcher.cancel(method="ident")
    assert set(found) == set(ids)
    assert sum(how == "cancelled before it was sent to a site" for how in found.values()) == 2
    reasons = [queues.get_result("t", timeout=10).failure_info.reason for _ in ids]
    assert reasons == ["cancelled"] * 3
    assert dispatcher.in_flight() == 0


def test_drain_sends_nothing_new_and_capacity_follows(make, tmp_path):
    a, b = ThreadSite(cfg("a", capacity=2), tmp_path), ThreadSite(cfg("b", capacity=3), tmp_path)
    queues, dispatcher = make([a, b])
    seen: list[tuple[str, int]] = []
    dispatcher.capacity_listeners.append(lambda kind, n: seen.append((kind, n)))
    assert dispatcher.capacity("cpu") == 5
    assert "drained" in dispatcher.drain("b")
    assert "already drained" in dispatcher.drain("b")
    for i in range(6):
        queues.send_inputs(i, method="ident", topic="t")
    sites = {queues.get_result("t", timeout=10).site for _ in range(6)}
    assert sites == {"a"} and b.submitted == 0
    assert dispatcher.capacity("cpu") == 2 and dispatcher.snapshot()["sites"]["b"]["drained"]
    dispatcher.drain("b", drained=False)
    a.mark_down("test: a is down")
    assert seen == [("cpu", 2), ("cpu", 5), ("cpu", 3)]
    queues.send_inputs(9, method="ident", topic="t")
    assert queues.get_result("t", timeout=10).site == "b"
    with pytest.raises(KeyError, match="no site 'c'"):
        dispatcher.drain("c")


def test_method_resources_are_the_default_and_a_call_overrides_them(make, tmp_path):
    gate = threading.Event()
    site = ThreadSite(cfg("a", capacity=2), tmp_path, gate)
    queues, dispatcher = make([site], methods=[Method(ident, resources={"ranks": 2})])
    queues.send_inputs(1, method="ident", topic="t")  # the method's 2 ranks: both cores
    queues.send_inputs(2, method="ident", topic="t", resources={"ranks": 1})
    assert (site.submitted, dispatcher.waiting("cpu")) == (1, 1)  # the second waits its core
    assert (dispatcher.stats["a"].in_flight, dispatcher.stats["a"].slots_used) == (1, 2)
    gate.set()
    results = {r.value: r for r in (queues.get_result("t", timeout=10) for _ in range(2))}
    assert results[1].resources.total_ranks == 2 and results[2].resources.total_ranks == 1
    assert dispatcher.stats["a"].slots_used == 0


def test_small_tasks_do_not_overtake_a_wide_one_waiting(make, tmp_path):
    gate = threading.Event()
    site = ThreadSite(cfg("a", capacity=2), tmp_path, gate)
    queues, dispatcher = make([site])
    queues.send_inputs(1, method="ident", topic="t")
    wide = queues.send_inputs(2, method="ident", topic="t", resources={"ranks": 2})
    queues.send_inputs(3, method="ident", topic="t")  # room for it, but it queues behind
    assert (site.submitted, dispatcher.waiting("cpu")) == (1, 2)
    gate.set()
    got = {r.value: r for r in (queues.get_result("t", timeout=10) for _ in range(3))}
    starts = {value: r.timestamps.started for value, r in got.items()}
    finished = {value: r.timestamps.finished for value, r in got.items()}
    assert got[2].task_id == wide
    assert starts[2] >= finished[1]  # the wide task had both cores to itself
    assert starts[3] >= finished[2]  # and the small one after it waited its turn


def size(data, tag):
    return len(data) + len(tag)


def test_bytes_that_are_not_utf8_are_written_to_results_files_as_base64(make, tmp_path):
    queues, dispatcher = make([ThreadSite(cfg("a"), tmp_path)])
    raw = b"\xff\xfe\x00 not text"
    queues.send_inputs(raw, method="ident", topic="t")
    assert queues.get_result("t", timeout=10).value == raw
    assert dispatcher.results.flush(timeout=10)
    record = json.loads((tmp_path / "results" / "t.jsonl").read_text())
    assert base64.urlsafe_b64decode(record["value"]) == raw
    assert base64.urlsafe_b64decode(record["args"][0]) == raw


def test_inputs_sent_by_proxy_stay_out_of_results_files_and_journal_and_replay(tmp_path):
    big = bytes(range(256)) * 2000  # 512 kB, over the 100 kB threshold, not UTF-8
    tag = b"\xfftag"
    store = DataConfig(connector="file", path=tmp_path / "store", threshold_bytes=100_000)

    def session(resume: bool) -> Result:
        site = ThreadSite(cfg("a"), tmp_path)
        journal = Journal(tmp_path, resume=resume)
        with DataPlane({"a": store}) as plane:
            queues = Queues({"t"})
            dispatcher = Dispatcher(
                [site],
                MethodRegistry([Method(size)]),
                queues.put_result,
                tmp_path,
                data=plane,
                journal=journal,
            )
            queues.attach(dispatcher)
            queues.send_inputs(big, tag, method="size", topic="t")
            result = queues.get_result("t", timeout=10)
            site.shutdown()
            dispatcher.close()
        return result

    first = session(resume=False)
    assert first.success and first.value == len(big) + len(tag)
    assert first.inputs_by_proxy == [0] and first.args == (big, tag)  # the thinker's own
    record = json.loads((tmp_path / "results" / "t.jsonl").read_text())
    assert record["args"] == [{"proxy": True}, base64.urlsafe_b64encode(tag).decode()]
    with sqlite3.connect(tmp_path / JOURNAL_NAME) as db:
        (blob,) = db.execute("SELECT result FROM results").fetchone()
    assert big not in blob and len(blob) < len(big) // 10

    again = session(resume=True)  # same inputs: replayed, with the caller's inputs put back
    assert again.replayed and again.task_id == first.task_id
    assert again.args == (big, tag) and again.value == first.value
