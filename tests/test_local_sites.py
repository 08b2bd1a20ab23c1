"""End to end on the real engine: both local sites (GlobusComputeEngine + HTEX workers)."""

from __future__ import annotations

import json
import os
import threading

import pytest
from apps_for_tests import add, fail_always, fail_first, gpu_visible, halve, square
from conftest import TESTS_DIR, assert_no_new_engine_processes, engine_processes

from orchestrator.config.sites import SiteConfig
from orchestrator.dispatch import Method, MethodRegistry
from orchestrator.exceptions import TimeoutException, UnknownMethodError, UnknownTopicError
from orchestrator.runner import open_session
from orchestrator.thinker import BaseThinker, agent, result_processor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SITES = [
    SiteConfig(name="t-cpu", kind="cpu", backend="local", capacity=2),
    SiteConfig(name="t-gpu", kind="gpu", backend="local", capacity=1, accelerators=["0"]),
]
METHODS = MethodRegistry(
    [
        Method(square),
        Method(add),
        Method(fail_always),
        Method(fail_first, retry_on="any"),
        Method(gpu_visible, kind="gpu"),
        Method(halve, name="generate", kind="gpu"),
        Method(square, name="simulate"),
    ]
)
TOPICS = {"a", "b", "simulate", "generate", "retry", "fail"}


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    before = {p.pid for p in engine_processes()}
    run_dir = tmp_path_factory.mktemp("run")
    with open_session(SITES, METHODS, TOPICS, run_dir, extra_paths=[str(TESTS_DIR)]) as s:
        yield s
    # The session is closed: results flushed, every engine process gone
    assert_no_new_engine_processes(before)


def test_topic_routing_and_values(session):
    q = session.queues
    for i in range(4):
        q.send_inputs(i, method="square", topic="a")
        q.send_inputs(i, b=10, method="add", topic="b")
    got_a = sorted(q.get_result("a", timeout=60).value for _ in range(4))
    got_b = sorted(q.get_result("b", timeout=60).value for _ in range(4))
    assert got_a == [0, 1, 4, 9]
    assert got_b == [10, 11, 12, 13]
    with pytest.raises(TimeoutException):
        q.get_result("a", timeout=0.05)


def test_result_record_is_complete(session):
    q = session.queues
    q.send_inputs(3.0, method="square", topic="a")
    result = q.get_result("a", timeout=60)
    assert result.success is True and result.value == 9.0
    assert result.method == "square" and result.topic == "a" and result.site == "t-cpu"
    assert result.args == (3.0,) and result.kwargs == {}
    assert result.worker_pid is not None and result.worker_pid != os.getpid()
    assert result.worker_host
    ts = result.timestamps
    stamps = [ts.created, ts.sent, ts.started, ts.finished, ts.returned, ts.received]
    assert all(s is not None for s in stamps), ts
    assert stamps == sorted(stamps), ts
    assert result.sizes.inputs and result.sizes.inputs > 0
    assert result.sizes.value and result.sizes.value > 0


def test_keep_inputs_false_drops_inputs(session):
    q = session.queues
    q.send_inputs(2.0, method="square", topic="a", keep_inputs=False)
    result = q.get_result("a", timeout=60)
    assert result.value == 4.0 and result.args == () and result.kwargs == {}  # as Colmena
    assert result.inputs == ((), {}) and result.keep_inputs is False


def test_failing_task_becomes_failed_result_and_campaign_continues(session):
    q = session.queues
    q.send_inputs("boom 42", method="fail_always", topic="fail")
    q.send_inputs(5, method="square", topic="fail")
    results = {r.method: r for r in (q.get_result("fail", timeout=60) for _ in range(2))}
    failed = results["fail_always"]
    assert failed.success is False and failed.value is None
    assert failed.failure_info is not None
    assert failed.failure_info.exception_type == "builtins.ValueError"
    assert failed.failure_info.message == "boom 42"
    assert failed.failure_info.where == "task"
    assert "fail_always" in failed.failure_info.traceback
    assert results["square"].success is True and results["square"].value == 25


def test_retries_until_success(session, tmp_path):
    q = session.queues
    counter = tmp_path / "calls"
    q.send_inputs(str(counter), 2, method="fail_first", topic="retry", max_retries=2)
    result = q.get_result("retry", timeout=60)
    assert result.success is True and result.value == 3 and result.retries == 2


