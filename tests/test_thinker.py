"""Tests for the thinker programming model: BaseThinker and its agent decorators."""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import pytest

from orchestrator.exceptions import TimeoutException
from orchestrator.thinker import (
    AgentSpec,
    BaseThinker,
    ResourceCounter,
    agent,
    agent_spec,
    event_responder,
    result_processor,
    task_submitter,
)

WAIT_S = 5.0  # generous bound on any wait; a passing test never comes close


# --------------------------------------------------------------------- queue double


@dataclass
class FakeResult:
    """Just enough of a Result for thinkers: value, method, topic, inputs."""

    value: Any
    method: str = "fake"
    topic: str = "default"
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    task_id: str = ""


class FakeQueues:
    """In-memory stand-in for the campaign queues: one queue.Queue of results per topic.

    With ``echo`` (default), ``send_inputs`` puts a result straight onto the topic (its value
    is the first argument); without it, tests feed results with :meth:`put`.
    """

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.sent: list[FakeResult] = []
        self._lock = threading.Lock()
        self._topics: dict[str, queue.Queue[FakeResult]] = {}
        self._ids = itertools.count()

    def _queue(self, topic: str) -> queue.Queue[FakeResult]:
        with self._lock:
            return self._topics.setdefault(topic, queue.Queue())

    def send_inputs(
        self,
        *input_args: Any,
        method: str,
        topic: str = "default",
        keep_inputs: bool = True,
        resources: Any = None,
        max_retries: int = 0,
        **input_kwargs: Any,
    ) -> str:
        task_id = f"task-{next(self._ids)}"
        result = FakeResult(
            value=input_args[0] if input_args else None,
            method=method,
            topic=topic,
            args=input_args,
            kwargs=input_kwargs,
            task_id=task_id,
        )
        with self._lock:
            self.sent.append(result)
        if self.echo:
            self._queue(topic).put(result)
        return task_id

    def put(self, topic: str, value: Any) -> None:
        self._queue(topic).put(FakeResult(value=value, topic=topic))

    def get_result(self, topic: str = "default", timeout: float | None = None) -> FakeResult:
        try:
            return self._queue(topic).get(timeout=timeout)
        except queue.Empty:
            raise TimeoutException(f"no result on {topic!r} within {timeout} s") from None


class CountingQueues(FakeQueues):
    """FakeQueues that also report tasks in flight, as the real queues' ``active_count``."""

    def __init__(self) -> None:
        super().__init__(echo=False)
        self.returned = 0

    def get_result(self, topic: str = "default", timeout: float | None = None) -> FakeResult:
        result = super().get_result(topic, timeout)
        with self._lock:
            self.returned += 1
        return result

    @property
    def active_count(self) -> int:
        with self._lock:
            return len(self.sent) - self.returned


class RecordingEvent(threading.Event):
    """An Event that signals ``cleared`` when cleared, so tests can wait for it."""

    def __init__(self) -> None:
        super().__init__()
        self.cleared = threading.Event()

    def clear(self) -> None:
        super().clear()
        self.cleared.set()


def finish(thinker: BaseThinker) -> None:
    """Join a started thinker; fail (rather than hang) if it does not stop."""
    thinker.join(WAIT_S)
    assert not thinker.is_alive(), "thinker did not stop"


def run_to_end(thinker: BaseThinker) -> None:
    """Call ``thinker.run()`` (not start) and require it to return."""
    done = threading.Event()

    def target() -> None:
        thinker.run()
        done.set()

    threading.Thread(target=target, daemon=True).start()
    assert done.wait(WAIT_S), "run() did not return"


# --------------------------------------------------------------------- decorators


class Marked(BaseThinker):
    flag = threading.Event()

    @agent
    def plain(self) -> None:
        """A plain agent."""

    @agent(startup=True)
    def setup(self) -> None:
        pass

    @result_processor
    def on_default(self, result: Any) -> None:
        """Handle default-topic results."""

    @result_processor(topic="sim")
    def on_sim(self, result: Any) -> None:
        pass

    @task_submitter(task_type="sim", n_slots=2)
    def submit(self) -> None:
        pass

    @task_submitter
    def submit_any(self) -> None:
        pass

    @event_responder(event_name="flag")
    def on_flag(self) -> None:
        pass

    def helper(self) -> None:
        pass


