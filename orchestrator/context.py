"""The campaign context: what orch hands a thinker about its run, besides the queues.

A thinker reads its run directory, options, model registry and the sites' capacity through a
:class:`CampaignContext`, and tells orch its progress and objective through it, never through
orch's internals. ``orch launch`` passes it to the thinker's constructor as ``context=`` when
the constructor takes that keyword, and sets :attr:`BaseThinker.context` in any case, so
Colmena-style constructors ``Thinker(queues, ...)`` keep working.

Sites come and go (down, revived, drained, undrained): :meth:`CampaignContext.capacity` is the
workers of a kind that take tasks *now*; :attr:`CampaignContext.capacity_changed` is set and
the callbacks of :meth:`CampaignContext.on_capacity_change` run when it changes, and
:meth:`CampaignContext.follow` makes a :class:`~orchestrator.thinker.ResourceCounter` grow
and shrink with it, so a policy never waits on slots that no longer exist.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pydantic import BaseModel

    from orchestrator.dispatch import Dispatcher
    from orchestrator.dispatch.journal import Journal
    from orchestrator.thinker.resources import ResourceCounter

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Objective:
    """What a campaign optimizes, declared as its class attribute ``objective``.

    The campaign reports each new value with :meth:`CampaignContext.record_objective`;
    ``orch report`` plots the best so far against simulations and against time.

    Attributes:
        name: What the value is, with its unit (``"IP (eV)"``).
        goal: ``"max"`` or ``"min"``: which way is better.
    """

    name: str
    goal: Literal["max", "min"] = "max"


@dataclass(frozen=True)
class SiteView:
    """One site as the thinker sees it (a copy: it does not change afterwards).

    Attributes:
        name: The site's name (its YAML file's ``name``).
        kind: ``cpu``, ``gpu``, ...
        backend: ``local`` or ``globus``.
        capacity: Its workers.
        up: Whether it runs tasks now (not down).
        drained: Whether orch sends it nothing new (``orch drain``).
        down_reason: Why it is down, when it is.
        in_flight: Tasks sent there and not back yet.
        done: Tasks that succeeded there.
        failed: Attempts that failed there.
    """

    name: str
    kind: str
    backend: str
    capacity: int
    up: bool
    drained: bool
    down_reason: str | None
    in_flight: int
    done: int
    failed: int

    @property
    def takes_tasks(self) -> bool:
        """Whether orch sends this site new tasks now (up and not drained)."""
        return self.up and not self.drained


class CampaignContext:
    """A running campaign's facts and levers, for its thinker.

    Args:
        run_dir: The run directory (results, logs, the journal).
        options: The campaign's validated options (its ``Options`` model), or None.
        dispatcher: The campaign's dispatcher (capacity and site state are read from it).
        journal: The campaign's journal (progress and objective values go there).
        registry: The model registry (None when the campaign versions no models).
    """

    def __init__(
        self,
        run_dir: Path,
        options: BaseModel | None,
        dispatcher: Dispatcher,
        journal: Journal | None = None,
        registry: Any = None,
    ):
        self._run_dir = run_dir
        self._options = options
        self._dispatcher = dispatcher
        self._journal = journal
        self._registry = registry
        self._progress: dict[str, Any] | None = None
        self._callbacks: list[Callable[[str, int], None]] = []
        self.capacity_changed = threading.Event()
        """Set each time the workers of a kind that take tasks change; clear it yourself."""
        dispatcher.capacity_listeners.append(self._on_capacity)

    # -- facts ------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """The run directory."""
        return self._run_dir

    @property
    def options(self) -> BaseModel | None:
        """The campaign's options (an instance of its ``Options`` model), or None."""
        return self._options

    @property
    def registry(self) -> Any:
        """The campaign's ``ModelRegistry`` (None when it versions no models)."""
        return self._registry

    def sites(self) -> list[SiteView]:
        """Every site of the campaign, as it is now."""
        views = []
        snapshot = self._dispatcher.snapshot()["sites"]
        assert isinstance(snapshot, dict)
        for name, state in snapshot.items():
            views.append(
                SiteView(
                    name=name,
                    kind=state["kind"],
                    backend=state["backend"],
                    capacity=state["capacity"],
                    up=state["down"] is None,
                    drained=state["drained"],
                    down_reason=state["down"],
                    in_flight=state["in_flight"],
                    done=state["done"],
                    failed=state["failed"],
                )
            )
        return views

    def capacity(self, kind: str) -> int:
        """Workers of sites of ``kind`` that take tasks now (up and not drained)."""
        return self._dispatcher.capacity(kind)

    def capacities(self) -> dict[str, int]:
        """:meth:`capacity` of every kind the campaign's sites have."""
        return {kind: self.capacity(kind) for kind in sorted({s.kind for s in self.sites()})}

    def total_capacity(self, kind: str) -> int:
        """Workers of every site of ``kind``, up or not (what the campaign has at best)."""
        return sum(s.capacity for s in self.sites() if s.kind == kind)

    # -- capacity changes -------------------------------------------------------------------

    def on_capacity_change(self, callback: Callable[[str, int], None]) -> None:
        """Call ``callback(kind, workers)`` each time :meth:`capacity` of a kind changes.

        It runs in one of orch's threads: keep it short, and do not block in it.
        """
        self._callbacks.append(callback)

    def follow(
        self,
        counter: ResourceCounter,
        kind: str,
        pool: str | None = None,
        slots_per_worker: int = 1,
    ) -> None:
        """Make ``counter`` grow and shrink with the workers of ``kind`` that take tasks.

        The counter's slots now are taken to match the kind's workers now; from then on,
        each change of :meth:`capacity` changes the counter's total by the same number of
        workers (times ``slots_per_worker``), in ``pool``. Shrinking takes free slots at
        once and retires busy ones as they are released (``ResourceCounter.resize``).
        Several kinds can feed one counter.
        """
        if slots_per_worker < 1:
            raise ValueError(f"slots_per_worker must be >= 1, got {slots_per_worker}")
        last = {"workers": self.capacity(kind)}
        lock = threading.Lock()

        def resize(changed: str, workers: int) -> None:
            if changed != kind:
                return
            with lock:
                delta = (workers - last["workers"]) * slots_per_worker
                last["workers"] = workers
                if delta:
                    total = max(0, counter.total_slots + delta)
                    counter.resize(total, pool)
                    logger.info(
                        "resource counter follows %s: %+d slot(s) in %r, %d in all",
                        kind,
                        delta,
                        pool,
                        total,
                    )

        self.on_capacity_change(resize)

    def _on_capacity(self, kind: str, workers: int) -> None:
        logger.info("capacity of %s sites is now %d worker(s)", kind, workers)
        self.capacity_changed.set()
        for callback in list(self._callbacks):
            try:
                callback(kind, workers)
            except Exception:  # noqa: BLE001 - a thinker's callback must not break dispatch
                logger.exception("capacity callback %r failed", callback)

    # -- what the campaign tells orch -------------------------------------------------------

    def set_progress(self, done: int, budget: int | None = None, text: str = "") -> None:
        """The campaign's progress line for ``orch status`` and the dashboard.

        Args:
            done: Units of work finished (e.g. simulations done).
            budget: Units it will do in all, if it knows (gives an estimated time left).
            text: Anything else worth a glance (``"best IP 7.21 eV"``).
        """
        self._progress = {
            "done": int(done),
            "budget": budget,
            "text": str(text),
            "time": time.time(),
        }

    def progress(self) -> dict[str, Any] | None:
        """The last :meth:`set_progress`, as plain data (None before the first)."""
        return dict(self._progress) if self._progress is not None else None

    def record_objective(self, value: float, task_id: str | None = None) -> None:
        """Journal one value of the campaign's ``objective`` (in the order they come).

        ``orch report`` plots the best so far over these values and over time. Values that
        are not finite numbers are skipped.
        """
        try:
            number = float(value)
        except (TypeError, ValueError):
            return
        if number != number or number in (float("inf"), float("-inf")):
            return
        if self._journal is not None:
            self._journal.objective(number, task_id)
