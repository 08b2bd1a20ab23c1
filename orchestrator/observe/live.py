"""The live snapshot: what a running campaign writes for ``orch status`` and the dashboard.

About every second the recorder puts one JSON document in the journal's ``meta`` table (key
``live``): per site its state and counts, per kind the tasks waiting in orch and the workers
that take tasks, and the campaign's own progress line. Readers in other processes see it
through SQLite's WAL without slowing the campaign down; one row is replaced, so the journal
does not grow with it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from orchestrator.dispatch import Dispatcher
from orchestrator.dispatch.journal import Journal

logger = logging.getLogger(__name__)

LIVE_PERIOD_S = 1.0
"""Seconds between two live snapshots."""


class LiveRecorder:
    """Writes the live snapshot every :data:`LIVE_PERIOD_S` seconds while a campaign runs.

    Args:
        dispatcher: Where the per-site state comes from.
        journal: Where the snapshot goes (``meta['live']``).
        progress: Returns the campaign's progress (``{"done", "budget", "text"}``) or None.
        period: Seconds between snapshots.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        journal: Journal,
        progress: Callable[[], dict[str, Any] | None] = lambda: None,
        period: float = LIVE_PERIOD_S,
    ):
        self._dispatcher = dispatcher
        self._journal = journal
        self._progress = progress
        self._period = period
        self._stop = threading.Event()
        self.started = time.time()
        self.state = "running"
        self._first: dict[str, Any] | None = None  # the first progress seen (time left)
        self._thread = threading.Thread(target=self._run, name="orch-live", daemon=True)

    def snapshot(self) -> dict[str, Any]:
        """The snapshot now (plain data)."""
        data: dict[str, Any] = {
            "time": time.time(),
            "pid": os.getpid(),
            "state": self.state,
            "started": self.started,
            **self._dispatcher.snapshot(),
        }
        try:
            data["progress"] = self._progress()
        except Exception:  # noqa: BLE001 - a broken progress line must not stop the snapshots
            logger.warning("campaign progress failed", exc_info=True)
            data["progress"] = None
        progress = data["progress"]
        if self._first is None and progress:
            self._first = {"done": progress["done"], "time": progress.get("time", data["time"])}
        data["progress_first"] = self._first
        return data

    def write(self) -> None:
        """Write one snapshot now."""
        self._journal.live(self.snapshot())

    def start(self) -> LiveRecorder:
        """Write the first snapshot and keep writing them in a background thread."""
        self.write()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            try:
                self.write()
            except Exception:  # noqa: BLE001 - the next one may work
                logger.warning("live snapshot failed", exc_info=True)

    def stop(self, state: str) -> None:
        """Stop, and write a last snapshot with the campaign's final ``state``."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.state = state
        try:
            self.write()
        except Exception:  # noqa: BLE001 - the journal may already be closed
            logger.warning("last live snapshot failed", exc_info=True)
