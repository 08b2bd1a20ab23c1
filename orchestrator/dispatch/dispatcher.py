"""The dispatcher: places tasks on sites, retries them, and records every state change.

Every task state change passes through :meth:`Dispatcher._change`: the journal writes it
there before the dispatcher acts on it, then the listeners (e.g. the progress display) see it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.apps.failures import summary_line
from orchestrator.dispatch.journal import Journal, input_key
from orchestrator.dispatch.methods import MethodRegistry
from orchestrator.dispatch.results import ResultsWriter
from orchestrator.exceptions import ConfigError, SiteUnavailableError
from orchestrator.models import (
    BAD_INPUT,
    CANCELLED,
    SITE_FAILURE,
    TIMEOUT,
    FailureInfo,
    FailureReason,
    Move,
    Result,
    Sizes,
    Task,
    Timestamps,
)
from orchestrator.resources import Granted
from orchestrator.sites.base import Outcome, Site

if TYPE_CHECKING:
    from orchestrator.data import DataPlane

logger = logging.getLogger(__name__)

CapacityListener = Callable[[str, int], None]
"""``listener(kind, capacity)``: the workers of ``kind`` that can take tasks changed."""

StateListener = Callable[[str, Task, "Site | None"], None]
"""``listener(state, task, site)``; states: submitted, replayed, waiting, sent, done, failed,
retried, received, interrupted."""

WALLTIME_GRACE = 10.0
"""Seconds orch waits past a task's wall time for the worker's own report before it declares
the task timed out itself (a worker stuck in native code cannot stop on its own)."""

DOWN_RETRY = 2.0
"""Seconds before orch first tries to bring a down site back; doubled after each failed try."""

DOWN_RETRY_MAX = 60.0
"""Longest wait between two tries to bring a down site back."""

SITE_WAIT = 600.0
"""Default seconds a task waits for a site of its kind to come back when none is up."""

MONITOR_S = 1.0
"""Seconds between two looks at the sites: their health, lost tasks, tasks waiting too long."""


@dataclass
class SiteStats:
    """Counts for one site, as shown by the progress display."""

    kind: str
    capacity: int
    in_flight: int = 0
    """Tasks sent to the site whose result has not come back."""
    slots_used: int = 0
    """Slots (nodes on an MPI site, else cores) those tasks take."""
    done: int = 0
    failed: int = 0
    moved: int = 0
    down: str | None = None
    drained: bool = False

    @property
    def running(self) -> int:
        """Slots the site's tasks keep busy (at most ``capacity``)."""
        return min(self.slots_used, self.capacity)

    @property
    def queued(self) -> int:
        """Slots of tasks sent to the site that wait there for free workers."""
        return self.slots_used - self.running


def check_kinds(methods: MethodRegistry, available: set[str]) -> None:
    """Fail with a clear line when a method needs a kind of site that is not configured."""
    missing = sorted(methods.kinds() - available)
    if missing:
        needs = ", ".join(m.name for m in methods if m.kind in missing)
        raise ConfigError(
            f"no site of kind {'/'.join(missing)} for method(s) {needs}; add a site YAML "
            f"with 'kind: {missing[0]}' to the sites directory"
        )


