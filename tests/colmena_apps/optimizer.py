"""A simple optimizer in Colmena's style: a task submitter per free slot, a result processor.

It minimizes ``(x - 3)^2`` on [-10, 10]: the first points are spread over the range, each
later point is drawn near the best seen so far. Prints one JSON line: the best point, how
many tasks ran, the most that ran at once.

    python optimizer.py RUN_DIR
"""

import json
import logging
import random
import sys
from pathlib import Path
from threading import Lock

from orchestrator.colmena.models import Result
from orchestrator.colmena.queue import PipeQueues
from orchestrator.colmena.task_server import LocalTaskServer
from orchestrator.colmena.thinker import (
    BaseThinker,
    ResourceCounter,
    result_processor,
    task_submitter,
)


def objective(x: float) -> float:
    return (x - 3.0) ** 2


class Optimizer(BaseThinker):
    def __init__(self, queues, rec, budget: int, seed: int = 1):
        super().__init__(queues, rec)
        self.budget = budget
        self.rng = random.Random(seed)
        self.sent = 0
        self.best = (None, float("inf"))
        self.seen: list[tuple[float, float]] = []
        self.lock = Lock()
        self.in_flight = 0
        self.most_in_flight = 0

    @task_submitter(task_type="sim", n_slots=1)
    def propose(self):
        with self.lock:
            if self.sent >= self.budget:
                self.done.set()
                return
            self.sent += 1
            if self.best[0] is None or self.sent <= 4:
                x = self.rng.uniform(-10, 10)
            else:
                x = min(10.0, max(-10.0, self.best[0] + self.rng.gauss(0, 1.0)))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.queues.send_inputs(x, topic="sim")  # the only method: Colmena's default

    @result_processor(topic="sim")
    def learn(self, result: Result):
        self.rec.release("sim", 1)
        with self.lock:
            self.in_flight -= 1
            if result.success:
                self.seen.append((result.args[0], result.value))
                if result.value < self.best[1]:
                    self.best = (result.args[0], result.value)


def main() -> None:
    run_dir = Path(sys.argv[1])
    logging.basicConfig(level=logging.INFO, filename=run_dir.parent / f"{run_dir.name}.log")
    queues = PipeQueues(topics=["sim"])
    server = LocalTaskServer(queues, [objective], num_workers=2, run_dir=run_dir)
    rec = ResourceCounter(2, ["sim"])
    rec.reallocate(None, "sim", 2)
    thinker = Optimizer(queues, rec, budget=24)
    server.start()
    try:
        thinker.start()
        thinker.join()
    finally:
        queues.send_kill_signal()
    server.join()
    print(
        json.dumps(
            {
                "best": thinker.best,
                "count": len(thinker.seen),
                "most_in_flight": thinker.most_in_flight,
                "active": queues.active_count,
                "exitcode": server.exitcode,
            }
        )
    )


if __name__ == "__main__":
    main()
