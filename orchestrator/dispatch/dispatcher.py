"""The dispatcher: places tasks on sites, retries them, and records every state change.

Every task state change passes through :meth:`Dispatcher._change`, so one listener there
(progress display, later the journal) sees the whole life of every task.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.dispatch.methods import MethodRegistry
from orchestrator.dispatch.results import ResultsWriter
from orchestrator.exceptions import ConfigError, SiteUnavailableError
from orchestrator.models import FailureInfo, Result, Sizes, Task, Timestamps
from orchestrator.sites.base import Outcome, Site

if TYPE_CHECKING:
    from orchestrator.data import DataPlane

logger = logging.getLogger(__name__)

StateListener = Callable[[str, Task, "Site | None"], None]
"""``listener(state, task, site)``; states: submitted, waiting, sent, done, failed, retried,
received."""


@dataclass
class SiteStats:
    """Counts for one site, as shown by the progress display."""

    kind: str
    capacity: int
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    down: str | None = None

    @property
    def running(self) -> int:
        """Tasks the site's workers are busy with (at most ``capacity``)."""
        return min(self.in_flight, self.capacity)

    @property
    def queued(self) -> int:
        """Tasks sent to the site that wait there for a free worker."""
        return self.in_flight - self.running


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

    Args:
        sites: Started site backends.
        methods: The campaign's methods.
        deliver: Called with each finished ``Result`` (from a site's callback thread).
        run_dir: Campaign directory; results go to ``run_dir/results/<topic>.jsonl``.
        data: The campaign's data plane: large arguments move by proxy in the chosen site's
            store, and proxied results are adopted so the campaign's end cleans them up.
    """

    def __init__(
        self,
        sites: Iterable[Site],
        methods: MethodRegistry,
        deliver: Callable[[Result], None],
        run_dir: Path,
        data: DataPlane | None = None,
    ):
        self.sites = list(sites)
        self.methods = methods
        self.data = data
        self._deliver = deliver
        self._lock = threading.Lock()
        self._by_kind: dict[str, list[Site]] = {}
        for site in self.sites:
            self._by_kind.setdefault(site.kind, []).append(site)
            site.on_down(self._site_down)
        check_kinds(methods, set(self._by_kind))
        self._slots: dict[str, int] = {s.name: 0 for s in self.sites}
        self._tick = itertools.count()
        self._last_used: dict[str, int] = {s.name: -1 for s in self.sites}
        self._backlog: dict[str, deque[Task]] = {kind: deque() for kind in self._by_kind}
        self.stats: dict[str, SiteStats] = {
            s.name: SiteStats(kind=s.kind, capacity=s.capacity) for s in self.sites
        }
        self.listeners: list[StateListener] = []
        self.results = ResultsWriter(run_dir / "results")
        self._closed = False

    # -- state changes -------------------------------------------------------------------

    def _change(self, state: str, task: Task, site: Site | None = None) -> None:
        for listener in self.listeners:
            try:
                listener(state, task, site)
            except Exception:  # noqa: BLE001 - an observer must never break dispatch
                logger.exception("state listener failed on %s for %s", state, task.task_id)

    def waiting(self, kind: str) -> int:
        """Tasks of ``kind`` held in orch until a site has room."""
        return len(self._backlog.get(kind, ()))

    # -- submission ----------------------------------------------------------------------

    def submit(self, task: Task) -> None:
        """Place ``task`` on a site now, or hold it until one has room."""
        if self._closed:
            raise SiteUnavailableError("the campaign is shutting down; no new tasks are accepted")
        method = self.methods.get(task.method)
        task.slots = method.slots
        self._change("submitted", task)
        self._place_or_hold(task, method.kind)

    def _choose(self, kind: str, slots: int) -> Site | None:
        """Pick the site for a task (caller holds the lock); ``None`` when none has room."""
        best: Site | None = None
        best_key: tuple[float, int] | None = None
        for site in self._by_kind[kind]:
            if site.is_down:
                continue
            used = self._slots[site.name]
            if used + slots > site.config.in_flight_limit and used > 0:
                continue
            key = (used / site.capacity, self._last_used[site.name])
            if best_key is None or key < best_key:
                best, best_key = site, key
        if best is not None:
            self._slots[best.name] += slots
            self._last_used[best.name] = next(self._tick)
            self.stats[best.name].in_flight += 1
        return best

    def _place_or_hold(self, task: Task, kind: str) -> None:
        with self._lock:
            if all(site.is_down for site in self._by_kind[kind]):
                site = None
                hold = False
            else:
                site = self._choose(kind, task.slots)
                hold = site is None
                if hold:
                    self._backlog[kind].append(task)
        if hold:
            self._change("waiting", task)
            return
        if site is None:
            self._finish(task, None, self._no_site_outcome(kind))
            return
        self._send(task, site)

    def _no_site_outcome(self, kind: str) -> Outcome:
        reasons = "; ".join(s.down_reason or "" for s in self._by_kind[kind])
        return Outcome.site_failure("SiteUnavailableError", f"no {kind} site is up: {reasons}")

    def _send(self, task: Task, site: Site) -> None:
        task.site = site.name
        method = self.methods.get(task.method)
        args, kwargs = task.args, task.kwargs
        try:
            if self.data is not None and self.data.uses_proxies(site.name):
                args, kwargs, _ = self.data.proxy_arguments(args, kwargs, site.name)
            task.sent = time.time()
            future = site.submit(method.function, args, kwargs)
        except SiteUnavailableError as exc:
            self._release(site, task)
            self._finish(task, site, Outcome.site_failure("SiteUnavailableError", str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - e.g. arguments that cannot be serialized
            self._release(site, task)
            self._finish(
                task, site, Outcome.site_failure(type(exc).__name__, f"could not send: {exc}")
            )
            return
        self._change("sent", task, site)
        future.add_done_callback(lambda fut: self._on_done(task, site, fut))

    def _release(self, site: Site, task: Task) -> None:
        """Free the task's slots at ``site`` and send what the backlog can now place."""
        ready: list[tuple[Task, Site]] = []
        with self._lock:
            self._slots[site.name] -= task.slots
            self.stats[site.name].in_flight -= 1
            backlog = self._backlog[site.kind]
            while backlog:
                nxt = backlog[0]
                chosen = self._choose(site.kind, nxt.slots)
                if chosen is None:
                    break
                backlog.popleft()
                ready.append((nxt, chosen))
        for nxt, chosen in ready:
            self._send(nxt, chosen)

    # -- completion ----------------------------------------------------------------------

    def _on_done(self, task: Task, site: Site, future: Future) -> None:
        returned = time.time()
        outcome = site.outcome(future)
        self._release(site, task)
        self._finish(task, site, outcome, returned)

    def _finish(
        self, task: Task, site: Site | None, outcome: Outcome, returned: float | None = None
    ) -> None:
        if site is not None:
            stats = self.stats[site.name]
            if outcome.ok:
                stats.done += 1
            else:
                stats.failed += 1
        if not outcome.ok and task.retries < task.max_retries and not self._closed:
            method = self.methods.get(task.method)
            reason = (outcome.failure or {}).get("reason")
            if method.should_retry(reason):
                task.retries += 1
                self._change("retried", task, site)
                self._place_or_hold(task, method.kind)
                return
        if outcome.ok and self.data is not None:
            self.data.adopt(outcome.value)  # a proxied result: removed when the campaign ends
        failure = None
        if outcome.failure is not None:
            failure = FailureInfo(**outcome.failure)
        result = task.make_result(
            value=outcome.value,
            success=outcome.ok,
            failure_info=failure,
            worker_host=outcome.host,
            worker_pid=outcome.pid,
            timestamps=Timestamps(
                created=task.created,
                sent=task.sent,
                started=outcome.started,
                finished=outcome.finished,
                returned=returned or time.time(),
            ),
            sizes=Sizes(inputs=outcome.input_size, value=outcome.value_size),
        )
        self._change("done" if outcome.ok else "failed", task, site)
        self._deliver(result)

    def received(self, result: Result) -> None:
        """Record that the thinker took ``result``; append it to its topic's JSONL file."""
        result.timestamps.received = time.time()
        if self.listeners:
            self._change("received", _task_of(result))
        self.results.write(result)

    def undelivered(self, results: Iterable[Result]) -> None:
        """Record results the thinker never took (written with ``received`` unset)."""
        for result in results:
            self.results.write(result)

    # -- sites going down ----------------------------------------------------------------

    def _site_down(self, site: Site, reason: str) -> None:
        logger.warning("site %s is down: %s", site.name, reason)
        self.stats[site.name].down = reason
        orphans: list[Task] = []
        with self._lock:
            if all(s.is_down for s in self._by_kind[site.kind]):
                orphans = list(self._backlog[site.kind])
                self._backlog[site.kind].clear()
        for task in orphans:
            self._finish(task, None, self._no_site_outcome(site.kind))

    def stop_accepting(self) -> None:
        """Refuse new tasks and retries from now on (the campaign is ending)."""
        self._closed = True

    def close(self) -> None:
        """Stop accepting tasks and flush the results files (sites are shut down by the owner)."""
        self.stop_accepting()
        self.results.close()


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
