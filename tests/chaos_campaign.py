"""A campaign for the chaos soak: ``count`` short independent tasks, each recorded on the
worker side, every one retried on site failures (faults injected by ``--inject-faults``)."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, Field

from orchestrator.dispatch import Method
from orchestrator.thinker import BaseThinker, agent


def tick(index: int, calls_dir: str, pause: float) -> int:
    """Record the call (a line per call, a file per worker), pause, return a function of it."""
    with open(os.path.join(calls_dir, f"calls-{os.getpid()}.log"), "a") as log:
        log.write(f"{index}\n")
    time.sleep(pause)
    return index * index


class SoakOptions(BaseModel):
    """Options of :class:`SoakCampaign`."""

    count: int = Field(default=2000, ge=1)
    calls_dir: str
    pause: float = Field(default=0.005, ge=0)
    retries: int = Field(default=20, ge=0)


class SoakCampaign(BaseThinker):
    """Send every task at once; take every result; count what came back."""

    methods = [Method(tick, retry_on={"site_failure", "timeout"})]
    Options = SoakOptions

    def __init__(self, queues, options: SoakOptions):
        super().__init__(queues)
        self.options = options
        self.ok = 0
        self.failed: list[str] = []
        self.replayed = 0

    @agent
    def run(self) -> None:
        opts = self.options
        for index in range(opts.count):
            self.queues.send_inputs(
                index,
                opts.calls_dir,
                opts.pause,
                method="tick",
                topic="tick",
                max_retries=opts.retries,
            )
        for _ in range(opts.count):
            result = self.queues.get_result("tick")
            self.replayed += result.replayed
            if result.success and result.value == result.args[0] ** 2:
                self.ok += 1
            else:
                self.failed.append(str(result.failure_info))

    def summary(self) -> str:
        return f"ok: {self.ok}; failed: {len(self.failed)}; replayed: {self.replayed}"
