"""Fault injection while a campaign runs (``orch launch --inject-faults``).

A :class:`FaultInjector` listens to the dispatcher: each time a task is sent to a site, it
draws, with its own seeded random generator, whether to cause each fault of the spec at that
site, and asks the site to cause it (``Site.inject``; local sites can, remote ones cannot).
What it did is logged and journaled (event ``fault``), so a soak run can be read back.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from typing import TYPE_CHECKING

from orchestrator.config.faults import FaultSpec

if TYPE_CHECKING:
    from orchestrator.dispatch.dispatcher import Dispatcher
    from orchestrator.models import Task
    from orchestrator.sites.base import Site

logger = logging.getLogger(__name__)


class FaultInjector:
    """Causes the faults of ``spec`` at the sites tasks are sent to.

    Args:
        spec: The rates, seed and stall time.
        dispatcher: Where to listen for sends and journal what was done.
    """

    def __init__(self, spec: FaultSpec, dispatcher: Dispatcher):
        self.spec = spec
        self._rates = spec.rates()
        self._rng = random.Random(spec.seed)
        self._lock = threading.Lock()
        self._dispatcher = dispatcher
        self.caused: Counter[str] = Counter()
        """How many of each fault were caused."""
        dispatcher.listeners.append(self._on_state)

    def _on_state(self, state: str, task: Task, site: Site | None) -> None:
        if state != "sent" or site is None:
            return
        with self._lock:
            drawn = [f for f, rate in self._rates.items() if self._rng.random() < rate]
            seed = self._rng.randrange(2**32)
        for fault in drawn:
            done = site.inject(fault, random.Random(seed), self.spec.stall_s)
            if done is None:  # the site cannot cause it now (or at all: a remote site)
                continue
            with self._lock:
                self.caused[fault] += 1
            logger.warning("fault injected at site %s (%s): %s", site.name, fault, done)
            journal = self._dispatcher.journal
            if journal is not None:
                journal.event(task.task_id, "fault", site.name, f"{fault}: {done}")
