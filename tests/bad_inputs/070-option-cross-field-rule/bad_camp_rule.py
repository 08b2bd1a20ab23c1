"""A campaign whose options have a rule across two of them."""

from pydantic import BaseModel, model_validator

from orchestrator.dispatch import Method
from orchestrator.thinker import BaseThinker, agent


def double(x):
    return 2 * x


class RangeOptions(BaseModel):
    low: int = 0
    high: int = 10

    @model_validator(mode="after")
    def _ordered(self):
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class Ranged(BaseThinker):
    methods = [Method(double, kind="cpu")]
    Options = RangeOptions

    @agent
    def go(self):
        self.queues.send_inputs(21, method="double", topic="double")