def test_decorators_record_agent_specs() -> None:
    specs: dict[str, AgentSpec] = {}
    for name in dir(Marked):
        spec = agent_spec(getattr(Marked, name))
        if spec is not None:
            specs[name] = spec
    assert sorted(specs) == [
        "on_default",
        "on_flag",
        "on_sim",
        "plain",
        "setup",
        "submit",
        "submit_any",
    ]
    assert specs["plain"].kind == "agent" and not specs["plain"].startup
    assert specs["setup"].kind == "agent" and specs["setup"].startup
    assert specs["on_default"].kind == "result_processor"
    assert specs["on_default"].topic == "default"
    assert specs["on_sim"].topic == "sim"
    assert specs["submit"].kind == "task_submitter" and specs["submit"].task_type == "sim"
    assert specs["submit_any"].task_type is None
    assert specs["on_flag"].kind == "event_responder" and specs["on_flag"].event_name == "flag"
    assert agent_spec(Marked.helper) is None


def test_wrappers_keep_name_doc_and_topic() -> None:
    assert Marked.on_default.__name__ == "on_default"
    assert Marked.on_default.__doc__ == "Handle default-topic results."
    assert Marked.plain.__doc__ == "A plain agent."
    assert Marked.on_sim._orch_topic == "sim"  # type: ignore[attr-defined]  # read by the runner


def test_list_agents() -> None:
    names = [a.__name__ for a in Marked.list_agents()]
    assert names == sorted(names)
    assert len(names) == 7
    assert "helper" not in names


def test_decorator_argument_validation() -> None:
    with pytest.raises(ValueError, match="n_slots must be >= 1"):
        task_submitter(n_slots=0)
    with pytest.raises(ValueError, match="different pools"):
        event_responder("flag", reallocate_resources=True, gather_from="ml", gather_to="ml")
    with pytest.raises(ValueError, match="slot_step"):
        event_responder("flag", reallocate_resources=True, gather_to="ml", slot_step=0)
    # without reallocation the pools are not looked at
    event_responder("flag", gather_from="ml", gather_to="ml")


# --------------------------------------------------------------------- agents and done


def test_non_startup_agent_returning_sets_done() -> None:
    class T(BaseThinker):
        saw_done = False

        @agent
        def main(self) -> None:
            return

        @agent
        def waiter(self) -> None:
            self.saw_done = self.done.wait(WAIT_S)

    th = T(FakeQueues())
    th.start()
    finish(th)
    assert th.done.is_set()
    assert th.saw_done
    assert th.agent_errors == []


def test_startup_agent_returning_does_not_end_run() -> None:
    class T(BaseThinker):
        def __init__(self, queues: FakeQueues) -> None:
            super().__init__(queues)
            self.finished = {"setup": threading.Event(), "main": threading.Event()}
            self.config: str | None = None
            self.done_after_setup: bool | None = None
            self.payloads: dict[str, str] = {}

        def prepare_agent(self) -> None:
            self.local_details.payload = f"hello {self.agent_name}"

        def tear_down_agent(self) -> None:
            name = self.agent_name
            assert name is not None
            self.payloads[name] = self.local_details.payload
            self.finished[name].set()

        @agent(startup=True)
        def setup(self) -> None:
            self.config = "ready"

        @agent
        def main(self) -> None:
            # wait until the startup agent has completely finished, then look at done
            assert self.finished["setup"].wait(WAIT_S)
            self.done_after_setup = self.done.is_set()

    th = T(FakeQueues())
    th.start()
    finish(th)
    assert th.config == "ready"
    assert th.done_after_setup is False
    assert th.done.is_set()  # set by `main` returning
    assert th.payloads == {"setup": "hello setup", "main": "hello main"}


def test_startup_agent_that_raises_sets_done() -> None:
    class T(BaseThinker):
        @agent(startup=True)
        def setup(self) -> None:
            raise RuntimeError("bad config")

        @agent
        def main(self) -> None:
            self.done.wait()

    th = T(FakeQueues())
    run_to_end(th)
    assert th.done.is_set()
    assert [(name, type(exc)) for name, exc in th.agent_errors] == [("setup", RuntimeError)]


