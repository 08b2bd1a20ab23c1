"""Tests for ResourceCounter.resize: elastic capacity, owed slots and their retirement."""

from __future__ import annotations

import logging
import random
import threading

import pytest
from test_resources import WAIT_S, Call, wait_for

from orchestrator.thinker import ResourceCounter


@pytest.fixture
def rec() -> ResourceCounter:
    return ResourceCounter(8, ["ml", "sim"])


def pools_of(rec: ResourceCounter) -> list[str | None]:
    return [None, *rec.task_types]


def state(rec: ResourceCounter) -> dict[str | None, tuple[int, int]]:
    """``{pool: (available, allocated)}``, read in one consistent snapshot."""
    with rec._cond:  # reentrant: the accessors below take it again
        return {p: (rec.available_slots(p), rec.allocated_slots(p)) for p in pools_of(rec)}


def check_invariants(rec: ResourceCounter) -> None:
    """Accounting that must hold at every quiet moment, debt or not."""
    with rec._cond:
        snap = state(rec)
        owed = rec.owed_slots
        assert sum(alloc for _, alloc in snap.values()) == rec.total_slots + owed, repr(rec)
        for pool, (avail, alloc) in snap.items():
            pool_owed = rec._owed[pool]
            assert 0 <= avail <= alloc, repr(rec)
            assert 0 <= pool_owed <= alloc - avail, (pool, repr(rec))


# --------------------------------------------------------------------- growing


def test_grow_adds_available_slots(rec: ResourceCounter) -> None:
    assert rec.resize(10) == 10
    assert rec.total_slots == 10
    assert state(rec) == {None: (10, 10), "ml": (0, 0), "sim": (0, 0)}
    assert rec.resize(13, "ml") == 13
    assert state(rec) == {None: (10, 10), "ml": (3, 3), "sim": (0, 0)}
    assert rec.owed_slots == 0
    assert rec.acquire("ml", 3, timeout=0)
    assert rec.acquire(None, 10, timeout=0)
    check_invariants(rec)


def test_grow_from_zero(rec: ResourceCounter) -> None:
    rec.resize(0)
    assert state(rec) == {None: (0, 0), "ml": (0, 0), "sim": (0, 0)}
    assert not rec.acquire(None, 1, timeout=0)  # none now; sites may come back
    rec.resize(2, "sim")
    assert rec.acquire("sim", 2, timeout=0)
    check_invariants(rec)


# --------------------------------------------------------------------- shrinking


def test_shrink_takes_available_slots_at_once(rec: ResourceCounter) -> None:
    assert rec.reallocate(None, "ml", 3)
    assert rec.resize(6) == 6
    assert state(rec) == {None: (3, 3), "ml": (3, 3), "sim": (0, 0)}
    assert rec.resize(4, "ml") == 4
    assert state(rec) == {None: (3, 3), "ml": (1, 1), "sim": (0, 0)}
    assert rec.owed_slots == 0
    assert rec.total_slots == 4
    check_invariants(rec)


def test_shrink_takes_available_from_other_pools_in_order(rec: ResourceCounter) -> None:
    rec.reallocate(None, "ml", 3)
    rec.reallocate(None, "sim", 3)
    # sim has 3, then the unallocated pool gives its 2, ml is not touched
    rec.resize(3, "sim")
    assert state(rec) == {None: (0, 0), "ml": (3, 3), "sim": (0, 0)}
    rec.resize(1, "sim")
    assert state(rec) == {None: (0, 0), "ml": (1, 1), "sim": (0, 0)}
    assert rec.owed_slots == 0
    check_invariants(rec)