def test_retry_budget_exhausted(session, tmp_path):
    q = session.queues
    counter = tmp_path / "calls"
    q.send_inputs(str(counter), 5, method="fail_first", topic="retry", max_retries=1)
    result = q.get_result("retry", timeout=60)
    assert result.success is False and result.retries == 1
    assert result.failure_info.message == "call 2 fails on purpose"


def test_gpu_methods_go_to_gpu_site(session):
    q = session.queues
    q.send_inputs(method="gpu_visible", topic="b")
    result = q.get_result("b", timeout=60)
    assert result.site == "t-gpu"
    assert result.value == "0"  # the worker was pinned to the site's accelerator


def test_unknown_topic_and_method_rejected_at_call(session):
    q = session.queues
    with pytest.raises(UnknownTopicError, match="unknown topic 'nope'.*known topics: "):
        q.send_inputs(1, method="square", topic="nope")
    with pytest.raises(UnknownMethodError, match="unknown method 'sqare'.*square"):
        q.send_inputs(1, method="sqare", topic="a")
    with pytest.raises(UnknownTopicError):
        q.get_result("nope", timeout=0.01)


def test_unserializable_argument_fails_that_task_only(session):
    q = session.queues
    q.send_inputs((i for i in range(3)), method="square", topic="fail")
    result = q.get_result("fail", timeout=60)
    assert result.success is False
    assert result.failure_info.where == "site"
    assert "could not send" in result.failure_info.message


def test_colmena_seed_slide_thinker(session):
    """The seed-slide thinker, with only its imports changed, runs on the real engine."""

    class Thinker(BaseThinker):
        def __init__(self, queues):
            super().__init__(queues)
            self.seen = []

        @result_processor(topic="simulate")
        def consumer(self, result):
            self.seen.append(result.value)
            self.queues.send_inputs(result.value, method="generate", topic="generate")
            if len(self.seen) >= 5:
                self.done.set()

        @agent
        def producer(self):
            x = 1.0
            while not self.done.is_set():
                self.queues.send_inputs(x, method="simulate", topic="simulate")
                result = self.queues.get_result(topic="generate")
                x = result.value

    thinker = Thinker(session.queues)
    thinker.run()
    assert thinker.seen[:3] == [1.0, 2.25, (2.25 / 2 + 1) ** 2]
    assert len(thinker.seen) >= 5
    # Take what the last round left in flight so later tests see clean topics
    while session.queues.active_count > 0:
        for topic in ("simulate", "generate"):
            try:
                session.queues.get_result(topic, timeout=0.1)
            except TimeoutException:
                pass


def test_raising_agent_ends_run_cleanly(session):
    class Broken(BaseThinker):
        @agent
        def crash(self):
            self.queues.send_inputs(2, method="square", topic="a")
            self.queues.get_result("a", timeout=60)
            raise RuntimeError("agent bug")

        @result_processor(topic="b")
        def idle(self, result):
            pass

    thinker = Broken(session.queues)
    runner = threading.Thread(target=thinker.run)
    runner.start()
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert thinker.done.is_set()
    assert [(name, str(exc)) for name, exc in thinker.agent_errors] == [("crash", "agent bug")]


def test_results_are_written_per_topic(session):
    q = session.queues
    q.send_inputs(7, method="square", topic="b")
    result = q.get_result("b", timeout=60)
    session.dispatcher.results.flush()
    lines = (session.run_dir / "results" / "b.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    mine = [r for r in records if r["task_id"] == result.task_id]
    assert len(mine) == 1 and mine[0]["value"] == 49 and mine[0]["site"] == "t-cpu"
    assert all(mine[0]["timestamps"][k] is not None for k in mine[0]["timestamps"])


def test_model_version_lineage_is_recorded(session):
    q = session.queues
    q.send_inputs(4, method="square", topic="b", model_version="ip-surrogate/2")
    result = q.get_result("b", timeout=60)
    assert result.model_version == "ip-surrogate/2"
    session.dispatcher.results.flush()
    lines = (session.run_dir / "results" / "b.jsonl").read_text().splitlines()
    (record,) = [json.loads(x) for x in lines if result.task_id in x]
    assert record["model_version"] == "ip-surrogate/2"