def test_failing_agent_is_logged_sets_done_and_run_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class T(BaseThinker):
        flag = threading.Event()

        @agent
        def boom(self) -> None:
            raise ValueError("kaput")

        @agent
        def waiter(self) -> None:
            self.done.wait()

        @result_processor(topic="sim")
        def consume(self, result: Any) -> None:
            pass

        @task_submitter(task_type="sim")
        def submit(self) -> None:  # never runs: the pool has no slots
            raise AssertionError("no slots were available")

        @event_responder(event_name="flag")
        def respond(self) -> None:
            pass

    th = T(FakeQueues(), ResourceCounter(1, ["sim"]), logger_name="failing")
    with caplog.at_level(logging.INFO, logger="failing"):
        run_to_end(th)

    assert th.done.is_set()
    assert len(th.agent_errors) == 1
    name, exc = th.agent_errors[0]
    assert name == "boom"
    assert isinstance(exc, ValueError) and str(exc) == "kaput"

    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1
    record = failures[0]
    assert record.name == "failing.boom"
    assert record.exc_info is not None and record.exc_info[1] is exc
    assert 'raise ValueError("kaput")' in caplog.text  # the traceback was logged


def test_run_without_agents_returns() -> None:
    th = BaseThinker(FakeQueues())
    run_to_end(th)
    assert th.agent_errors == []


# --------------------------------------------------------------------- result_processor


def test_result_processor_routes_by_topic() -> None:
    class T(BaseThinker):
        def __init__(self, queues: FakeQueues) -> None:
            super().__init__(queues)
            self.got: dict[str, list[Any]] = {"a": [], "b": [], "default": []}
            self.complete = threading.Event()
            self.lock = threading.Lock()

        def _record(self, topic: str, result: FakeResult) -> None:
            assert result.topic == topic
            with self.lock:
                self.got[topic].append(result.value)
                if sum(map(len, self.got.values())) == 5:
                    self.complete.set()

        @result_processor(topic="a")
        def on_a(self, result: FakeResult) -> None:
            self._record("a", result)

        @result_processor(topic="b")
        def on_b(self, result: FakeResult) -> None:
            self._record("b", result)

        @result_processor
        def on_default(self, result: FakeResult) -> None:
            self._record("default", result)

    queues = FakeQueues(echo=False)
    th = T(queues)
    th.start()
    for topic, value in [("a", 1), ("b", "x"), ("a", 2), ("default", 9), ("a", 3)]:
        queues.put(topic, value)
    assert th.complete.wait(WAIT_S)
    assert not th.done.is_set()  # result processors run until told to stop
    th.done.set()
    finish(th)
    assert th.got == {"a": [1, 2, 3], "b": ["x"], "default": [9]}


def test_colmena_seed_slide_thinker_runs() -> None:
    """The thinker from Colmena's introduction, with only the imports changed."""

    class Thinker(BaseThinker):
        def __init__(self, queues: FakeQueues, n_rounds: int) -> None:
            super().__init__(queues)
            self.n_rounds = n_rounds
            self.simulated: list[int] = []
            self.generated: list[int] = []

        @result_processor(topic="simulate")
        def consumer(self, result: FakeResult) -> None:
            self.simulated.append(result.value)
            self.queues.send_inputs(result.value + 1, method="generate", topic="generate")
            if len(self.simulated) == self.n_rounds:
                self.done.set()

        @agent
        def producer(self) -> None:
            x = 0
            while not self.done.is_set():
                self.queues.send_inputs(x, method="simulate", topic="simulate")
                result = self.queues.get_result(topic="generate")
                x = result.value
                self.generated.append(x)

    queues = FakeQueues()
    th = Thinker(queues, n_rounds=5)
    th.start()
    finish(th)
    assert th.simulated == [0, 1, 2, 3, 4]
    assert th.generated == [1, 2, 3, 4, 5]
    assert [r.method for r in queues.sent[:2]] == ["simulate", "generate"]
    assert th.agent_errors == []