def test_shrink_while_in_use_owes_then_retires_released_slots(rec: ResourceCounter) -> None:
    assert rec.acquire(None, 6)
    rec.resize(4)
    assert rec.total_slots == 4  # the target, at once
    assert rec.owed_slots == 2
    assert state(rec) == {None: (0, 6), "ml": (0, 0), "sim": (0, 0)}
    assert "owed_slots=2" in repr(rec)
    check_invariants(rec)

    rec.release(None, 1)  # retired
    assert state(rec)[None] == (0, 5)
    assert rec.owed_slots == 1
    rec.release(None, 3)  # one retired, two available
    assert state(rec)[None] == (2, 4)
    assert rec.owed_slots == 0
    assert rec.allocated_slots(None) == rec.total_slots
    assert "owed_slots=0" in repr(rec)
    rec.release(None, 2)
    assert state(rec)[None] == (4, 4)
    check_invariants(rec)


def test_shrink_owes_on_pool_first_then_other_pools() -> None:
    rec = ResourceCounter(4, ["ml", "sim"])
    rec.reallocate(None, "ml", 2)
    rec.reallocate(None, "sim", 2)
    assert rec.acquire("ml", 2)
    assert rec.acquire("sim", 2)
    rec.resize(3, "sim")  # sim owes the one slot
    rec.release("ml", 1)
    assert state(rec)["ml"] == (1, 2)  # ml owes nothing: its slot became available
    rec.release("sim", 1)
    assert state(rec)["sim"] == (0, 1)
    assert rec.owed_slots == 0

    # two in use (ml 1, sim 1), one available in ml; shrink to 0 through sim
    rec.resize(0, "sim")
    assert rec.owed_slots == 2
    assert state(rec) == {None: (0, 0), "ml": (0, 1), "sim": (0, 1)}
    check_invariants(rec)
    rec.release("ml", 1)
    rec.release("sim", 1)
    assert state(rec) == {None: (0, 0), "ml": (0, 0), "sim": (0, 0)}
    assert rec.owed_slots == 0
    check_invariants(rec)


def test_release_retires_owed_slots_then_adds_the_extra(rec: ResourceCounter) -> None:
    assert rec.acquire(None, 3)
    rec.resize(5)
    assert rec.owed_slots == 0
    rec.resize(1)
    assert rec.owed_slots == 2
    rec.release(None, 3)
    assert state(rec)[None] == (1, 1)  # two retired, one available again
    assert rec.owed_slots == 0
    rec.release(None, 1)  # none in use: adds one, as Colmena's semaphore does
    assert state(rec)[None] == (2, 2) and rec.total_slots == 2


# --------------------------------------------------------------------- growing back


def test_grow_while_owed_cancels_the_debt_first(rec: ResourceCounter) -> None:
    assert rec.acquire(None, 6)
    rec.resize(4)
    assert rec.owed_slots == 2
    rec.resize(5)
    assert rec.owed_slots == 1
    assert state(rec)[None] == (0, 6)  # the slot stays, nothing new is added
    rec.resize(9)
    assert rec.owed_slots == 0
    assert state(rec)[None] == (3, 9)
    rec.release(None, 6)  # nothing is retired any more
    assert state(rec)[None] == (9, 9)
    check_invariants(rec)


def test_grow_of_another_pool_leaves_the_debt(rec: ResourceCounter) -> None:
    assert rec.acquire(None, 8)
    rec.resize(6)
    rec.resize(8, "ml")
    assert rec.owed_slots == 2
    assert state(rec) == {None: (0, 8), "ml": (2, 2), "sim": (0, 0)}
    rec.release(None, 8)
    assert state(rec) == {None: (6, 6), "ml": (2, 2), "sim": (0, 0)}
    check_invariants(rec)


def test_check_count_follows_the_most_slots_ever_managed(rec: ResourceCounter) -> None:
    rec.resize(3)
    assert not rec.acquire(None, 4, timeout=0)  # waits (here: gives up) for capacity to return
    with pytest.raises(ValueError, match="exceeds the 8 slots"):
        rec.acquire(None, 9)  # more than it ever had can never be served
    rec.resize(12)
    assert rec.acquire(None, 12, timeout=0)


# --------------------------------------------------------------------- blocked requests


