"""Tests for ResourceCounter and ReallocatorThread (slot pools per task type)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from orchestrator.thinker import ResourceCounter
from orchestrator.thinker.resources import ReallocatorThread

WAIT_S = 5.0  # generous bound on any wait; a passing test never comes close


def wait_for(predicate: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Wait until ``predicate()`` holds (observable state, not elapsed time)."""
    pause = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return
        pause.wait(0.005)
    raise AssertionError("condition never became true")


class Call:
    """Run ``fn`` in a thread and keep its return value."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.value: object = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
        finally:
            self.done.set()

    def result(self) -> object:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "call did not return"
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture
def rec() -> ResourceCounter:
    return ResourceCounter(8, ["ml", "sim"])


# --------------------------------------------------------------------- construction


def test_initial_state(rec: ResourceCounter) -> None:
    assert rec.total_slots == 8
    assert rec.task_types == ("ml", "sim")
    assert rec.unallocated_slots == 8
    assert rec.available_slots(None) == 8
    assert rec.allocated_slots(None) == 8
    for task in ("ml", "sim"):
        assert rec.allocated_slots(task) == 0
        assert rec.available_slots(task) == 0
        assert rec.pending_requests(task) == 0
    assert "'ml': 0/0" in repr(rec)


def test_default_has_only_unallocated_pool() -> None:
    rec = ResourceCounter(2)
    assert rec.task_types == ()
    assert rec.acquire(None, 2, timeout=0)
    with pytest.raises(KeyError, match="unknown task type 'sim'"):
        rec.acquire("sim", 1)


@pytest.mark.parametrize(
    ("total", "types", "error", "match"),
    [
        (4, ["ml", None], ValueError, "reserved"),
        (4, ["ml", "ml"], ValueError, "repeated: ml"),
        (-1, [], ValueError, ">= 0"),
        (2.5, [], TypeError, "int"),
    ],
)
def test_constructor_validation(total: object, types: list, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ResourceCounter(total, types)  # type: ignore[arg-type]


# --------------------------------------------------------------------- acquire / release


def test_acquire_and_release(rec: ResourceCounter) -> None:
    assert rec.reallocate(None, "ml", 8)
    assert rec.acquire("ml", 8, timeout=1)
    assert rec.available_slots("ml") == 0
    assert rec.allocated_slots("ml") == 8

    assert rec.release("ml", 4) is None
    assert rec.available_slots("ml") == 4
    assert rec.allocated_slots("ml") == 8

    # release and re-request the same slots (Colmena's rerequest option)
    assert rec.release("ml", 4, rerequest=True, timeout=1) is True
    assert rec.available_slots("ml") == 4


def test_acquire_timeout_takes_nothing(rec: ResourceCounter) -> None:
    rec.reallocate(None, "ml", 3)
    assert not rec.acquire("ml", 4, timeout=0.01)
    assert rec.available_slots("ml") == 3
    assert rec.pending_requests("ml") == 0


def test_timeout_zero_tries_once(rec: ResourceCounter) -> None:
    rec.reallocate(None, "sim", 1)
    assert rec.acquire("sim", 1, timeout=0)
    assert not rec.acquire("sim", 1, timeout=0)
    assert rec.available_slots("sim") == 0


def test_acquire_waits_for_release(rec: ResourceCounter) -> None:
    rec.reallocate(None, "sim", 2)
    assert rec.acquire("sim", 2)
    call = Call(lambda: rec.acquire("sim", 2))
    wait_for(lambda: rec.pending_requests("sim") == 1)
    rec.release("sim", 1)
    assert call.thread.is_alive()  # one slot is not enough: still waiting, holding nothing
    assert rec.available_slots("sim") == 1
    rec.release("sim", 1)
    assert call.result() is True
    assert rec.available_slots("sim") == 0


def test_acquire_zero_slots_succeeds(rec: ResourceCounter) -> None:
    assert rec.acquire("ml", 0, timeout=0)


def test_cancel_if_already_set_fails_even_with_free_slots(rec: ResourceCounter) -> None:
    rec.reallocate(None, "sim", 4)
    stop = threading.Event()
    stop.set()
    assert not rec.acquire("sim", 1, cancel_if=stop)
    assert rec.available_slots("sim") == 4


def test_cancel_if_set_while_waiting(rec: ResourceCounter) -> None:
    rec.reallocate(None, "sim", 4)
    stop = threading.Event()
    call = Call(lambda: rec.acquire("sim", 5, cancel_if=stop))
    wait_for(lambda: rec.pending_requests("sim") == 1)
    stop.set()
    assert call.result() is False
    assert rec.available_slots("sim") == 4
    assert rec.pending_requests("sim") == 0


def test_requests_are_first_come_first_served(rec: ResourceCounter) -> None:
    rec.reallocate(None, "sim", 2)
    assert rec.acquire("sim", 2)
    big = Call(lambda: rec.acquire("sim", 2))
    wait_for(lambda: rec.pending_requests("sim") == 1)
    small = Call(lambda: rec.acquire("sim", 1, timeout=WAIT_S))
    wait_for(lambda: rec.pending_requests("sim") == 2)

    # One free slot would satisfy the small request, but the big one is first in line.
    rec.release("sim", 1)
    assert rec.pending_requests("sim") == 2
    assert rec.available_slots("sim") == 1

    rec.release("sim", 1)
    assert big.result() is True
    rec.release("sim", 1)
    assert small.result() is True
    assert rec.available_slots("sim") == 0
    assert rec.allocated_slots("sim") == 2


def test_cancelled_head_of_line_lets_next_request_through(rec: ResourceCounter) -> None:
    rec.reallocate(None, "sim", 1)
    stop = threading.Event()
    big = Call(lambda: rec.acquire("sim", 2, cancel_if=stop))
    wait_for(lambda: rec.pending_requests("sim") == 1)
    small = Call(lambda: rec.acquire("sim", 1))
    wait_for(lambda: rec.pending_requests("sim") == 2)
    stop.set()
    assert big.result() is False
    assert small.result() is True


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r: r.acquire("gpu", 1), KeyError, "unknown task type 'gpu'"),
        (lambda r: r.release("gpu", 1), KeyError, "unknown task type 'gpu'"),
        (lambda r: r.available_slots("gpu"), KeyError, "known task types: ml, sim"),
        (lambda r: r.allocated_slots("gpu"), KeyError, "unknown task type"),
        (lambda r: r.pending_requests("gpu"), KeyError, "unknown task type"),
        (lambda r: r.acquire("ml", -1), ValueError, ">= 0"),
        (lambda r: r.acquire("ml", 9), ValueError, "exceeds the 8 slots"),
        (lambda r: r.acquire("ml", 1.5), ValueError, "must be an int"),
        (lambda r: r.release("ml", -2), ValueError, ">= 0"),
    ],
)
def test_validation_errors(rec: ResourceCounter, call: Callable, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call(rec)


def test_release_more_than_in_use_adds_slots_as_colmena_does(rec: ResourceCounter) -> None:
    rec.reallocate(None, "ml", 4)
    assert rec.acquire("ml", 2)
    rec.release("ml", 3)  # one more than in use: Colmena's semaphore gains a slot
    assert rec.available_slots("ml") == 5
    assert rec.allocated_slots("ml") == 5
    assert rec.total_slots == 9
    assert rec.acquire("ml", 5, timeout=0)
    assert not rec.acquire("ml", 1, timeout=0)
    assert sum(rec.allocated_slots(p) for p in (None, "ml", "sim")) == rec.total_slots


def test_release_positional_arguments_in_colmenas_order(rec: ResourceCounter) -> None:
    rec.reallocate(None, "ml", 2)
    assert rec.acquire("ml", 2)
    # release(task, n_slots, rerequest, timeout): give both back and take them again
    assert rec.release("ml", 2, True, 1.0) is True
    assert rec.available_slots("ml") == 0
    # reallocate(task_from, task_to, n_slots, block, callback, timeout, cancel_if)
    moved = threading.Event()
    assert rec.reallocate(None, "sim", 1, False, moved.set) is True
    assert moved.wait(5)
    assert rec.allocated_slots("sim") == 1
    assert not rec.reallocate("ml", "sim", 1, True, None, 0.05)  # both in use: times out


# --------------------------------------------------------------------- reallocate


def test_reallocate_moves_allocation(rec: ResourceCounter) -> None:
    assert rec.reallocate(None, "ml", 5)
    assert rec.unallocated_slots == 3
    assert rec.allocated_slots("ml") == 5
    assert rec.available_slots("ml") == 5

    assert rec.reallocate("ml", "sim", 2)
    assert rec.allocated_slots("ml") == 3
    assert rec.allocated_slots("sim") == 2

    assert rec.reallocate("sim", None, 2)  # de-allocate
    assert rec.unallocated_slots == 5
    assert rec.allocated_slots("sim") == 0


def test_reallocate_timeout_changes_nothing(rec: ResourceCounter) -> None:
    rec.reallocate(None, "ml", 4)
    assert not rec.reallocate("ml", "sim", 5, timeout=0.01)
    assert rec.available_slots("ml") == 4
    assert rec.allocated_slots("ml") == 4
    assert rec.allocated_slots("sim") == 0


def test_reallocate_waits_for_slots_in_use(rec: ResourceCounter) -> None:
    rec.reallocate(None, "ml", 4)
    assert rec.acquire("ml", 4)
    call = Call(lambda: rec.reallocate("ml", "sim", 2))
    wait_for(lambda: rec.pending_requests("ml") == 1)
    assert rec.allocated_slots("sim") == 0
    rec.release("ml", 2)
    assert call.result() is True
    assert rec.allocated_slots("ml") == 2
    assert rec.available_slots("ml") == 0
    assert rec.allocated_slots("sim") == 2
    assert rec.available_slots("sim") == 2


def test_reallocate_cancel_if(rec: ResourceCounter) -> None:
    stop = threading.Event()
    call = Call(lambda: rec.reallocate("ml", "sim", 1, cancel_if=stop))
    wait_for(lambda: rec.pending_requests("ml") == 1)
    stop.set()
    assert call.result() is False
    assert rec.allocated_slots("sim") == 0


def test_reallocate_all(rec: ResourceCounter) -> None:
    rec.reallocate(None, "sim", 6)
    assert rec.acquire("sim", 1)
    call = Call(lambda: rec.reallocate("sim", "ml", "all"))
    wait_for(lambda: rec.pending_requests("sim") == 1)
    assert rec.allocated_slots("ml") == 0  # waits until no slot of "sim" is in use
    rec.release("sim", 1)
    assert call.result() is True
    assert rec.allocated_slots("sim") == 0
    assert rec.allocated_slots("ml") == 6
    assert rec.available_slots("ml") == 6
    assert rec.unallocated_slots == 2


def test_reallocate_all_of_empty_pool_is_a_no_op(rec: ResourceCounter) -> None:
    assert rec.reallocate("ml", "sim", "all", timeout=0)
    assert rec.allocated_slots("sim") == 0


def test_reallocate_non_blocking_calls_back(rec: ResourceCounter) -> None:
    rec.reallocate(None, "ml", 8)
    assert rec.acquire("ml", 4)
    finished = threading.Event()
    assert rec.reallocate("ml", "sim", 8, block=False, callback=finished.set) is True
    wait_for(lambda: rec.pending_requests("ml") == 1)
    assert not finished.is_set()  # four slots still in use
    rec.release("ml", 4)
    assert finished.wait(WAIT_S)
    assert rec.allocated_slots("sim") == 8
    assert rec.allocated_slots("ml") == 0


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("ml", "ml", 1), ValueError, "to itself"),
        ((None, None, 1), ValueError, "to itself"),
        (("ml", "gpu", 1), KeyError, "unknown task type 'gpu'"),
        (("gpu", "ml", 1), KeyError, "unknown task type 'gpu'"),
        ((None, "ml", 9), ValueError, "exceeds"),
        ((None, "ml", "some"), ValueError, "must be an int"),
    ],
)
def test_reallocate_validation(rec: ResourceCounter, args: tuple, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        rec.reallocate(*args)
    assert rec.unallocated_slots == 8


def test_concurrent_use_keeps_counts_consistent() -> None:
    rec = ResourceCounter(6, ["a", "b"])
    rec.reallocate(None, "a", 3)
    rec.reallocate(None, "b", 3)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(200):
                pool = rng.choice(["a", "b"])
                n = rng.randint(1, 2)
                if rec.acquire(pool, n, timeout=WAIT_S):
                    rec.release(pool, n)
                else:
                    raise AssertionError("acquire timed out")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def shuffler() -> None:
        try:
            for i in range(100):
                src, dst = ("a", "b") if i % 2 == 0 else ("b", "a")
                assert rec.reallocate(src, dst, 1, timeout=WAIT_S)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    threads.append(threading.Thread(target=shuffler))
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 4)
        assert not t.is_alive()
    assert errors == []
    assert rec.allocated_slots("a") + rec.allocated_slots("b") == 6
    assert rec.available_slots("a") == rec.allocated_slots("a")
    assert rec.available_slots("b") == rec.allocated_slots("b")


# --------------------------------------------------------------------- ReallocatorThread


def test_reallocator_gathers_up_to_max_then_disperses(rec: ResourceCounter) -> None:
    rec.reallocate(None, "sim", 8)
    thread = ReallocatorThread(
        rec, gather_from="sim", gather_to="ml", disperse_to=None, max_slots=3
    )
    thread.start()
    wait_for(lambda: rec.allocated_slots("ml") == 3)
    assert thread.is_alive()  # holds the slots until stopped
    assert rec.allocated_slots("sim") == 5

    thread.stop_event.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert rec.allocated_slots("ml") == 0
    assert rec.unallocated_slots == 3
    assert rec.allocated_slots("sim") == 5


def test_reallocator_step_never_overshoots_max(rec: ResourceCounter) -> None:
    rec.reallocate(None, "sim", 8)
    thread = ReallocatorThread(
        rec, gather_from="sim", gather_to="ml", disperse_to="sim", max_slots=5, slot_step=2
    )
    thread.start()
    wait_for(lambda: rec.allocated_slots("ml") == 5)
    assert rec.pending_requests("sim") == 0  # reached the maximum: no longer asking
    thread.stop_event.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert rec.allocated_slots("sim") == 8


def test_reallocator_without_max_takes_everything(rec: ResourceCounter) -> None:
    rec.reallocate(None, "sim", 8)
    stop = threading.Event()
    thread = ReallocatorThread(rec, "sim", "ml", disperse_to=None, stop_event=stop)
    assert thread.stop_event is stop
    thread.start()
    wait_for(lambda: rec.allocated_slots("ml") == 8)
    stop.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert rec.unallocated_slots == 8


def test_reallocator_disperse_waits_for_slots_in_use(rec: ResourceCounter) -> None:
    rec.reallocate(None, "ml", 2)  # slots already in the target pool are dispersed too
    thread = ReallocatorThread(rec, None, "ml", disperse_to="sim", max_slots=4)
    thread.start()
    wait_for(lambda: rec.allocated_slots("ml") == 4)
    assert rec.acquire("ml", 1)
    thread.stop_event.set()
    wait_for(lambda: rec.pending_requests("ml") == 1)
    assert rec.allocated_slots("sim") == 0
    rec.release("ml", 1)
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert rec.allocated_slots("sim") == 4
    assert rec.allocated_slots("ml") == 0


def test_reallocator_same_gather_and_disperse_keeps_slots(rec: ResourceCounter) -> None:
    thread = ReallocatorThread(rec, None, "ml", disperse_to="ml", max_slots=2)
    thread.start()
    wait_for(lambda: rec.allocated_slots("ml") == 2)
    thread.stop_event.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert rec.allocated_slots("ml") == 2


def test_reallocator_abort_event_skips_disperse(rec: ResourceCounter) -> None:
    abort = threading.Event()
    thread = ReallocatorThread(rec, None, "ml", disperse_to=None, max_slots=2, abort_event=abort)
    thread.start()
    wait_for(lambda: rec.allocated_slots("ml") == 2)
    assert rec.acquire("ml", 2)  # in use: the disperse would wait for ever
    thread.stop_event.set()
    wait_for(lambda: rec.pending_requests("ml") == 1)
    abort.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert rec.allocated_slots("ml") == 2


def test_reallocators_in_opposite_directions_do_not_deadlock(rec: ResourceCounter) -> None:
    """The situation of Colmena issue #43: two reallocators pulling against each other."""
    rec.reallocate(None, "sim", 8)
    to_ml = ReallocatorThread(rec, "sim", "ml", disperse_to="sim", max_slots=8)
    to_sim = ReallocatorThread(rec, "ml", "sim", disperse_to="ml", max_slots=8)
    to_ml.start()
    wait_for(lambda: rec.allocated_slots("ml") == 8)
    assert rec.acquire("ml", 8)
    to_sim.start()
    wait_for(lambda: rec.pending_requests("ml") == 1)  # to_sim waits for ml slots

    to_ml.stop_event.set()
    rec.release("ml", 8)
    to_ml.join(WAIT_S)
    assert not to_ml.is_alive()
    to_sim.stop_event.set()
    to_sim.join(WAIT_S)
    assert not to_sim.is_alive()
    assert rec.allocated_slots("ml") + rec.allocated_slots("sim") == 8
    assert rec.unallocated_slots == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"gather_from": "ml", "gather_to": "ml"}, "another pool"),
        ({"slot_step": 0}, "slot_step"),
        ({"max_slots": -1}, "max_slots"),
    ],
)
def test_reallocator_validation(rec: ResourceCounter, kwargs: dict, match: str) -> None:
    args = {"gather_from": None, "gather_to": "ml", "disperse_to": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        ReallocatorThread(rec, **args)