def test_result_processors_stop_at_done_without_drain_results() -> None:
    class T(BaseThinker):
        drain_results = False

        @agent
        def producer(self) -> None:
            for i in range(3):
                self.queues.send_inputs(i, method="sim", topic="sim")

        @result_processor(topic="sim")
        def consume(self, result: FakeResult) -> None:
            raise AssertionError("no result was ever delivered")

    queues = CountingQueues()
    th = T(queues)
    run_to_end(th)  # returns although three tasks are still in flight
    assert queues.active_count == 3
    assert th.agent_errors == []


def test_result_processors_take_tasks_in_flight_after_done_by_default() -> None:
    class T(BaseThinker):
        def __init__(self, queues: CountingQueues) -> None:
            super().__init__(queues)
            self.values: list[int] = []

        @agent
        def producer(self) -> None:
            for i in range(3):
                self.queues.send_inputs(i, method="sim", topic="sim")

        @result_processor(topic="sim")
        def consume(self, result: FakeResult) -> None:
            self.values.append(result.value)

    queues = CountingQueues()
    th = T(queues)
    th.start()
    assert th.done.wait(WAIT_S)  # the producer has returned
    for i in range(3):
        queues.put("sim", i * 10)
    finish(th)
    assert th.values == [0, 10, 20]
    assert queues.active_count == 0


def test_draining_stops_after_an_agent_failure() -> None:
    class T(BaseThinker):
        @agent
        def producer(self) -> None:
            self.queues.send_inputs(1, method="sim", topic="sim")
            raise RuntimeError("lost")

        @result_processor(topic="sim")
        def consume(self, result: FakeResult) -> None:
            pass

    queues = CountingQueues()
    th = T(queues)
    run_to_end(th)
    assert queues.active_count == 1
    assert [name for name, _ in th.agent_errors] == ["producer"]


# --------------------------------------------------------------------- task_submitter


def test_task_submitter_blocks_when_no_slots() -> None:
    class T(BaseThinker):
        def __init__(self, queues: FakeQueues, rec: ResourceCounter) -> None:
            super().__init__(queues, rec)
            self.submitted: list[str] = []
            self.two_sent = threading.Event()

        @task_submitter(task_type="sim")
        def submit(self) -> None:
            self.submitted.append(self.queues.send_inputs(1, method="sim", topic="sim"))
            if len(self.submitted) == 2:
                self.two_sent.set()

    rec = ResourceCounter(3, ["sim"])
    rec.reallocate(None, "sim", 2)
    th = T(FakeQueues(echo=False), rec)
    th.start()
    assert th.two_sent.wait(WAIT_S)
    assert not th.done.is_set()
    th.done.set()  # cancels the submitter's wait for a third slot
    finish(th)
    assert len(th.submitted) == 2  # it kept asking, but no slot was ever free
    assert rec.available_slots("sim") == 0
    assert rec.unallocated_slots == 1  # never touched another pool
    assert th.submitters_done.is_set()


def test_task_submitter_resubmits_as_slots_are_released() -> None:
    class T(BaseThinker):
        def __init__(self, queues: FakeQueues, rec: ResourceCounter) -> None:
            super().__init__(queues, resource_counter=rec)
            self.batch = 2
            self.in_flight = 0
            self.max_in_flight = 0
            self.lock = threading.Lock()
            self.submissions: queue.Queue[int] = queue.Queue()

        @task_submitter(task_type="sim", n_slots="batch")  # read from the attribute
        def submit(self) -> None:
            with self.lock:
                self.in_flight += self.batch
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.submissions.put(self.in_flight)

        @result_processor(topic="sim")
        def collect(self, result: FakeResult) -> None:
            with self.lock:
                self.in_flight -= self.batch
            assert self.rec is not None
            self.rec.release("sim", self.batch)

    queues = FakeQueues(echo=False)
    rec = ResourceCounter(4, ["sim"])
    rec.reallocate(None, "sim", 4)
    th = T(queues, rec)
    th.start()
    for _ in range(2):
        th.submissions.get(timeout=WAIT_S)
    for _ in range(2):  # two batches complete: two more submissions
        queues.put("sim", None)
    for _ in range(2):
        th.submissions.get(timeout=WAIT_S)
    queues.put("sim", None)
    th.submissions.get(timeout=WAIT_S)
    th.done.set()
    finish(th)
    assert th.submissions.empty()  # 5 submissions = 2 that fit + 3 released batches
    assert th.max_in_flight == 4
    assert th.in_flight == 4
    assert rec.available_slots("sim") == 0