def test_blocked_acquire_is_woken_by_growth(rec: ResourceCounter) -> None:
    assert rec.acquire(None, 8)
    call = Call(lambda: rec.acquire(None, 2))
    wait_for(lambda: rec.pending_requests(None) == 1)
    assert not call.done.is_set()
    rec.resize(10)
    assert call.result() is True
    assert state(rec)[None] == (0, 10)


def test_blocked_acquire_on_task_pool_is_woken_by_growth(rec: ResourceCounter) -> None:
    call = Call(lambda: rec.acquire("sim", 3))
    wait_for(lambda: rec.pending_requests("sim") == 1)
    rec.resize(10, "sim")
    # two slots: not enough yet, and a request takes all its slots or none
    assert state(rec)["sim"] == (2, 2)
    assert rec.pending_requests("sim") == 1
    rec.resize(11, "sim")
    assert call.result() is True
    assert state(rec)["sim"] == (0, 3)


def test_acquire_for_more_than_remains_is_served_after_regrowth(rec: ResourceCounter) -> None:
    assert rec.acquire(None, 4)
    call = Call(lambda: rec.acquire(None, 6))
    wait_for(lambda: rec.pending_requests(None) == 1)
    rec.resize(4)  # the 4 free slots go; the pool now holds 4, all in use
    assert state(rec)[None] == (0, 4)
    rec.release(None, 4)
    assert state(rec)[None] == (4, 4)
    assert rec.pending_requests(None) == 1  # still waiting for 6
    assert not call.done.is_set()
    rec.resize(8)
    assert call.result() is True
    assert state(rec)[None] == (2, 8)
    check_invariants(rec)


def test_acquire_with_cancel_if_still_works(rec: ResourceCounter) -> None:
    assert rec.acquire(None, 8)
    rec.resize(2)
    assert rec.owed_slots == 6
    assert rec.acquire(None, 1, timeout=0) is False

    stop = threading.Event()
    call = Call(lambda: rec.acquire(None, 2, cancel_if=stop))
    wait_for(lambda: rec.pending_requests(None) == 1)
    stop.set()
    assert call.result() is False
    assert rec.pending_requests(None) == 0
    assert state(rec)[None] == (0, 8)  # nothing taken

    keep = threading.Event()
    call = Call(lambda: rec.acquire(None, 2, cancel_if=keep))
    wait_for(lambda: rec.pending_requests(None) == 1)
    rec.release(None, 8)  # six retire, two become available
    assert call.result() is True
    assert state(rec)[None] == (0, 2)
    assert rec.owed_slots == 0


def test_reallocate_all_on_shrunk_pool_completes(rec: ResourceCounter) -> None:
    rec.reallocate(None, "ml", 8)
    assert rec.acquire("ml", 7)
    call = Call(lambda: rec.reallocate("ml", None, "all"))
    wait_for(lambda: rec.pending_requests("ml") == 1)
    rec.resize(5, "ml")  # the free slot goes, two in-use slots are owed
    assert state(rec)["ml"] == (0, 7)
    assert rec.owed_slots == 2
    rec.release("ml", 1)  # retired
    assert state(rec)["ml"] == (0, 6)
    assert rec.owed_slots == 1
    assert not call.done.is_set()
    rec.release("ml", 6)  # one retired, five available: those five are "all"
    assert call.result() is True
    assert state(rec) == {None: (5, 5), "ml": (0, 0), "sim": (0, 0)}
    assert rec.owed_slots == 0
    check_invariants(rec)


def test_reallocate_all_of_fully_owed_pool_moves_nothing(rec: ResourceCounter) -> None:
    rec.reallocate(None, "ml", 8)
    assert rec.acquire("ml", 8)
    call = Call(lambda: rec.reallocate("ml", "sim", "all"))
    wait_for(lambda: rec.pending_requests("ml") == 1)
    rec.resize(0, "ml")  # every ml slot is owed: "all" is now nothing
    assert call.result() is True
    assert state(rec)["sim"] == (0, 0)
    assert rec.owed_slots == 8
    rec.release("ml", 8)
    assert state(rec) == {None: (0, 0), "ml": (0, 0), "sim": (0, 0)}
    assert rec.owed_slots == 0
    check_invariants(rec)