class Dispatcher:
    """Places tasks on sites of the kind their method needs and routes results back.

    Placement: among the sites of the method's kind that are up and have room under their
    ``max_in_flight``, the least loaded (slots in flight / capacity) wins; ties go to the
    site used least recently, so work spreads across sites. Tasks that find no room wait in
    a per-kind backlog and are sent as slots free up.

    Failures: a failed attempt whose reason the method retries (by default site failures and
    timeouts) is placed again, after the method's back-off, on any up site of its kind, within
    the task's retry budget; the result lists each move (``Result.moves``). A site that goes
    down is tried again after :data:`DOWN_RETRY` seconds (doubling), and takes tasks again
    once it answers.

    Args:
        sites: Started site backends.
        methods: The campaign's methods.
        deliver: Called with each finished ``Result`` (from a site's callback thread).
        run_dir: Campaign directory; results go to ``run_dir/results/<topic>.jsonl``.
        data: The campaign's data plane: large arguments move by proxy in the chosen site's
            store, and proxied results are adopted so the campaign's end cleans them up.
        journal: Where every state change and final result is written before it is acted
            on; on ``--resume`` it also hands back earlier results for repeated calls.
        down_retry: Seconds before a down site is first tried again (``None``: never).
        walltime_grace: Seconds past a task's wall time before orch reports it timed out
            itself (when the worker could not).
        site_wait: Seconds a task waits for a site of its kind when none is up (an outage)
            before it fails with reason ``no_site``.
        monitor_interval: Seconds between two looks at the sites (``site.health_check()``,
            ``site.lost()``) and at tasks waiting out an outage.
    """

    def __init__(
        self,
        sites: Iterable[Site],
        methods: MethodRegistry,
        deliver: Callable[[Result], None],
        run_dir: Path,
        data: DataPlane | None = None,
        journal: Journal | None = None,
        down_retry: float | None = DOWN_RETRY,
        walltime_grace: float = WALLTIME_GRACE,
        site_wait: float = SITE_WAIT,
        monitor_interval: float = MONITOR_S,
    ):
        self.sites = list(sites)
        self.methods = methods
        self.data = data
        self.journal = journal
        self._deliver = deliver
        self._lock = threading.Lock()
        self._by_kind: dict[str, list[Site]] = {}
        for site in self.sites:
            self._by_kind.setdefault(site.kind, []).append(site)
            site.on_down(self._site_down)
        check_kinds(methods, set(self._by_kind))
        self._slots: dict[str, int] = {s.name: 0 for s in self.sites}
        self._wide: dict[str, int] = {s.name: 0 for s in self.sites}  # multi-slot tasks in flight
        self._tick = itertools.count()
        self._last_used: dict[str, int] = {s.name: -1 for s in self.sites}
        self._backlog: dict[str, deque[Task]] = {kind: deque() for kind in self._by_kind}
        self._attempts: dict[tuple[str, int], tuple[Task, Site]] = {}
        self._futures: dict[tuple[str, int], Future] = {}
        self._held_at: dict[str, float] = {}  # task id -> when it entered a backlog
        self._all_down_since: dict[str, float] = {}  # kind -> when its last site went down
        self._timers: set[threading.Timer] = set()
        self._delayed: dict[str, Task] = {}
        self.stats: dict[str, SiteStats] = {
            s.name: SiteStats(kind=s.kind, capacity=s.capacity) for s in self.sites
        }
        self.listeners: list[StateListener] = []
        self.capacity_listeners: list[CapacityListener] = []
        """Called with ``(kind, workers)`` when the workers of a kind that take tasks change
        (a site went down, came back, was drained or undrained)."""
        self._capacity = {kind: self.capacity(kind) for kind in self._by_kind}
        """Workers per kind as last told to the capacity listeners (to tell changes only)."""
        self.results = ResultsWriter(run_dir / "results")
        self._closed = False
        self._idle = threading.Condition(self._lock)
        self._down_retry = down_retry
        self._grace = walltime_grace
        self._site_wait = site_wait
        self._stop = threading.Event()
        self.lost_tasks = 0
        """Tasks found lost at a site (their result never came) and failed by orch."""
        self._monitor_interval = monitor_interval
        self._monitor = threading.Thread(target=self._watch, name="orch-monitor", daemon=True)
        self._monitor.start()

    # -- state changes -------------------------------------------------------------------

    def _change(self, state: str, task: Task, site: Site | None = None, detail: str = "") -> None:
        if self.journal is not None and state in _JOURNALED:
            self.journal.event(task.task_id, state, site.name if site else None, detail)
        for listener in self.listeners:
            try:
                listener(state, task, site)
            except Exception:  # noqa: BLE001 - an observer must never break dispatch
                logger.exception("state listener failed on %s for %s", state, task.task_id)

    def waiting(self, kind: str) -> int:
        """Tasks of ``kind`` held in orch until a site has room."""
        return len(self._backlog.get(kind, ()))

    def in_flight(self) -> int:
        """Tasks sent to a site, waiting in orch's backlog, or waiting to be retried."""
        with self._lock:
            return len(self._attempts) + sum(map(len, self._backlog.values())) + len(self._delayed)

    # -- submission ----------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        """Place ``task`` on a site now, or hold it until one has room.

        With a resumed journal, a task whose method and inputs match a result completed in an
        earlier run gets that result at once (``Result.replayed``), without running again.
        """
        if self._closed:
            raise SiteUnavailableError("the campaign is shutting down; no new tasks are accepted")
        method = self.methods.get(task.method)
        task.slots = method.slots
        if not task.resources_given:
            task.resources = method.resources
        if task.walltime is None:
            task.walltime = method.walltime
        refused = self._refusal(task, method.kind)
        if refused is not None:
            self._change("submitted", task)
            outcome = Outcome.site_failure("ResourcesError", refused, reason=BAD_INPUT)
            self._finish(task, None, outcome, final=True)
            return
        if self.journal is not None:
            task.input_key = input_key(task.method, task.args, task.kwargs)
            earlier = self.journal.replay(task.input_key)
            if earlier is not None:
                earlier.replayed = True
                earlier.restore_inputs(task.args, task.kwargs)  # equal by key, not journaled
                if task.model_version is not None and earlier.model_version is None:
                    earlier.model_version = task.model_version
                self._change("replayed", task)
                self._deliver(earlier)
                return
            self.journal.created(
                task.task_id, task.method, task.topic, task.input_key, task.created
            )
        self._change("submitted", task)
        self._place_or_hold(task, method.kind)

    def _refusal(self, task: Task, kind: str) -> str | None:
        """Why no site of ``kind`` can ever run ``task`` (None when one can)."""
        reasons = [site.refusal(task.resources) for site in self._by_kind[kind]]
        if all(reasons):
            return (
                f"the task asks for {task.resources.describe()}, which no {kind} site can give: "
                f"{'; '.join(r for r in reasons if r)}; ask for less, or add a site that has it"
            )
        return None

    def _need(self, site: Site, task: Task) -> int:
        """Slots ``task`` takes at ``site``."""
        return max(task.slots, site.slots_for(task.resources))

    def _fits(self, site: Site, need: int) -> bool:
        """Whether a task of ``need`` slots may be sent to ``site`` now (caller holds the lock).

        Single-slot tasks are sent up to the site's ``max_in_flight`` (they queue there for
        the next free worker). A task of several slots is sent only when they are free, and
        while one runs nothing is queued past the capacity: a worker that takes a queued task
        cannot know the cores an MPI program of another worker uses.
        """
        used = self._slots[site.name]
        if need > 1 or self._wide[site.name]:
            return used + need <= site.capacity
        return used + need <= site.config.in_flight_limit

    def _choose(self, kind: str, task: Task, avoid: str | None = None) -> Site | None:
        """Pick the site for a task (caller holds the lock); ``None`` when none has room.

        ``avoid`` (the site a retried task just failed on) is taken only when no other has
        room. Sites that can never run the task (too small) are skipped.
        """
        best: Site | None = None
        best_key: tuple[bool, float, int] | None = None
        best_need = 0
        for site in self._by_kind[kind]:
            if site.is_down or self.stats[site.name].drained:
                continue
            if site.refusal(task.resources) is not None:
                continue
            need = self._need(site, task)
            if not self._fits(site, need):
                continue
            used = self._slots[site.name]
            key = (site.name == avoid, used / site.capacity, self._last_used[site.name])
            if best_key is None or key < best_key:
                best, best_key, best_need = site, key, need
        if best is not None:
            task.placed_slots = best_need
            self._slots[best.name] += best_need
            if best_need > 1:
                self._wide[best.name] += 1
            self._last_used[best.name] = next(self._tick)
            self.stats[best.name].in_flight += 1
            self.stats[best.name].slots_used += best_need
        return best

    def _place_or_hold(self, task: Task, kind: str) -> None:
        """Send ``task`` to the best site of ``kind``, or hold it in the kind's backlog.

        A task waits there while every site of the kind is busy, and also while every one is
        down (an outage), up to ``site_wait`` seconds; it is sent as soon as one has room.
        """
        with self._lock:
            outage = all(site.is_down for site in self._by_kind[kind])
            avoid = task.moves[-1].site if task.moves else None
            # Behind tasks already waiting (first come, first served: a wide task waiting
            # for its slots is not overtaken by a stream of small ones).
            queued_ahead = bool(self._backlog[kind])
            site = None if outage or queued_ahead else self._choose(kind, task, avoid)
            if site is None:
                self._backlog[kind].append(task)
                self._held_at[task.task_id] = time.monotonic()
        if site is None:
            self._change("waiting", task, detail=f"no {kind} site is up" if outage else "")
            if queued_ahead and not outage:
                self._drain_backlog(kind)
            return
        self._send(task, site)

    def _no_site_outcome(self, kind: str) -> Outcome:
        reasons = "; ".join(s.down_reason or "" for s in self._by_kind[kind])
        return Outcome.site_failure(
            "NoSiteUp",
            f"no {kind} site came back within site_wait ({self._site_wait:g} s): {reasons}",
            reason=FailureReason.NO_SITE,
        )

    def _send(self, task: Task, site: Site) -> None:
        task.site = site.name
        method = self.methods.get(task.method)
        args, kwargs = task.args, task.kwargs
        task.attempt += 1
        attempt = (task.task_id, task.attempt)
        with self._lock:
            self._attempts[attempt] = (task, site)
        try:
            if self.data is not None and self.data.uses_proxies(site.name):
                args, kwargs, n_proxied = self.data.proxy_arguments(
                    args,
                    kwargs,
                    site.name,
                    threshold=method.proxy_threshold,
                    task_id=task.task_id,
                )
                task.inputs_by_proxy = (
                    _sent_by_proxy(task.args, task.kwargs, args, kwargs) if n_proxied else []
                )
            task.sent = time.time()
            self._change("sent", task, site)
            future = site.submit(
                method.function,
                args,
                kwargs,
                walltime=task.walltime,
                task_id=task.task_id,
                resources=task.resources,
            )
        except SiteUnavailableError as exc:
            if self._claim(attempt):
                self._release(site, task)
                if site.is_down:  # it went down as it was chosen: not the task's failure
                    task.moves.append(
                        Move(
                            site=site.name,
                            reason=SITE_FAILURE,
                            message=summary_line(exc),
                            time=time.time(),
                        )
                    )
                    self.stats[site.name].moved += 1
                    self._change("retried", task, site, detail=SITE_FAILURE)
                    self._place_or_hold(task, site.kind)
                else:
                    self._finish(task, site, Outcome.site_failure("SiteUnavailableError", str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - e.g. arguments that cannot be serialized
            if self._claim(attempt):
                self._release(site, task)
                self._finish(
                    task, site, Outcome.site_failure(type(exc).__name__, f"could not send: {exc}")
                )
            return
        with self._lock:
            if attempt in self._attempts:
                self._futures[attempt] = future
        if task.walltime is not None:
            self._after(task.walltime + self._grace, self._overdue, attempt)
        future.add_done_callback(lambda fut: self._on_done(attempt, fut))

    def _claim(self, attempt: tuple[str, int]) -> tuple[Task, Site] | None:
        """Take the attempt out of the in-flight set; ``None`` if something else already did."""
        with self._lock:
            claimed = self._attempts.pop(attempt, None)
            self._futures.pop(attempt, None)
            if not self._attempts:
                self._idle.notify_all()
            return claimed

    def _release(self, site: Site, task: Task) -> None:
        """Free the task's slots at ``site`` and send what the backlog can now place."""
        with self._lock:
            self._slots[site.name] -= task.placed_slots
            if task.placed_slots > 1:
                self._wide[site.name] -= 1
            self.stats[site.name].in_flight -= 1
            self.stats[site.name].slots_used -= task.placed_slots
        self._drain_backlog(site.kind)

    def _drain_backlog(self, kind: str) -> None:
        if self._closed:  # stopping: what waits in the backlog is interrupted, not sent
            return
        ready: list[tuple[Task, Site]] = []
        with self._lock:
            backlog = self._backlog[kind]
            while backlog:
                nxt = backlog[0]
                chosen = self._choose(kind, nxt)
                if chosen is None:
                    break
                backlog.popleft()
                self._held_at.pop(nxt.task_id, None)
                ready.append((nxt, chosen))
        for nxt, chosen in ready:
            self._send(nxt, chosen)

    def _after(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        """Call ``fn(*args)`` in ``delay`` seconds from a timer thread (cancelled by close)."""
        timer: threading.Timer

        def fire() -> None:
            with self._lock:
                self._timers.discard(timer)
            fn(*args)

        timer = threading.Timer(delay, fire)
        timer.daemon = True
        with self._lock:
            if self._stop.is_set():
                return
            self._timers.add(timer)
        timer.start()

    # -- completion ----------------------------------------------------------------------

    def _on_done(self, attempt: tuple[str, int], future: Future) -> None:
        returned = time.time()
        claimed = self._claim(attempt)
        if claimed is None:  # already declared timed out, or interrupted
            return
        task, site = claimed
        outcome = site.outcome(future)
        self._release(site, task)
        self._finish(task, site, outcome, returned)

    def _overdue(self, attempt: tuple[str, int]) -> None:
        claimed = self._claim(attempt)
        if claimed is None:
            return
        task, site = claimed
        logger.warning(
            "task %s (%s) on %s: no result %g s past its wall time of %g s",
            task.task_id,
            task.method,
            site.name,
            self._grace,
            task.walltime or 0,
        )
        self._release(site, task)
        outcome = Outcome.site_failure(
            "TaskTimeout",
            f"no result from site '{site.name}' {self._grace:g} s after the task's wall "
            f"time of {task.walltime:g} s",
            reason=TIMEOUT,
        )
        self._finish(task, site, outcome)

    def _finish(
        self,
        task: Task,
        site: Site | None,
        outcome: Outcome,
        returned: float | None = None,
        final: bool = False,
    ) -> None:
        failure = outcome.failure or {}
        reason = failure.get("reason")
        if site is not None:
            stats = self.stats[site.name]
            if outcome.ok:
                stats.done += 1
            else:
                stats.failed += 1
            if self.journal is not None and task.attempt > 0:
                self.journal.attempt(
                    task.task_id,
                    task.attempt,
                    task.method,
                    site.name,
                    (task.sent, outcome.started, outcome.finished, returned or time.time()),
                    outcome.ok,
                    host=outcome.host,
                    pid=outcome.pid,
                    reason=None if outcome.ok else str(reason or failure.get("exception_type")),
                    message=summary_line(failure.get("message")) or None,
                )
        if (
            not outcome.ok
            and not final
            and reason != CANCELLED
            and task.retries < task.max_retries
            and not self._closed
        ):
            method = self.methods.get(task.method)
            if method.should_retry(reason):
                task.retries += 1
                task.moves.append(
                    Move(
                        site=site.name if site else None,
                        reason=str(reason or failure.get("exception_type", "failed")),
                        message=summary_line(failure.get("message")),
                        time=time.time(),
                    )
                )
                if site is not None:
                    self.stats[site.name].moved += 1
                self._change("retried", task, site, detail=str(reason or ""))
                delay = method.retry_delay(task.retries)
                if delay > 0:
                    with self._lock:
                        self._delayed[task.task_id] = task
                    self._after(delay, self._retry_now, task)
                else:
                    self._place_or_hold(task, method.kind)
                return
        if self.data is not None:
            try:
                self.data.task_done(task.task_id)  # its own proxied arguments are not needed
                if outcome.ok:
                    self.data.adopt(outcome.value)  # a proxied result: removed at the end
            except Exception:  # noqa: BLE001 - the data plane must never lose a result
                logger.warning("task %s: data store clean-up failed", task.task_id, exc_info=True)
        failure_info = None
        if outcome.failure is not None:
            failure_info = FailureInfo(**outcome.failure)
        result = task.make_result(
            value=outcome.value,
            success=outcome.ok,
            failure_info=failure_info,
            worker_host=outcome.host,
            worker_pid=outcome.pid,
            remote_task_id=outcome.remote_id,
            granted=Granted.model_validate(outcome.granted) if outcome.granted else None,
            image=site.image if site is not None else None,
            image_digest=site.image_digest if site is not None else None,
            timestamps=Timestamps(
                created=task.created,
                sent=task.sent,
                started=outcome.started,
                finished=outcome.finished,
                returned=returned or time.time(),
            ),
            sizes=Sizes(inputs=outcome.input_size, value=outcome.value_size),
        )
        state = "done" if outcome.ok else "failed"
        if self.listeners:
            self._change(state, task, site)
        if self.journal is not None:  # handed over once it is in the journal's log
            self.journal.finished(result, task.input_key, then=lambda: self._deliver(result))
        else:
            self._deliver(result)

    def _retry_now(self, task: Task) -> None:
        with self._lock:
            if self._delayed.pop(task.task_id, None) is None:
                return
        self._place_or_hold(task, self.methods.get(task.method).kind)

    def received(self, result: Result) -> None:
        """Record that the thinker took ``result``; append it to its topic's JSONL file."""
        result.timestamps.received = time.time()
        if self.journal is not None:
            self.journal.event(result.task_id, "received", result.site)
        if self.listeners:
            self._change("received", _task_of(result))
        self.results.write(result)

    def undelivered(self, results: Iterable[Result]) -> None:
        """Record results the thinker never took (written with ``received`` unset)."""
        for result in results:
            self.results.write(result)

    # -- sites going down and coming back -------------------------------------------------

    def _site_down(self, site: Site, reason: str) -> None:
        logger.warning("site %s is down: %s", site.name, reason)
        self.stats[site.name].down = reason
        if self.journal is not None:
            self.journal.event("-", "site_down", site.name, reason)
        with self._lock:
            if all(s.is_down for s in self._by_kind[site.kind]):
                self._all_down_since.setdefault(site.kind, time.monotonic())
        self._capacity_changed(site.kind)
        if self._down_retry is not None:
            self._after(self._down_retry, self._try_revive, site, self._down_retry)

    def _try_revive(self, site: Site, waited: float) -> None:
        if self._closed or not site.is_down:
            return
        try:
            revived = site.try_revive()
        except Exception:  # noqa: BLE001 - a failed try leaves the site down
            logger.warning("site %s: revive failed", site.name, exc_info=True)
            revived = False
        if revived and not site.is_down:
            logger.info("site %s is up again", site.name)
            with self._lock:
                self._all_down_since.pop(site.kind, None)
            self.stats[site.name].down = None
            if self.journal is not None:
                self.journal.event("-", "site_up", site.name)
            self._capacity_changed(site.kind)
            self._drain_backlog(site.kind)
            return
        wait = min(DOWN_RETRY_MAX, waited * 2)
        self._after(wait, self._try_revive, site, wait)

    # -- capacity, drain, cancel -------------------------------------------------------------

    def capacity(self, kind: str) -> int:
        """Workers of ``kind`` that can take tasks now: sites up and not drained."""
        return sum(
            site.capacity
            for site in self._by_kind.get(kind, ())
            if not site.is_down and not self.stats[site.name].drained
        )

    def _capacity_changed(self, kind: str) -> None:
        now = self.capacity(kind)
        with self._lock:
            if self._capacity.get(kind) == now:
                return
            self._capacity[kind] = now
        for listener in self.capacity_listeners:
            try:
                listener(kind, now)
            except Exception:  # noqa: BLE001 - an observer must never break dispatch
                logger.exception("capacity listener failed for %s", kind)

    def site(self, name: str) -> Site:
        """The site called ``name``.

        Raises:
            KeyError: no such site (the message lists the sites).
        """
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(f"no site {name!r}; sites: {', '.join(s.name for s in self.sites)}")

    def drain(self, name: str, drained: bool = True) -> str:
        """Send site ``name`` nothing new (``drained=False``: take tasks again).

        Tasks already sent there finish; those waiting go to other sites of its kind, or
        wait for one. Returns what changed, in words.

        Raises:
            KeyError: no such site.
        """
        site = self.site(name)
        stats = self.stats[name]
        with self._lock:  # placement reads it under the lock
            was, stats.drained = stats.drained, drained
        if was == drained:
            return f"site {name} was already {'drained' if drained else 'taking tasks'}"
        if self.journal is not None:
            self.journal.event("-", "drained" if drained else "undrained", name)
        self._capacity_changed(site.kind)
        if not drained:
            self._drain_backlog(site.kind)
            return f"site {name} takes tasks again"
        running = self.stats[name].in_flight
        return f"site {name} drained: nothing new is sent there; {running} task(s) there finish"

    def cancel(self, task_ids: Iterable[str] = (), method: str | None = None) -> dict[str, str]:
        """Cancel tasks by id, or every unfinished task of ``method``.

        A task waiting in orch (for a slot, or for its retry) is removed; one sent to a site
        is told to stop there (``Site.cancel``: a local site kills its process group) and its
        slot is freed at once. Either way the thinker receives a failed result with reason
        ``cancelled``, and the task is not retried.

        Returns:
            ``{task id: what happened}``; ids that are not running, waiting or due for a
            retry map to a line that says so.
        """
        wanted = set(task_ids)
        found: dict[str, str] = {}
        sent: list[tuple[tuple[str, int], Task, Site]] = []
        held: list[Task] = []
        with self._lock:
            for attempt, (task, site) in list(self._attempts.items()):
                if task.task_id in wanted or (method is not None and task.method == method):
                    sent.append((attempt, task, site))
            for kind, backlog in self._backlog.items():
                keep: deque[Task] = deque()
                for task in backlog:
                    if task.task_id in wanted or (method is not None and task.method == method):
                        held.append(task)
                        self._held_at.pop(task.task_id, None)
                    else:
                        keep.append(task)
                self._backlog[kind] = keep
            for task_id, task in list(self._delayed.items()):
                if task_id in wanted or (method is not None and task.method == method):
                    held.append(task)
                    del self._delayed[task_id]
        for attempt, task, site in sent:
            if self._claim(attempt) is None:
                continue  # its result came meanwhile
            try:
                how = site.cancel(task.task_id)
            except Exception as exc:  # noqa: BLE001 - the result is cancelled all the same
                how = f"stopping it at the site failed ({type(exc).__name__}: {exc})"
            self._release(site, task)
            found[task.task_id] = f"cancelled on {site.name}: {how}"
            self._finish(task, site, _cancelled(f"cancelled while on site {site.name}: {how}"))
        for task in held:
            found[task.task_id] = "cancelled before it was sent to a site"
            self._finish(task, None, _cancelled("cancelled while waiting in orch"))
        for task_id in wanted - set(found):
            found[task_id] = "not running or waiting (finished, unknown, or already cancelled)"
        return found

    def snapshot(self) -> dict[str, object]:
        """The live state ``orch status`` shows: per site and per kind (plain data)."""
        sites = {}
        for site in self.sites:
            stats = self.stats[site.name]
            sites[site.name] = {
                "kind": site.kind,
                "backend": site.config.backend,
                "capacity": site.capacity,
                "in_flight": stats.in_flight,
                "slots_used": stats.slots_used,
                "running": stats.running,
                "queued": stats.queued,
                "done": stats.done,
                "failed": stats.failed,
                "moved": stats.moved,
                "down": site.down_reason,
                "drained": stats.drained,
            }
        with self._lock:
            waiting = {kind: len(backlog) for kind, backlog in self._backlog.items()}
            delayed = len(self._delayed)
        return {
            "sites": sites,
            "waiting": waiting,
            "delayed": delayed,
            "capacity": {kind: self.capacity(kind) for kind in self._by_kind},
            "lost_tasks": self.lost_tasks,
        }

    # -- watching the sites -----------------------------------------------------------------

    def _watch(self) -> None:
        """The monitor thread: every ``monitor_interval`` s, look at sites and waiting tasks."""
        suspects: dict[tuple[str, int], str] = {}
        while not self._stop.wait(self._monitor_interval):
            try:
                self._check_sites()
                suspects = self._find_lost(suspects)
                self._expire_waiting()
            except Exception:  # noqa: BLE001 - the watch must outlive one bad look
                logger.exception("site monitor: a check failed")

    def _check_sites(self) -> None:
        for site in self.sites:
            if self._closed:
                return
            if not site.is_down:
                try:
                    site.health_check()
                except Exception:  # noqa: BLE001 - a failing check decides nothing
                    logger.warning("site %s: health check failed", site.name, exc_info=True)

    def _find_lost(self, suspects: dict[tuple[str, int], str]) -> dict[tuple[str, int], str]:
        """Fail tasks a site reported lost twice in a row; returns this look's suspects."""
        by_site: dict[str, tuple[Site, list[tuple[tuple[str, int], Future]]]] = {}
        with self._lock:
            for attempt, (_, site) in self._attempts.items():
                future = self._futures.get(attempt)
                if future is not None and not future.done():
                    by_site.setdefault(site.name, (site, []))[1].append((attempt, future))
        now: dict[tuple[str, int], str] = {}
        for site, items in by_site.values():
            try:
                lost = site.lost([future for _, future in items])
            except Exception:  # noqa: BLE001 - a site that cannot tell reports nothing
                logger.debug("site %s: lost-task check failed", site.name, exc_info=True)
                continue
            for attempt, future in items:
                if future in lost:
                    now[attempt] = lost[future]
        for attempt, why in now.items():
            if attempt in suspects:
                self._lose(attempt, why)
        return {a: w for a, w in now.items() if a not in suspects}

    def _lose(self, attempt: tuple[str, int], why: str) -> None:
        claimed = self._claim(attempt)
        if claimed is None:
            return
        task, site = claimed
        self.lost_tasks += 1
        logger.warning(
            "task %s (%s) lost at site %s: %s", task.task_id, task.method, site.name, why
        )
        self._release(site, task)
        self._finish(
            task,
            site,
            Outcome.site_failure(
                "TaskLost",
                f"task lost at site '{site.name}': {why} (seen twice, "
                f"{self._monitor_interval:g} s apart)",
            ),
        )

    def _expire_waiting(self) -> None:
        """Fail tasks that waited ``site_wait`` s through an outage of every site of their kind."""
        now = time.monotonic()
        expired: list[tuple[Task, str]] = []
        with self._lock:
            for kind, since in self._all_down_since.items():
                backlog = self._backlog[kind]
                keep: deque[Task] = deque()
                for task in backlog:
                    start = max(since, self._held_at.get(task.task_id, since))
                    if now - start >= self._site_wait:
                        expired.append((task, kind))
                        self._held_at.pop(task.task_id, None)
                    else:
                        keep.append(task)
                if len(keep) != len(backlog):
                    self._backlog[kind] = keep
        for task, kind in expired:
            self._finish(task, None, self._no_site_outcome(kind))

    # -- stopping --------------------------------------------------------------------------

    def stop_accepting(self) -> None:
        """Refuse new tasks and retries from now on (the campaign is ending)."""
        self._closed = True

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every task sent to a site to come back.

        Returns:
            Whether none is left in flight.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._attempts:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def interrupt(self) -> list[Task]:
        """Give up on every task still running, waiting or due for a retry.

        Each is journaled as ``interrupted`` (``--resume`` runs it again); it gets no result,
        and late results from sites are ignored.

        Returns:
            The interrupted tasks.
        """
        self.stop_accepting()
        with self._lock:
            stopped = [task for task, _ in self._attempts.values()]
            self._attempts.clear()
            for backlog in self._backlog.values():
                stopped.extend(backlog)
                backlog.clear()
            self._held_at.clear()
            stopped.extend(self._delayed.values())
            self._delayed.clear()
            self._idle.notify_all()
        for task in stopped:
            self._change("interrupted", task)
        return stopped

    def close(self) -> None:
        """Stop accepting tasks, cancel timers, flush the results files, close the journal.

        Sites are shut down by their owner.
        """
        self.stop_accepting()
        self._stop.set()
        with self._lock:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        self.results.close()
        if self.journal is not None:
            self.journal.close()


_JOURNALED = frozenset({"waiting", "sent", "retried", "interrupted", "replayed"})
"""States journaled as plain events (created and final results have their own records)."""


def _cancelled(message: str) -> Outcome:
    return Outcome.site_failure("TaskCancelled", message, reason=CANCELLED)


def _task_of(result: Result) -> Task:
    """A light Task view of a result, for listeners of the 'received' state."""
    return Task(
        method=result.method,
        topic=result.topic,
        args=result.args or (),
        kwargs=result.kwargs or {},
        task_id=result.task_id,
        created=result.timestamps.created,
        retries=result.retries,
        site=result.site,
        model_version=result.model_version,
    )


def _sent_by_proxy(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    sent_args: tuple[Any, ...],
    sent_kwargs: Mapping[str, Any],
) -> list[int | str]:
    """Positions and keyword names of the inputs the data plane replaced by a proxy."""
    pairs = enumerate(zip(args, sent_args, strict=True))
    moved: list[int | str] = [i for i, (a, b) in pairs if a is not b]
    moved += [k for k, v in kwargs.items() if sent_kwargs.get(k) is not v]
    return moved