def test_task_submitter_from_unallocated_pool_by_default() -> None:
    class T(BaseThinker):
        @task_submitter
        def submit(self) -> None:
            self.done.set()

    rec = ResourceCounter(1)
    th = T(FakeQueues(), rec)
    run_to_end(th)
    assert rec.available_slots(None) == 0
    assert th.agent_errors == []


@pytest.mark.parametrize(
    ("n_slots", "rec", "error", "match"),
    [
        (1, None, RuntimeError, "needs a ResourceCounter"),
        ("missing", ResourceCounter(1), ValueError, "names no attribute"),
        ("label", ResourceCounter(1), ValueError, "must be an int >= 1"),
        (1, ResourceCounter(1, ["ml"]), KeyError, "unknown task type 'gpu'"),
    ],
)
def test_task_submitter_configuration_errors(
    n_slots: int | str, rec: ResourceCounter | None, error: type, match: str
) -> None:
    task_type = "gpu" if rec is not None and rec.task_types else None

    class T(BaseThinker):
        label = "two"

        @task_submitter(task_type=task_type, n_slots=n_slots)
        def submit(self) -> None:
            pass

    th = T(FakeQueues(), rec)
    run_to_end(th)
    assert len(th.agent_errors) == 1
    name, exc = th.agent_errors[0]
    assert name == "submit"
    assert isinstance(exc, error)
    assert match in str(exc)


# --------------------------------------------------------------------- event_responder


def test_event_responders_run_once_per_set_and_clear_after_all() -> None:
    class T(BaseThinker):
        def __init__(self, queues: FakeQueues) -> None:
            super().__init__(queues)
            self.flag = RecordingEvent()
            self.calls = {"a": 0, "b": 0}
            self.lock = threading.Lock()

        def _respond(self, name: str) -> None:
            assert self.flag.is_set()
            with self.lock:
                self.calls[name] += 1

        @event_responder(event_name="flag")
        def a(self) -> None:
            self._respond("a")

        @event_responder("flag")
        def b(self) -> None:
            self._respond("b")

    th = T(FakeQueues())
    th.start()
    for round_ in (1, 2):
        th.flag.set()
        assert th.flag.cleared.wait(WAIT_S)
        # cleared only once both responders have finished this round
        with th.lock:
            assert th.calls == {"a": round_, "b": round_}
        th.flag.cleared.clear()
    assert not th.done.is_set()  # responding does not end the campaign
    th.done.set()
    finish(th)
    assert th.calls == {"a": 2, "b": 2}
    assert th.barriers["flag"].parties == 0  # both responders left the round as they stopped


def test_event_responder_reallocates_slots_while_running() -> None:
    class T(BaseThinker):
        def __init__(self, queues: FakeQueues, rec: ResourceCounter) -> None:
            super().__init__(queues, rec)
            self.train = RecordingEvent()
            self.ml_max = 2
            self.during: tuple[int, int] | None = None

        @event_responder(
            event_name="train",
            reallocate_resources=True,
            gather_from="sim",
            gather_to="ml",
            disperse_to="sim",
            max_slots="ml_max",
        )
        def retrain(self) -> None:
            rec = self.rec
            assert rec is not None
            # blocks until the reallocator has moved two slots into "ml"
            assert rec.acquire("ml", 2, timeout=WAIT_S)
            self.during = (rec.allocated_slots("ml"), rec.allocated_slots("sim"))
            rec.release("ml", 2)

    rec = ResourceCounter(4, ["sim", "ml"])
    rec.reallocate(None, "sim", 4)
    th = T(FakeQueues(), rec)
    th.start()
    th.train.set()
    assert th.train.cleared.wait(WAIT_S)
    th.done.set()
    finish(th)
    assert th.agent_errors == []
    assert th.during == (2, 2)
    assert rec.allocated_slots("ml") == 0  # given back to disperse_to once the method returned
    assert rec.allocated_slots("sim") == 4


