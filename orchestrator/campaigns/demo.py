"""The demo campaign: surrogate-steered search that uses a CPU site and a GPU site.

Simulations (``cpu``) evaluate an objective at proposed points; every ``batch_size`` results a
surrogate fit (``gpu``) ranks fresh candidates, which the simulation submitter then prefers
over random points. It ends after ``n_simulations`` simulation results.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from pathlib import Path

from pydantic import BaseModel, Field

from orchestrator.apps.demo import fit_and_rank, simulate
from orchestrator.dispatch import Method
from orchestrator.models import Result
from orchestrator.thinker import (
    BaseThinker,
    ResourceCounter,
    ThinkerQueues,
    event_responder,
    result_processor,
    task_submitter,
)


class DemoOptions(BaseModel):
    """Options of the demo campaign (``-o key=value``)."""

    n_simulations: int = Field(default=64, ge=1, le=100_000, description="Simulations to run")
    parallel: int = Field(default=4, ge=1, le=1024, description="Simulations in flight")
    batch_size: int = Field(default=16, ge=2, description="New results between surrogate fits")
    seed: int = Field(default=0, description="Seed of the random proposals")


class DemoCampaign(BaseThinker):
    """Minimize a 2-D objective, steering random search with a surrogate trained on a GPU site."""

    methods = [Method(simulate, kind="cpu"), Method(fit_and_rank, kind="gpu")]
    topics = ["simulate", "train"]
    Options = DemoOptions

    def __init__(
        self,
        queues: ThinkerQueues,
        options: DemoOptions | None = None,
        run_dir: Path | None = None,
    ):
        self.options = options or DemoOptions()
        self.slots = ResourceCounter(self.options.parallel, task_types=["simulate"])
        super().__init__(queues, self.slots)
        self.run_dir = run_dir
        self.rng = random.Random(self.options.seed)
        self.retrain = threading.Event()
        self.lock = threading.Lock()
        self.candidates: deque[tuple[float, float]] = deque()
        self.points: list[list[float]] = []
        self.values: list[float] = []
        self.failures = 0
        self.submitted = 0
        self.sites: Counter[str] = Counter()
        self.fits = 0
        self.best: tuple[float, list[float]] | None = None
        # Every slot starts in the simulation pool
        self.slots.reallocate(None, "simulate", self.options.parallel)

    @task_submitter(task_type="simulate", n_slots=1)
    def submit_simulation(self) -> None:
        """Send the next point: a surrogate candidate if there is one, else a random one."""
        with self.lock:
            if self.submitted >= self.options.n_simulations:
                return  # keep the slot: the submitter then blocks until the campaign ends
            self.submitted += 1
            point = (
                self.candidates.popleft()
                if self.candidates
                else (self.rng.uniform(-5, 5), self.rng.uniform(-5, 5))
            )
        self.queues.send_inputs(*point, method="simulate", topic="simulate")

    @result_processor(topic="simulate")
    def record_simulation(self, result: Result) -> None:
        """Keep the value, free the slot, and ask for a new fit every ``batch_size`` results."""
        self.slots.release("simulate", 1)
        self.sites[result.site or "?"] += 1
        with self.lock:
            if result.success:
                value = float(result.value)
                self.points.append(list(result.args or ()))
                self.values.append(value)
                if self.best is None or value < self.best[0]:
                    self.best = (value, list(result.args or ()))
                if len(self.values) % self.options.batch_size == 0:
                    self.retrain.set()
            else:
                self.failures += 1
                self.logger.warning("simulation failed: %s", result.failure_info)
            finished = len(self.values) + self.failures
        if finished >= self.options.n_simulations:
            self.done.set()

    @event_responder(event_name="retrain")
    def retrain_surrogate(self) -> None:
        """Fit the surrogate on a GPU site and queue its best candidates.

        Fits again before returning while a full batch of new results arrived during the
        last fit (the event is cleared only after this returns, so those sets would be lost).
        """
        trained_on = -1
        while not self.done.is_set():
            with self.lock:
                if len(self.values) - max(trained_on, 0) < self.options.batch_size:
                    if trained_on >= 0:
                        return
                points, values = list(self.points), list(self.values)
            trained_on = len(values)
            seed = self.rng.randrange(2**31)
            self.queues.send_inputs(points, values, method="fit_and_rank", topic="train", seed=seed)
            result = self.queues.get_result(topic="train")
            self.sites[result.site or "?"] += 1
            if not result.success:
                self.logger.warning("surrogate fit failed: %s", result.failure_info)
                return
            self.fits += 1
            with self.lock:
                self.candidates.clear()
                self.candidates.extend(tuple(c) for c in result.value["candidates"])

    def summary(self) -> str:
        """One paragraph: tasks per site, best value found, number of fits."""
        per_site = ", ".join(f"{name}: {n}" for name, n in sorted(self.sites.items()))
        best = (
            f"{self.best[0]:.4g} at ({self.best[1][0]:.3f}, {self.best[1][1]:.3f})"
            if self.best
            else "none"
        )
        return (
            f"simulations: {len(self.values)} ok, {self.failures} failed; surrogate fits: "
            f"{self.fits}; tasks per site: {per_site}; best value found: {best}"
        )
