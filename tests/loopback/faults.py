"""Fault scenarios on the loopback Globus path: a steerable campaign and its task.

:class:`SteadyCampaign` keeps a few calls of :func:`counted` outstanding until the test says
``finish`` (through a :class:`Control` registered under the campaign's ``control`` option),
so that work is still being placed before, during and after a fault. :func:`counted` writes
one marker file per completed execution, which is how a test counts executions across the
Globus endpoint's workers and local workers (both on this machine).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.dispatch import Method
from orchestrator.thinker import BaseThinker, agent

from .tasks import ENDPOINT_MARK


def counted(x: int, pause: float, marker_dir: str) -> dict[str, object]:
    """``x * x`` after ``pause`` s; leaves a marker file saying this execution completed."""
    if pause:
        time.sleep(pause)
    record = {"x": x, "pid": os.getpid(), "endpoint": os.environ.get(ENDPOINT_MARK)}
    name = f"{x}.{os.getpid()}.{uuid.uuid4().hex}.json"
    (Path(marker_dir) / name).write_text(json.dumps(record))
    return {"x": x, "square": x * x, "pid": os.getpid(), "endpoint": record["endpoint"]}


def executions(marker_dir: Path) -> dict[int, list[dict[str, Any]]]:
    """The completed executions recorded under ``marker_dir``, by ``x``."""
    found: dict[int, list[dict[str, Any]]] = {}
    for path in marker_dir.glob("*.json"):
        record = json.loads(path.read_text())
        found.setdefault(int(record["x"]), []).append(record)
    return found


class Control:
    """How a test steers a running :class:`SteadyCampaign`."""

    def __init__(self) -> None:
        self.finish = threading.Event()
        """Set: send no new task; collect what is outstanding and end."""


CONTROLS: dict[str, Control] = {}
"""Controls by name (the campaign runs in the test's process, in another thread)."""


class SteadyOptions(BaseModel):
    """Options of :class:`SteadyCampaign`."""

    control: str
    marker_dir: str
    outstanding: int = Field(default=8, ge=1)
    pause: float = Field(default=0.3, ge=0)
    max_tasks: int = Field(default=2000, ge=1)
    timeout: float = Field(default=240.0, gt=0, description="Longest wait for one result")


class SteadyCampaign(BaseThinker):
    """Keep ``outstanding`` calls of ``counted`` in flight until told to finish."""

    methods = [Method(counted, kind="cpu")]
    Options = SteadyOptions

    def __init__(self, queues: Any, options: SteadyOptions):
        super().__init__(queues)
        self.options = options
        self.control = CONTROLS[options.control]
        self.sent = 0
        self.results: list[Any] = []

    @agent
    def run(self) -> None:
        opts = self.options
        waiting = 0
        while True:
            while (
                waiting < opts.outstanding
                and self.sent < opts.max_tasks
                and not self.control.finish.is_set()
            ):
                self.queues.send_inputs(
                    self.sent, opts.pause, opts.marker_dir, method="counted", topic="counted"
                )
                self.sent += 1
                waiting += 1
            if not waiting:
                return
            self.results.append(self.queues.get_result("counted", timeout=opts.timeout))
            waiting -= 1

    def summary(self) -> str:
        ok = sum(1 for r in self.results if r.success)
        return f"{ok}/{len(self.results)} of {self.sent} sent succeeded"
