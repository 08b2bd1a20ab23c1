"""A campaign for the tests of watching and steering a run (status, cancel, drain, halt).

``nap`` tasks run a child process (``sleep``) and name it in a file, so a test can check that
cancelling the task ends the process; ``quick`` tasks are many and short. The thinker reports
its progress and objective through its context and writes every result it got to
``RUN_DIR/outcomes.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

from pydantic import BaseModel, Field

from orchestrator.context import CampaignContext, Objective
from orchestrator.dispatch import Method
from orchestrator.thinker import BaseThinker, agent


def nap(seconds: float, pid_dir: str, label: str) -> dict:
    """Run ``sleep seconds`` as a child process, named in ``pid_dir/<label>.json``."""
    child = subprocess.Popen(["sleep", str(seconds)])
    path = Path(pid_dir) / f"{label}.json"
    path.write_text(json.dumps({"worker": os.getpid(), "child": child.pid}))
    child.wait()
    return {"label": label, "worker": os.getpid()}


def quick(x: int, pause: float = 0.0) -> int:
    """A short task."""
    if pause:
        time.sleep(pause)
    return x * x


class ControlOptions(BaseModel):
    """Options of :class:`ControlCampaign`."""

    naps: int = Field(default=2, ge=0)
    nap_s: float = Field(default=300.0, gt=0)
    quick: int = Field(default=0, ge=0)
    pause: float = Field(default=0.0, ge=0)
    pid_dir: str
    wait_file: str | None = None
    """When set, the thinker sends its quick tasks only once this file exists."""
    quick_after: int = Field(default=0, ge=0)
    """Quick tasks of a second phase, sent once ``wait_file2`` exists."""
    wait_file2: str | None = None
    hold_file: str | None = None
    """When set, the thinker ends only once this file exists (after every result)."""


class ControlCampaign(BaseThinker):
    """Sends ``naps`` long tasks and ``quick`` short ones; takes every result."""

    methods = [Method(nap, max_retries=0), Method(quick, max_retries=0)]
    Options = ControlOptions
    objective = Objective("value", goal="max")

    def __init__(self, queues, options: ControlOptions, context: CampaignContext | None = None):
        super().__init__(queues)
        self.options = options
        self.given_context = context
        self.outcomes: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.capacity_seen: list[tuple[str, int]] = []
        if context is not None:
            context.on_capacity_change(lambda kind, n: self.capacity_seen.append((kind, n)))

    @agent
    def run(self) -> None:
        opts = self.options
        total = opts.naps + opts.quick + opts.quick_after
        ids = []
        for i in range(opts.naps):
            ids.append(self.queues.send_inputs(opts.nap_s, opts.pid_dir, f"nap-{i}", method="nap"))
        (Path(opts.pid_dir) / "task_ids.json").write_text(json.dumps(ids))
        if opts.wait_file:
            while not Path(opts.wait_file).exists() and not self.done.is_set():
                time.sleep(0.05)  # a test's signal to go on (a file it writes)
        for i in range(opts.quick):
            self.queues.send_inputs(i, opts.pause, method="quick", task_info={"phase": 1})
        got = 0
        assert self.context is not None
        while got < total:
            if got == opts.naps + opts.quick and opts.quick_after:
                while opts.wait_file2 and not Path(opts.wait_file2).exists():
                    time.sleep(0.05)  # the test's signal for the second phase
                for i in range(opts.quick_after):
                    self.queues.send_inputs(
                        100 + i, opts.pause, method="quick", task_info={"phase": 2}
                    )
            result = self.queues.get_result()
            got += 1
            reason = result.failure_info.reason if result.failure_info else None
            with self.lock:
                self.outcomes[result.task_id] = {
                    "method": result.method,
                    "success": result.success,
                    "reason": reason,
                    "site": result.site,
                    "phase": result.task_info.get("phase"),
                    "replayed": result.replayed,
                }
            if result.success and result.method == "quick":
                self.context.record_objective(float(result.value), result.task_id)
            self.context.set_progress(got, total, text=f"{got} results")
            self._write()
        while opts.hold_file and not Path(opts.hold_file).exists():
            time.sleep(0.05)  # the test's signal to end

    def _write(self) -> None:
        assert self.context is not None
        path = self.context.run_dir / "outcomes.json"
        with self.lock:
            data = {
                "outcomes": self.outcomes,
                "context_passed": self.given_context is self.context,
                "capacity_seen": self.capacity_seen,
            }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def summary(self) -> str:
        return f"{len(self.outcomes)} results"
