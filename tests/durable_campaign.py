"""A deterministic campaign for the crash/resume tests: rounds of tasks whose inputs depend
on the previous round's results, with every call counted on the worker side."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, Field

from orchestrator.dispatch import Method
from orchestrator.thinker import BaseThinker, agent

MODULUS = 1_000_003


def step(value: int, index: int, calls_dir: str, pause: float) -> int:
    """The task: record the call (one line per call, in a file per worker), then compute."""
    with open(os.path.join(calls_dir, f"calls-{os.getpid()}.log"), "a") as log:
        log.write(f"{value} {index}\n")
    time.sleep(pause)
    return (value * 31 + index * index + 7) % MODULUS


def next_value(values: list[int]) -> int:
    """How a round's results become the next round's input (order does not matter)."""
    return sum(sorted(values)) % MODULUS


def expected_outcome(rounds: int, batch: int, start: int = 1) -> int:
    """The outcome computed without orch, for comparison."""
    value = start
    for _ in range(rounds):
        value = next_value([(value * 31 + i * i + 7) % MODULUS for i in range(batch)])
    return value


class ChainOptions(BaseModel):
    """Options of :class:`ChainCampaign`."""

    rounds: int = Field(default=10, ge=1)
    batch: int = Field(default=20, ge=1)
    calls_dir: str
    pause: float = Field(default=0.02, ge=0)


class ChainCampaign(BaseThinker):
    """``rounds`` rounds of ``batch`` tasks; each round's input is the last round's sum."""

    methods = [Method(step)]
    Options = ChainOptions

    def __init__(self, queues, options: ChainOptions):
        super().__init__(queues)
        self.options = options
        self.outcome: int | None = None
        self.replayed = 0

    @agent
    def run(self) -> None:
        opts = self.options
        value = 1
        for _ in range(opts.rounds):
            for index in range(opts.batch):
                self.queues.send_inputs(
                    value, index, opts.calls_dir, opts.pause, method="step", topic="step"
                )
            values = []
            for _ in range(opts.batch):
                result = self.queues.get_result("step")
                assert result.success, result.failure_info
                self.replayed += result.replayed
                values.append(result.value)
            value = next_value(values)
        self.outcome = value

    def summary(self) -> str:
        return f"outcome: {self.outcome}; replayed: {self.replayed}"
