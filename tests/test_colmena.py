"""Colmena drop-in: Colmena's calls behave as in Colmena on orch (or as the README documents).

The unit tests drive orch's real queues and dispatcher over in-process thread sites; the
``slow`` tests run Colmena-style main scripts (``tests/colmena_apps/``) on orch's local sites,
with Colmena's names imported from ``orchestrator.colmena``.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_dispatch import ThreadSite, cfg

from orchestrator.colmena.exceptions import TimeoutException
from orchestrator.colmena.models import ResourceRequirements, Result
from orchestrator.colmena.queue import ColmenaQueues, PipeQueues, RedisQueues
from orchestrator.colmena.task_server import GlobusComputeTaskServer, ParslTaskServer
from orchestrator.colmena.thinker import BaseThinker, agent, event_responder
from orchestrator.dispatch import Dispatcher, Method, MethodRegistry
from orchestrator.exceptions import ConfigError, UnknownMethodError, UnknownTopicError

APPS = Path(__file__).parent / "colmena_apps"
WAIT_S = 10.0


def double(x):
    return 2 * x


def total(values, scale=1):
    return sum(values) * scale


def fail(x):
    raise ValueError(f"bad input {x}")


@pytest.fixture
def serve(tmp_path):
    """Attach queues to a dispatcher over a thread site; ``gate`` holds tasks when given."""
    made = []

    def build(queues, methods=None, gate=None):
        methods = methods or (Method(double),)
        site = ThreadSite(cfg("a", capacity=2), tmp_path, gate)
        dispatcher = Dispatcher([site], MethodRegistry(methods), queues.put_result, tmp_path)
        queues.attach(dispatcher)
        made.append((dispatcher, site))
        return dispatcher

    yield build
    for dispatcher, site in made:
        site.shutdown()
        dispatcher.close()


# --------------------------------------------------------------------- send_inputs


def test_send_inputs_without_method_runs_the_only_method(serve):
    queues = PipeQueues(topics=["sim"])
    serve(queues)
    queues.send_inputs(21, topic="sim")
    result = queues.get_result("sim", timeout=WAIT_S)
    assert result.success and result.method == "double" and result.value == 42


def test_send_inputs_without_method_among_several_names_them(serve):
    queues = PipeQueues()
    serve(queues, methods=(Method(double), Method(total)))
    with pytest.raises(UnknownMethodError, match=r"2: double, total; pass method='NAME'"):
        queues.send_inputs(1)
    assert queues.active_count == 0  # nothing was counted as sent


def test_tasks_sent_before_the_server_starts_wait_and_run(serve):
    queues = PipeQueues()
    first = queues.send_inputs(1, method="double")
    second = queues.send_inputs([1, 2], method="total", input_kwargs={"scale": 3})
    unnamed = queues.send_inputs(5)  # no method, and the server will have two
    assert queues.active_count == 3
    serve(queues, methods=(Method(double), Method(total)))
    got = {r.task_id: r for r in (queues.get_result(timeout=WAIT_S) for _ in range(3))}
    assert got[first].value == 2 and got[second].value == 9
    assert got[unnamed].success is False and got[unnamed].failure_info.reason == "bad_input"
    assert "pass method='NAME'" in got[unnamed].failure_info.message


def test_inputs_are_copied_when_sent(serve):
    gate = threading.Event()
    queues = PipeQueues()
    serve(queues, methods=(Method(total),), gate=gate)
    values = [1, 2, 3]
    queues.send_inputs(values)
    values.append(100)  # after sending, as a thinker reusing its list does
    gate.set()
    result = queues.get_result(timeout=WAIT_S)
    assert result.value == 6  # the task ran with the list as sent
    assert result.args == ([1, 2, 3],) and result.inputs == (([1, 2, 3],), {})


def test_keep_inputs_false_gives_empty_inputs(serve):
    queues = PipeQueues(keep_inputs=False)
    serve(queues)
    queues.send_inputs(4)
    result = queues.get_result(timeout=WAIT_S)
    assert result.args == () and result.kwargs == {} and result.inputs == ((), {})
    queues.send_inputs(5, keep_inputs=True)
    assert queues.get_result(timeout=WAIT_S).args == (5,)


def test_resource_requirements_are_read_under_colmenas_names(serve):
    queues = PipeQueues()
    serve(queues)  # one site of 2 cores, no mpi:
    queues.send_inputs(1, resources=ResourceRequirements(node_count=1, cpu_processes=2))
    result = queues.get_result(timeout=WAIT_S)
    assert result.success, result.failure_info
    assert (result.resources.nodes, result.resources.total_ranks) == (1, 2)
    assert (result.resources.node_count, result.resources.cpu_processes) == (1, 2)
    assert result.resources.cpu_threads == 1
    assert ResourceRequirements(node_count=2, cpu_processes=4).total_ranks == 8
    # Two nodes need a site with mpi:; four ranks need four cores: refused, not run
    for too_big in (
        ResourceRequirements(node_count=2, cpu_processes=1),
        ResourceRequirements(cpu_processes=4),
    ):
        queues.send_inputs(1, resources=too_big)
        refused = queues.get_result(timeout=WAIT_S)
        assert refused.success is False and refused.failure_info.reason == "bad_input"
        assert "no cpu site can give" in refused.failure_info.message


def test_topics_are_declared_on_the_queues():
    queues = PipeQueues(topics=["simulate"])
    assert queues.topics == {"simulate", "default"}
    with pytest.raises(UnknownTopicError, match=r"'train'.*PipeQueues\(topics=\[\.\.\.\]\)"):
        queues.send_inputs(1, topic="train")
    assert isinstance(RedisQueues(["a"], hostname="x", port=1), ColmenaQueues)


# --------------------------------------------------------------------- results


def test_result_reads_colmenas_fields(serve):
    queues = PipeQueues()
    serve(queues)
    queues.send_inputs(3, task_info={"batch": 7})
    result = queues.get_result(timeout=WAIT_S)
    stamp = result.timestamp
    assert stamp.created <= stamp.compute_started <= stamp.compute_ended
    assert stamp.compute_ended <= stamp.task_received <= stamp.result_received
    assert stamp.result_received == result.timestamps.received
    assert result.time.running == pytest.approx(
        result.timestamps.finished - result.timestamps.started
    )
    assert result.task_info == {"batch": 7} and result.complete
    assert result.worker_info is not None and result.worker_info.pid == result.worker_pid


def test_failure_info_exception_is_the_exceptions_repr(serve):
    queues = PipeQueues()
    serve(queues, methods=(Method(fail, max_retries=0),))
    result = queues.get_result(timeout=WAIT_S) if queues.send_inputs(5) else None
    assert result is not None and result.success is False
    assert result.failure_info.exception == repr(ValueError("bad input 5"))
    assert "bad input 5" in result.failure_info.traceback


def test_result_json_exclude_inputs_with_arguments_json_cannot_hold(serve):
    queues = PipeQueues()
    serve(queues, methods=(Method(total),))
    queues.send_inputs({1, 2}, scale=complex(1, 0))  # a set and a complex: not JSON
    result = queues.get_result(timeout=WAIT_S)
    data = json.loads(result.json(exclude={"inputs"}))
    assert not {"inputs", "args", "kwargs"} & data.keys()
    assert data["value"] == str(complex(3, 0)).strip("()") and data["method"] == "total"
    assert set(data["timestamp"]) >= {"created", "compute_started", "result_received"}
    assert data["time"]["running"] == pytest.approx(result.time.running)
    whole = json.loads(result.json())
    assert whole["inputs"] == [[[1, 2]], {"scale": "1+0j"}]
    assert "value" not in json.loads(result.json(exclude={"inputs": True, "value": True}))


def test_result_made_by_hand_as_in_colmena():
    result = Result(inputs=((1,), {"a": 2}), value=4, method="f")
    assert result.args == (1,) and result.kwargs == {"a": 2} and result.value == 4
    assert result.topic == "default" and result.task_id


# --------------------------------------------------------------------- client calls


def test_timeout_is_not_caught_by_except_exception():
    queues = PipeQueues()
    caught = []
    with pytest.raises(TimeoutException):
        try:
            queues.get_result(timeout=0.01)
        except Exception as exc:  # noqa: BLE001 - what a thinker guarding its task errors writes
            caught.append(exc)
    assert caught == []
    assert not issubclass(TimeoutException, Exception)


def test_wait_until_done_and_active_count(serve):
    gate = threading.Event()
    queues = PipeQueues()
    serve(queues, gate=gate)
    for i in range(3):
        queues.send_inputs(i)
    assert queues.active_count == 3
    assert queues.wait_until_done(timeout=0.05) is False
    gate.set()
    for _ in range(3):
        queues.get_result(timeout=WAIT_S)
    assert queues.active_count == 0
    assert queues.wait_until_done(timeout=0) is True


def test_flush_throws_results_away(serve):
    queues = PipeQueues()
    serve(queues)
    for i in range(2):
        queues.send_inputs(i)
    assert queues.wait_delivered(WAIT_S)
    assert queues.flush() == 2
    assert queues.active_count == 0 and queues.wait_until_done(0)
    with pytest.raises(TimeoutException):
        queues.get_result(timeout=0.01)


def test_send_kill_signal_refuses_new_tasks_and_keeps_those_in_flight(serve):
    gate = threading.Event()
    queues = PipeQueues()
    serve(queues, gate=gate)
    running = queues.send_inputs(1)
    queues.send_kill_signal()
    assert queues.killed.is_set()
    late = queues.send_inputs(2)
    refused = queues.get_result(timeout=WAIT_S)  # at once: the gate still holds the first
    assert refused.task_id == late and refused.success is False
    assert refused.failure_info.reason == "cancelled"
    assert "send_kill_signal" in refused.failure_info.message
    gate.set()
    finished = queues.get_result(timeout=WAIT_S)
    assert finished.task_id == running and finished.value == 2


# --------------------------------------------------------------------- thinker


def test_thinker_takes_queue_as_a_keyword():
    queues = PipeQueues()

    class T(BaseThinker):
        @agent
        def noop(self):
            pass

    assert T(queue=queues).queues is queues
    assert T(queues=queues).queues is queues
    with pytest.raises(TypeError, match="not both"):
        T(queue=queues, queues=PipeQueues())
    assert queues.role == "client"  # Colmena's thinker sets its queues' role


def test_results_on_a_topic_nobody_processes_do_not_hold_the_end(serve):
    """Default draining waits for processed topics only (a deliberate difference)."""
    from orchestrator.colmena.thinker import result_processor

    queues = PipeQueues(topics=["kept", "ignored"])
    serve(queues)

    class T(BaseThinker):
        def __init__(self, queues):
            super().__init__(queues)
            self.values = []

        @agent
        def send(self):
            queues.send_inputs(1, topic="ignored")
            for i in range(3):
                queues.send_inputs(i, topic="kept")

        @result_processor(topic="kept")
        def take(self, result):
            self.values.append(result.value)

    thinker = T(queues)
    thinker.start()
    thinker.join(WAIT_S)
    assert not thinker.is_alive()
    assert sorted(thinker.values) == [0, 2, 4]  # every result in flight at done was taken


def test_two_responders_ending_the_campaign_both_finish_and_log(caplog):
    class T(BaseThinker):
        def __init__(self, queues):
            super().__init__(queues, logger_name="two_responders")
            self.flag = threading.Event()
            self.ran = []

        @agent(startup=True)
        def trigger(self):
            self.flag.set()

        @event_responder(event_name="flag")
        def first(self):
            self.ran.append("first")
            self.done.set()

        @event_responder(event_name="flag")
        def second(self):
            self.ran.append("second")
            self.done.set()

    caplog.set_level(logging.INFO, logger="two_responders")
    thinker = T(PipeQueues())
    thinker.start()
    thinker.join(WAIT_S)
    assert not thinker.is_alive() and thinker.agent_errors == []
    assert sorted(thinker.ran) == ["first", "second"]
    complete = [r for r in caplog.records if "All responses to event 'flag' complete" in r.message]
    assert len(complete) == 1


# --------------------------------------------------------------------- task servers


def test_parsl_config_becomes_local_sites(tmp_path):
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor

    config = Config(
        executors=[
            HighThroughputExecutor(label="cpu_htex", max_workers_per_node=3),
            HighThroughputExecutor(label="gpus", available_accelerators=["0", "1"]),
            ThreadPoolExecutor(label="threads", max_threads=2),
        ]
    )
    server = ParslTaskServer(
        [double, (total, {"executors": ["gpus"]})], PipeQueues(), config, run_dir=tmp_path
    )
    sites = {s.name: (s.kind, s.capacity, s.backend) for s in server.site_configs}
    assert sites == {
        "cpu_htex": ("cpu", 3, "local"),
        "gpus": ("gpu", 2, "local"),
        "threads": ("cpu", 2, "local"),
    }
    kinds = {m.name: (m.kind, m.max_retries) for m in server.methods}
    assert kinds == {"double": ("cpu", 0), "total": ("gpu", 0)}
    with pytest.raises(ConfigError, match="executors nope are not in the Parsl config"):
        ParslTaskServer([(double, {"executors": ["nope"]})], PipeQueues(), config)


def test_globus_endpoints_become_globus_sites(tmp_path):
    ep1, ep2 = "4b116d3c-1703-4f8f-9f6f-39921e5864df", "0b4e042e-1ab4-4e4a-9f0f-0d1a7b1b2c3d"
    server = GlobusComputeTaskServer(
        {double: ep1, total: ep2, fail: ep1}, None, PipeQueues(), run_dir=tmp_path
    )
    sites = [(s.name, s.backend, str(s.endpoint_id)) for s in server.site_configs]
    assert sites == [("endpoint-1", "globus", ep1), ("endpoint-2", "globus", ep2)]
    assert server.method_names == {"double", "total", "fail"}


# --------------------------------------------------------------------- applications


def run_app(script: str, tmp_path: Path, *args: str) -> dict:
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(APPS / script), str(run_dir), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("server", ["local", "parsl"])
def test_main_script_with_queues_task_server_and_thinker(tmp_path, server):
    out = run_app("streaming.py", tmp_path, *(["--parsl"] if server == "parsl" else []))
    results = out["results"]
    assert out["exitcode"] == 0
    assert sorted(r["n"] for r in results) == [1, 2, 3, 4, 5, 6]
    assert all(r["success"] and r["value"] == r["x"] ** 2 for r in results)
    assert all(r["created"] <= r["received"] and r["running"] >= 0 for r in results)
    assert all(r["sizes"]["inputs"] > 0 and r["sizes"]["value"] > 0 for r in results)
    assert all(r["host"] for r in results)
    lines = (tmp_path / "run-results.jsonl").read_text().splitlines()
    written = [json.loads(line) for line in lines]
    assert len(written) == 6 and not any("inputs" in w or "value" in w for w in written)
    # the run is orch's: its journal and results files are there, orch status reads it
    status = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "status", str(tmp_path / "run"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    facts = json.loads(status.stdout)
    assert facts["state"] == "ended"
    assert sum(m["done"] for m in facts["methods"]) == 6


@pytest.mark.slow
def test_simple_optimizer_finds_the_minimum(tmp_path):
    out = run_app("optimizer.py", tmp_path)
    assert out["exitcode"] == 0 and out["count"] == 24 and out["active"] == 0
    best_x, best_y = out["best"]
    assert abs(best_x - 3.0) < 0.5 and best_y == pytest.approx((best_x - 3.0) ** 2)
    assert out["most_in_flight"] == 2  # as many tasks in flight as slots, never more


@pytest.mark.slow
def test_event_responder_moves_slots_between_pools(tmp_path):
    out = run_app("reallocate.py", tmp_path)
    assert out["exitcode"] == 0 and out["errors"] == []
    assert out["data"] == [2 * n for n in range(1, 13)]
    assert len(out["models"]) >= 2  # retrained after results 4 and 8 (and maybe 12)
    assert all(pools == {"ml": 1, "sim": 2} for pools in out["during"])
    assert out["end"] == {"ml": 0, "sim": 3}  # the borrowed slot went back
