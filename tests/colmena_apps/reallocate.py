"""An event responder that moves slots between pools, in Colmena's style.

Simulations run on the ``sim`` pool. After every ``retrain_after`` results a result
processor sets the ``retrain`` event; its responder borrows one slot from ``sim`` for the
``ml`` pool (``reallocate_resources``), runs a training task in it, and gives the slot back
when done. Prints one JSON line: the slots each pool held while each training ran, the pools
at the end, and every result count.

    python reallocate.py RUN_DIR
"""

import json
import logging
import sys
from pathlib import Path
from threading import Event, Lock

from orchestrator.colmena.models import Result
from orchestrator.colmena.queue.python import PipeQueues
from orchestrator.colmena.task_server import LocalTaskServer
from orchestrator.colmena.thinker import (
    BaseThinker,
    ResourceCounter,
    event_responder,
    result_processor,
    task_submitter,
)


def simulate(x: int) -> int:
    return x * 2


def train(data: list) -> float:
    return sum(data) / len(data)


class Steering(BaseThinker):
    def __init__(self, queues, rec, n_sims: int, retrain_after: int):
        super().__init__(queues, rec)
        self.n_sims = n_sims
        self.retrain_after = retrain_after
        self.sent = 0
        self.data: list[int] = []
        self.models: list[float] = []
        self.during: list[dict] = []
        self.retrain = Event()
        self.lock = Lock()
        self.ml_slot = 1

    @task_submitter(task_type="sim")
    def submit_sim(self):
        with self.lock:
            self.sent += 1
            n = self.sent
        if n > self.n_sims:  # budget spent: hold the slot until the campaign ends
            self.done.wait()
            return
        self.queues.send_inputs(n, method="simulate", topic="simulate")

    @result_processor(topic="simulate")
    def collect(self, result: Result):
        self.rec.release("sim", 1)
        with self.lock:
            self.data.append(result.value)
            count = len(self.data)
        if count % self.retrain_after == 0:
            self.retrain.set()
        if count >= self.n_sims:
            self.done.set()

    @event_responder(
        event_name="retrain",
        reallocate_resources=True,
        gather_from="sim",
        gather_to="ml",
        disperse_to="sim",
        max_slots="ml_slot",
    )
    def retrain_model(self):
        assert self.rec.acquire("ml", 1, timeout=60), "no slot reached the ml pool"
        self.during.append(
            {"ml": self.rec.allocated_slots("ml"), "sim": self.rec.allocated_slots("sim")}
        )
        with self.lock:
            data = list(self.data)
        self.queues.send_inputs(data, method="train", topic="train")
        result = self.queues.get_result(topic="train", timeout=120)
        self.models.append(result.value)
        self.rec.release("ml", 1)


def main() -> None:
    run_dir = Path(sys.argv[1])
    logging.basicConfig(level=logging.INFO, filename=run_dir.parent / f"{run_dir.name}.log")
    queues = PipeQueues(topics=["simulate", "train"])
    server = LocalTaskServer(queues, [simulate, train], num_workers=3, run_dir=run_dir)
    rec = ResourceCounter(3, ["sim", "ml"])
    rec.reallocate(None, "sim", 3)
    thinker = Steering(queues, rec, n_sims=12, retrain_after=4)
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
                "during": thinker.during,
                "models": thinker.models,
                "data": sorted(thinker.data),
                "end": {"ml": rec.allocated_slots("ml"), "sim": rec.allocated_slots("sim")},
                "errors": [name for name, _ in thinker.agent_errors],
                "exitcode": server.exitcode,
            }
        )
    )


if __name__ == "__main__":
    main()
