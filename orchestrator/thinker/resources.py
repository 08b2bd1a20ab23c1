"""Slot accounting for thinkers: pools of execution slots, one pool per task type.

A :class:`ResourceCounter` holds a number of slots (nodes, GPUs, workers: whatever unit the
campaign counts). Every slot is *allocated* to exactly one pool: a named task type, or the
unallocated pool, spelled ``None``. Within a pool, a slot is either *available* or *in use*:

- :meth:`ResourceCounter.acquire` takes available slots of a pool (marks them in use),
- :meth:`ResourceCounter.release` gives in-use slots back to the same pool (more than are in
  use adds the extra ones, as Colmena's semaphore does),
- :meth:`ResourceCounter.reallocate` moves slots from one pool to another, waiting until they
  are available in the source pool (that is, until the tasks using them have released them),
- :meth:`ResourceCounter.resize` changes the number of slots (sites came or went).

Capacity is elastic. Growing adds available slots to a pool (after cancelling any debt of that
pool, see below). Shrinking removes available slots at once; slots that are in use cannot be
taken from their tasks, so the rest of the shrink is *owed*: an owed slot stays allocated (and
in use) until it is released, and :meth:`ResourceCounter.release` then *retires* it (its
allocation drops, its availability does not rise). ``total_slots`` is the target at all times,
so ``sum(allocations) == total_slots + owed_slots``; once nothing is owed the allocations add
up to ``total_slots``. A pool never owes more slots than it has in use, so the debt is always
paid by releases alone.

Requests on one pool are served first come, first served: a large request at the head of the
line is not overtaken by smaller ones that arrive later. All methods are thread-safe.

:class:`ReallocatorThread` gathers slots into a pool in the background and gives them back when
told to stop; ``@event_responder(reallocate_resources=True)`` runs one around its function.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Final, Literal

logger = logging.getLogger(__name__)

CANCEL_POLL_INTERVAL_S: Final = 0.05
"""How often a blocked request re-checks its ``cancel_if`` event, in seconds."""

SlotRequest = int | Literal["all"]
"""A number of slots, or ``"all"``: every slot allocated to the pool."""


class ResourceCounter:
    """Track how many slots each task type is allocated and how many of those are free.

    All slots start in the unallocated pool (``None``); move them to task types with
    :meth:`reallocate`, and change their number with :meth:`resize`.

    Args:
        total_slots: Number of slots the counter manages.
        task_types: Names of the task-type pools. ``None`` is reserved for the unallocated pool.

    Raises:
        ValueError: ``total_slots`` is negative, a task type is ``None`` or appears twice.
        TypeError: ``total_slots`` is not an integer.

    """

    def __init__(self, total_slots: int, task_types: Iterable[str] = ()) -> None:
        if not isinstance(total_slots, int) or isinstance(total_slots, bool):
            raise TypeError(f"total_slots must be an int, got {total_slots!r}")
        if total_slots < 0:
            raise ValueError(f"total_slots must be >= 0, got {total_slots}")
        names = list(task_types)
        if any(name is None for name in names):
            raise ValueError("None is reserved for the unallocated pool; it cannot be a task type")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"task types must be unique; repeated: {', '.join(duplicates)}")

        self._total = total_slots
        self._most = total_slots  # the most slots it ever managed: a request up to it can wait
        self._task_types: tuple[str, ...] = tuple(names)
        pools: list[str | None] = [*names, None]
        self._cond = threading.Condition()
        self._allocated: dict[str | None, int] = {pool: 0 for pool in pools}
        self._available: dict[str | None, int] = {pool: 0 for pool in pools}
        self._lines: dict[str | None, deque[object]] = {pool: deque() for pool in pools}
        self._owed: dict[str | None, int] = {pool: 0 for pool in pools}
        self._allocated[None] = total_slots
        self._available[None] = total_slots
        logger.info(
            "Resource counter with %d slots and task types: %s",
            total_slots,
            ", ".join(names) or "(none)",
        )

    # ------------------------------------------------------------------ inspection

    @property
    def total_slots(self) -> int:
        """Number of slots the counter manages: the target of the last :meth:`resize`.

        While slots are still owed (see :attr:`owed_slots`) the pools hold that many more.
        """
        return self._total

    @property
    def owed_slots(self) -> int:
        """Number of in-use slots, over all pools, still to be retired by a shrink."""
        with self._cond:
            return sum(self._owed.values())

    @property
    def task_types(self) -> tuple[str, ...]:
        """Names of the task-type pools (the unallocated pool, ``None``, not included)."""
        return self._task_types

    @property
    def unallocated_slots(self) -> int:
        """Number of slots in the unallocated pool, in use or not."""
        with self._cond:
            return self._allocated[None]

    def allocated_slots(self, task_type: str | None) -> int:
        """Return the number of slots allocated to a pool, in use or not.

        Args:
            task_type: Name of the pool (``None`` for the unallocated pool).

        Raises:
            KeyError: Unknown task type.

        """
        self._check_pool(task_type)
        with self._cond:
            return self._allocated[task_type]

    def available_slots(self, task_type: str | None) -> int:
        """Return the number of slots of a pool that are free to acquire now.

        Args:
            task_type: Name of the pool (``None`` for the unallocated pool).

        Raises:
            KeyError: Unknown task type.

        """
        self._check_pool(task_type)
        with self._cond:
            return self._available[task_type]

    def pending_requests(self, task_type: str | None) -> int:
        """Return the number of acquire or reallocate requests waiting on a pool.

        Args:
            task_type: Name of the pool (``None`` for the unallocated pool).

        Raises:
            KeyError: Unknown task type.

        """
        self._check_pool(task_type)
        with self._cond:
            return len(self._lines[task_type])

    def __repr__(self) -> str:
        with self._cond:
            total = self._total
            pools = ", ".join(
                f"{pool!r}: {self._available[pool]}/{self._allocated[pool]}"
                for pool in self._allocated
            )
            owed = sum(self._owed.values())
        return (
            f"ResourceCounter(total_slots={total}, owed_slots={owed}, "
            f"available/allocated={{{pools}}})"
        )

    # ------------------------------------------------------------------ operations

    def acquire(
        self,
        task_type: str | None,
        n_slots: int = 1,
        timeout: float | None = None,
        cancel_if: threading.Event | None = None,
    ) -> bool:
        """Take ``n_slots`` available slots of a pool, waiting until they are free.

        Requests on a pool are served in arrival order. Slots are taken all at once: a request
        that fails (timeout or cancellation) takes nothing.

        Args:
            task_type: Name of the pool (``None`` for the unallocated pool).
            n_slots: Number of slots to take.
            timeout: Longest wait in seconds; ``None`` (or a negative number, as in Colmena)
                waits for ever, ``0`` only tries once.
            cancel_if: Give up as soon as this event is set. Checked before anything is
                taken, so a set event makes the request fail even when slots are free.

        Returns:
            Whether the slots were taken.

        Raises:
            KeyError: Unknown task type.
            ValueError: ``n_slots`` is negative or larger than the counter's current total.

        """
        self._check_pool(task_type)
        n = self._check_count(n_slots)
        with self._cond:
            return self._take(task_type, n, timeout, cancel_if) is not None

    def release(
        self,
        task_type: str | None = None,
        n_slots: int = 1,
        rerequest: bool = False,
        timeout: float | None = None,
    ) -> bool | None:
        """Give ``n_slots`` slots back to their pool (arguments in Colmena's order).

        While the pool owes slots to a shrink (see :meth:`resize`), released slots are retired
        first: they leave the pool's allocation instead of becoming available, until the debt
        is paid; only the rest become available.

        Releasing more slots than the pool has in use adds the extra ones to it, as
        Colmena's semaphore does: the pool's allocation and :attr:`total_slots` grow by that
        many (logged as a warning, since it is often a bookkeeping slip). A campaign may use
        it on purpose to bring slots into being, e.g. ``rec.release("sim", 4)`` on a counter
        made with ``ResourceCounter(0, ["sim"])``.

        Args:
            task_type: Name of the pool (``None`` for the unallocated pool).
            n_slots: Number of slots to give back.
            rerequest: Acquire the same number of slots again right away (Colmena's option).
            timeout: Longest wait for the re-request, as in :meth:`acquire`.

        Returns:
            ``None``, or with ``rerequest`` whether the slots were acquired again.

        Raises:
            KeyError: Unknown task type.
            ValueError: ``n_slots`` is negative.

        """
        self._check_pool(task_type)
        # not bounded by the total: after a shrink, owed slots in use may outnumber it
        n = self._check_count(n_slots, bounded=False)
        with self._cond:
            in_use = self._allocated[task_type] - self._available[task_type]
            extra = max(0, n - in_use)
            n -= extra
            retired = min(n, self._owed[task_type])
            if retired:
                self._owed[task_type] -= retired
                self._allocated[task_type] -= retired
            self._available[task_type] += n - retired
            if extra:
                self._allocated[task_type] += extra
                self._available[task_type] += extra
                self._total += extra
                self._most = max(self._most, self._total)
            self._cond.notify_all()
        if retired:
            logger.debug("Retired %d released slots of %r", retired, task_type)
        if extra:
            logger.warning(
                "Released %d slots of %r that were not in use: added them to the pool "
                "(now %d slots in total)",
                extra,
                task_type,
                self._total,
            )
        if rerequest:
            return self.acquire(task_type, n_slots, timeout=timeout)
        return None

    def reallocate(
        self,
        task_from: str | None,
        task_to: str | None,
        n_slots: SlotRequest,
        block: bool = True,
        callback: Callable[[], Any] | None = None,
        timeout: float | None = None,
        cancel_if: threading.Event | None = None,
    ) -> bool:
        """Move slots from one pool to another (arguments in Colmena's order).

        The slots are taken from the source pool as :meth:`acquire` would (waiting until they
        are available, in line with other requests on that pool), then added to the target
        pool's allocation as available slots, in one step.

        Args:
            task_from: Pool to take slots from (``None``: the unallocated pool).
            task_to: Pool to give slots to (``None``: de-allocate them).
            n_slots: Number of slots, or ``"all"``: every slot allocated to ``task_from``,
                waiting until none of them is in use. Slots the pool owes to a shrink (see
                :meth:`resize`) are not part of "all": they retire when released.
            block: With ``False``, do the transfer in a background thread and return at once.
            callback: With ``block=False``, called once the transfer ended (done or not).
            timeout: Longest wait, as in :meth:`acquire`.
            cancel_if: Give up as soon as this event is set, as in :meth:`acquire`.

        Returns:
            Whether the slots moved; always ``True`` with ``block=False``.

        Raises:
            KeyError: Unknown task type.
            ValueError: Both pools are the same, or ``n_slots`` is invalid.

        """
        self._check_pool(task_from)
        self._check_pool(task_to)
        if task_from == task_to:
            raise ValueError(f"cannot move slots from a pool to itself ({task_from!r})")
        amount: SlotRequest = n_slots if n_slots == "all" else self._check_count(n_slots)

        if not block:

            def _transfer() -> None:
                try:
                    self.reallocate(
                        task_from, task_to, amount, timeout=timeout, cancel_if=cancel_if
                    )
                finally:
                    if callback is not None:
                        callback()

            threading.Thread(target=_transfer, name="reallocate", daemon=True).start()
            return True

        with self._cond:
            moved = self._take(task_from, amount, timeout, cancel_if)
            if moved is None:
                return False
            self._allocated[task_from] -= moved
            self._allocated[task_to] += moved
            self._available[task_to] += moved
            self._cond.notify_all()
        logger.info("Moved %d slots from %r to %r", moved, task_from, task_to)
        return True

    def resize(self, total_slots: int, pool: str | None = None) -> int:
        """Change the number of slots the counter manages (sites came or went).

        Growing by ``k`` slots first cancels up to ``k`` slots that ``pool`` still owes to an
        earlier shrink (they stay allocated to it), then adds the rest to ``pool``'s allocation
        as available slots. Debts of other pools are left as they are.

        Shrinking by ``k`` slots takes up to ``k`` available slots away at once (their
        allocation and availability both drop): first from ``pool``, then from the other pools
        in order (the unallocated pool, then the task types in the order given to the
        constructor). What is still missing is owed by slots in use: by ``pool`` up to the
        number of its in-use slots that are not owed already, then by the other pools in the
        same order. Later :meth:`release` calls on an owing pool retire the released slots
        until its debt is paid. The debt can always be placed: the slots that are available,
        or in use but not owed, number exactly the old total.

        :attr:`total_slots` is the new total as soon as this returns, even while slots are
        still owed. Waiting requests are woken either way: a request for more slots than its
        pool now holds keeps waiting (until it times out, is cancelled or capacity comes
        back); ``reallocate(pool, ..., "all")`` no longer waits for owed slots.

        Args:
            total_slots: The new number of slots.
            pool: Pool that receives or gives up the slots first (``None``: the unallocated
                pool).

        Returns:
            The new number of slots.

        Raises:
            TypeError: ``total_slots`` is not an integer (a ``bool`` is rejected).
            ValueError: ``total_slots`` is negative.
            KeyError: Unknown task type.

        """
        if not isinstance(total_slots, int) or isinstance(total_slots, bool):
            raise TypeError(f"total_slots must be an int, got {total_slots!r}")
        if total_slots < 0:
            raise ValueError(f"total_slots must be >= 0, got {total_slots}")
        self._check_pool(pool)
        with self._cond:
            old = self._total
            delta = total_slots - old
            if delta >= 0:
                kept = min(delta, self._owed[pool])
                self._owed[pool] -= kept
                self._allocated[pool] += delta - kept
                self._available[pool] += delta - kept
            else:
                missing = -delta
                order = [pool, *(other for other in (None, *self._task_types) if other != pool)]
                for source in order:
                    taken = min(missing, self._available[source])
                    self._allocated[source] -= taken
                    self._available[source] -= taken
                    missing -= taken
                for source in order:
                    in_use = self._allocated[source] - self._available[source]
                    owed = min(missing, in_use - self._owed[source])
                    self._owed[source] += owed
                    missing -= owed
                assert missing == 0, "slot accounting out of balance"
            self._total = total_slots
            self._most = max(self._most, total_slots)
            owed_now = sum(self._owed.values())
            self._cond.notify_all()
        logger.info(
            "Resized from %d to %d slots via pool %r; %d slots owed",
            old,
            total_slots,
            pool,
            owed_now,
        )
        return total_slots

    # ------------------------------------------------------------------ internals

    def _check_pool(self, task_type: str | None) -> None:
        if task_type not in self._allocated:
            known = ", ".join(self._task_types) or "(none)"
            raise KeyError(f"unknown task type {task_type!r}; known task types: {known}")

    def _check_count(self, n_slots: object, *, bounded: bool = True) -> int:
        """Validate a slot count; ``bounded``: it may not exceed the most slots ever managed.

        After a shrink, a request for more than the current total waits for capacity to
        come back (sites return); one for more than the counter ever had can never be served.
        """
        if not isinstance(n_slots, int) or isinstance(n_slots, bool):
            raise ValueError(f"n_slots must be an int, got {n_slots!r}")
        if n_slots < 0:
            raise ValueError(f"n_slots must be >= 0, got {n_slots}")
        if bounded and n_slots > self._most:
            raise ValueError(f"n_slots={n_slots} exceeds the {self._most} slots in total")
        return n_slots

    def _take(
        self,
        pool: str | None,
        amount: SlotRequest,
        timeout: float | None,
        cancel_if: threading.Event | None,
    ) -> int | None:
        """Wait in line on ``pool`` and take ``amount`` available slots (lock held).

        Returns:
            The number of slots taken, or ``None`` on timeout or cancellation.

        """
        deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
        ticket = object()
        line = self._lines[pool]
        line.append(ticket)
        try:
            while True:
                if cancel_if is not None and cancel_if.is_set():
                    return None
                if line[0] is ticket:
                    need = self._allocated[pool] - self._owed[pool] if amount == "all" else amount
                    if self._available[pool] >= need:
                        self._available[pool] -= need
                        return need
                wait: float | None = None
                if deadline is not None:
                    wait = deadline - time.monotonic()
                    if wait <= 0:
                        return None
                if cancel_if is not None:
                    wait = (
                        CANCEL_POLL_INTERVAL_S
                        if wait is None
                        else min(wait, CANCEL_POLL_INTERVAL_S)
                    )
                self._cond.wait(wait)
        finally:
            line.remove(ticket)
            self._cond.notify_all()


class ReallocatorThread(threading.Thread):
    """Background thread that gathers slots into a pool, then gives them back when stopped.

    While running, it moves slots from ``gather_from`` to ``gather_to``, ``slot_step`` at a
    time, until ``gather_to`` holds ``max_slots`` (without a maximum, until stopped). Once
    ``stop_event`` is set, it moves *every* slot allocated to ``gather_to`` (gathered or not)
    to ``disperse_to``, waiting for those in use to be released (once ``abort_event`` is set,
    only slots already free move). When ``gather_to`` and
    ``disperse_to`` are the same pool the slots stay where they are.

    Stop it with ``thread.stop_event.set()``. Runs as a daemon thread.

    Args:
        resource_counter: Counter whose slots are moved.
        gather_from: Pool to take slots from (``None``: the unallocated pool).
        gather_to: Pool to gather slots into.
        disperse_to: Pool that receives ``gather_to``'s slots once stopped.
        max_slots: Most slots ``gather_to`` should hold; ``None`` for no limit.
        stop_event: Event that stops gathering; a new one is made if not given.
        slot_step: Slots moved per request.
        logger_name: Name of the logger to use (default: this module's).
        abort_event: If set while the thread waits to disperse (e.g. the campaign's ``done``
            flag), give up instead of waiting for in-use slots to be released.

    Raises:
        ValueError: ``gather_from`` equals ``gather_to``, or ``slot_step``/``max_slots`` is
            not a positive/non-negative integer.

    """

    def __init__(
        self,
        resource_counter: ResourceCounter,
        gather_from: str | None,
        gather_to: str | None,
        disperse_to: str | None,
        max_slots: int | None = None,
        stop_event: threading.Event | None = None,
        slot_step: int = 1,
        logger_name: str | None = None,
        *,
        abort_event: threading.Event | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"reallocate-{gather_from}-to-{gather_to}")
        if gather_from == gather_to:
            raise ValueError(f"slots must be gathered from another pool than {gather_to!r}")
        if isinstance(slot_step, bool) or not isinstance(slot_step, int) or slot_step < 1:
            raise ValueError(f"slot_step must be a positive int, got {slot_step!r}")
        if max_slots is not None and (
            isinstance(max_slots, bool) or not isinstance(max_slots, int) or max_slots < 0
        ):
            raise ValueError(f"max_slots must be a non-negative int or None, got {max_slots!r}")
        self.resource_counter = resource_counter
        self.gather_from = gather_from
        self.gather_to = gather_to
        self.disperse_to = disperse_to
        self.max_slots = max_slots
        self.slot_step = slot_step
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.abort_event = abort_event
        self.logger = logger if logger_name is None else logging.getLogger(logger_name)

    def run(self) -> None:
        """Gather slots until the limit or the stop event, then disperse them."""
        rec = self.resource_counter
        self.logger.info(
            "Gathering up to %s slots from %r into %r, %d at a time",
            "all" if self.max_slots is None else self.max_slots,
            self.gather_from,
            self.gather_to,
            self.slot_step,
        )
        while not self.stop_event.is_set():
            step = self.slot_step
            if self.max_slots is not None:
                room = self.max_slots - rec.allocated_slots(self.gather_to)
                if room <= 0:
                    break
                step = min(step, room)
            rec.reallocate(self.gather_from, self.gather_to, step, cancel_if=self.stop_event)

        self.stop_event.wait()
        if self.gather_to == self.disperse_to:
            self.logger.info("Stopped; slots stay in %r", self.gather_to)
            return
        # Slots already free move even when the campaign is ending; only waiting is given up.
        moved = rec.reallocate(self.gather_to, self.disperse_to, "all", timeout=0)
        if not moved:
            moved = rec.reallocate(
                self.gather_to, self.disperse_to, "all", cancel_if=self.abort_event
            )
        if moved:
            self.logger.info(
                "Stopped; moved the slots of %r to %r", self.gather_to, self.disperse_to
            )
        else:
            self.logger.info(
                "Aborted before the slots of %r could move to %r", self.gather_to, self.disperse_to
            )
