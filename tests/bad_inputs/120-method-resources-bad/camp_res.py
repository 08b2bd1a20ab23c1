"""A campaign for the bad-input corpus."""

from orchestrator.dispatch import Method
from orchestrator.thinker import BaseThinker, agent


def double(x):
    return 2 * x


class Small(BaseThinker):
    methods = [Method(double, kind="cpu", resources={"nodes": 2, "ranks": 1})]

    @agent
    def go(self):
        self.queues.send_inputs(21, method="double", topic="double")