def test_event_responder_disperses_to_unallocated_pool() -> None:
    class T(BaseThinker):
        def __init__(self, queues: FakeQueues, rec: ResourceCounter) -> None:
            super().__init__(queues, rec)
            self.go = RecordingEvent()

        @event_responder(
            "go", reallocate_resources=True, gather_from="sim", gather_to="ml", max_slots=1
        )
        def respond(self) -> None:
            assert self.rec is not None and self.rec.acquire("ml", 1, timeout=WAIT_S)
            self.rec.release("ml", 1)

    rec = ResourceCounter(3, ["sim", "ml"])
    rec.reallocate(None, "sim", 3)
    th = T(FakeQueues(), rec)
    th.start()
    th.go.set()
    assert th.go.cleared.wait(WAIT_S)
    th.done.set()
    finish(th)
    assert th.agent_errors == []
    assert rec.allocated_slots("sim") == 2
    assert rec.unallocated_slots == 1
    assert rec.allocated_slots("ml") == 0


def test_event_responder_without_event_attribute_fails() -> None:
    class T(BaseThinker):
        not_an_event = 3

        @event_responder(event_name="missing")
        def a(self) -> None:
            pass

        @event_responder(event_name="not_an_event")
        def b(self) -> None:
            pass

    th = T(FakeQueues())
    run_to_end(th)
    assert sorted(name for name, _ in th.agent_errors) == ["a", "b"]
    assert all(isinstance(exc, ValueError) for _, exc in th.agent_errors)


def test_event_responder_failure_does_not_strand_the_other_responder() -> None:
    class T(BaseThinker):
        def __init__(self, queues: FakeQueues) -> None:
            super().__init__(queues)
            self.flag = threading.Event()
            self.a_started = threading.Event()
            self.b_started = threading.Event()
            self.b_finished = threading.Event()

        @event_responder(event_name="flag")
        def a(self) -> None:
            assert self.b_started.wait(WAIT_S)  # both are responding before `a` fails
            self.a_started.set()
            raise RuntimeError("responder failed")

        @event_responder(event_name="flag")
        def b(self) -> None:
            self.b_started.set()
            assert self.a_started.wait(WAIT_S)
            self.b_finished.set()  # then waits at the barrier for `a`, which is gone

    th = T(FakeQueues())
    th.start()
    th.flag.set()
    finish(th)
    assert th.b_finished.is_set()
    assert [name for name, _ in th.agent_errors] == ["a"]
    assert not th.flag.is_set()


def test_event_responder_reallocation_needs_counter() -> None:
    class T(BaseThinker):
        go = threading.Event()

        @event_responder("go", reallocate_resources=True, gather_to="ml")
        def respond(self) -> None:
            pass

    th = T(FakeQueues())
    run_to_end(th)
    assert len(th.agent_errors) == 1
    assert isinstance(th.agent_errors[0][1], RuntimeError)


# --------------------------------------------------------------------- attributes, logging


def test_attributes_and_logger_names() -> None:
    class Named(BaseThinker):
        def __init__(self, queues: FakeQueues, **kwargs: Any) -> None:
            super().__init__(queues, **kwargs)
            self.agent_logger: str | None = None

        @agent
        def main(self) -> None:
            self.agent_logger = self.logger.name

    queues = FakeQueues()
    rec = ResourceCounter(2)
    th = Named(queues, resource_counter=rec)
    assert th.queues is queues
    assert th.rec is rec and th.resource_counter is rec
    assert th.daemon
    assert th.logger.name == f"{__name__}.Named"
    assert th.agent_name is None
    run_to_end(th)
    assert th.agent_logger == f"{__name__}.Named.main"

    custom = Named(queues, logger_name="campaign", daemon=False)
    assert custom.logger.name == "campaign"
    assert not custom.daemon
    assert custom.rec is None and custom.resource_counter is None
    custom.resource_counter = rec
    assert custom.rec is rec
    run_to_end(custom)
    assert custom.agent_logger == "campaign.main"
