"""A small campaign for the loopback tests: ``count`` independent tasks, all results kept.

The method, :func:`loopback.tasks.where`, reports where it ran, so a test can tell the
Globus endpoint's workers (which carry the loopback endpoint's mark) from local workers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from orchestrator.dispatch import Method
from orchestrator.thinker import BaseThinker, agent

from .tasks import where


class SpreadOptions(BaseModel):
    """Options of :class:`SpreadCampaign`."""

    count: int = Field(default=50, ge=1)
    pause: float = Field(default=0.1, ge=0)
    timeout: float = Field(default=300.0, gt=0, description="Longest wait for one result")


class SpreadCampaign(BaseThinker):
    """Send ``count`` calls of ``where`` at once, then collect every result."""

    methods = [Method(where, kind="cpu")]
    Options = SpreadOptions

    def __init__(self, queues: Any, options: SpreadOptions):
        super().__init__(queues)
        self.options = options
        self.results: list[Any] = []

    @agent
    def run(self) -> None:
        for i in range(self.options.count):
            self.queues.send_inputs(i, self.options.pause, method="where", topic="where")
        for _ in range(self.options.count):
            self.results.append(self.queues.get_result("where", timeout=self.options.timeout))

    def summary(self) -> str:
        ok = sum(1 for r in self.results if r.success)
        sites = sorted({str(r.site) for r in self.results})
        return f"{ok}/{len(self.results)} succeeded on {', '.join(sites)}"