# --------------------------------------------------------------------- validation, logging


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        (("3",), TypeError, "total_slots must be an int"),
        ((3.0,), TypeError, "total_slots must be an int"),
        ((True,), TypeError, "total_slots must be an int"),
        ((None,), TypeError, "total_slots must be an int"),
        ((-1,), ValueError, "total_slots must be >= 0"),
        ((4, "gpu"), KeyError, "unknown task type 'gpu'"),
    ],
)
def test_resize_validation(
    rec: ResourceCounter, args: tuple, error: type[Exception], match: str
) -> None:
    before = state(rec)
    with pytest.raises(error, match=match):
        rec.resize(*args)
    assert state(rec) == before
    assert rec.total_slots == 8


def test_resize_logs_one_info_line(rec: ResourceCounter, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="orchestrator.thinker.resources"):
        assert rec.resize(5, "ml") == 5
    records = [r for r in caplog.records if r.name == "orchestrator.thinker.resources"]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    assert "8" in records[0].getMessage() and "5" in records[0].getMessage()


# --------------------------------------------------------------------- concurrency


def test_randomized_resize_acquire_release_keeps_accounting() -> None:
    rec = ResourceCounter(6, ["a", "b"])
    rec.reallocate(None, "a", 2)
    rec.reallocate(None, "b", 2)
    pools: list[str | None] = [None, "a", "b"]
    errors: list[BaseException] = []
    workers_done = threading.Event()
    stop_blocking = threading.Event()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        held: list[tuple[str | None, int]] = []
        try:
            for _ in range(300):
                roll = rng.random()
                if held and roll < 0.45:
                    pool, n = held.pop(rng.randrange(len(held)))
                    rec.release(pool, n)
                elif roll < 0.55:
                    src, dst = rng.sample(pools, 2)
                    rec.reallocate(src, dst, 1, timeout=0)
                else:
                    pool = rng.choice(pools)
                    n = rng.randint(1, 2)
                    # timeout 0, a short wait, or a wait only a cancel or growth ends
                    if roll < 0.9:
                        ok = rec.acquire(pool, n, timeout=rng.choice([0, 0.002]))
                    else:
                        ok = rec.acquire(pool, n, timeout=WAIT_S, cancel_if=stop_blocking)
                    if ok:
                        held.append((pool, n))
            for pool, n in held:
                rec.release(pool, n)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def resizer() -> None:
        rng = random.Random(1234)
        try:
            while not workers_done.is_set():
                # never below 2, so a worker's request of 1 or 2 slots stays valid
                rec.resize(rng.randint(2, 9), rng.choice(pools))
                check_invariants(rec)
                workers_done.wait(0.001)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,), daemon=True) for seed in range(4)]
    resize_thread = threading.Thread(target=resizer, daemon=True)
    resize_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S * 6)
        if t.is_alive():  # a blocking acquire on an empty pool: let it give up
            stop_blocking.set()
            t.join(WAIT_S)
        assert not t.is_alive(), "worker hung"
    workers_done.set()
    resize_thread.join(WAIT_S)
    assert not resize_thread.is_alive()
    assert errors == []

    # nothing in use any more, so every debt is paid
    check_invariants(rec)
    assert rec.owed_slots == 0
    snap = state(rec)
    assert sum(alloc for _, alloc in snap.values()) == rec.total_slots
    assert all(avail == alloc for avail, alloc in snap.values()), repr(rec)
    assert all(rec.pending_requests(pool) == 0 for pool in pools)
    # and the counter still works: grow, then take everything
    rec.resize(10)
    for pool, (_, alloc) in state(rec).items():
        assert rec.acquire(pool, alloc, timeout=0)
