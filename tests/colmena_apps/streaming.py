"""A Colmena main script, as Colmena's docs write one, with only ``colmena`` changed in imports.

Queues, a task server holding the methods, a thinker that keeps a fixed number of
simulations in flight and stops after a budget; ``start`` / ``join`` / ``send_kill_signal``.
Prints one JSON line with what the thinker saw (the tests read it).

    python streaming.py RUN_DIR [--parsl]
"""

import json
import logging
import sys
from pathlib import Path
from threading import Lock

from parsl.config import Config
from parsl.executors import HighThroughputExecutor

from orchestrator.colmena.models import Result
from orchestrator.colmena.queue.python import PipeQueues
from orchestrator.colmena.task_server import LocalTaskServer, ParslTaskServer
from orchestrator.colmena.thinker import BaseThinker, ResourceCounter, agent, result_processor


def square(x: float) -> float:
    """The 'simulation': defined in the main script, as Colmena's examples do."""
    return x * x


class Streamer(BaseThinker):
    """Keeps two tasks in flight until ``budget`` results are in."""

    def __init__(self, queues, rec, budget: int):
        super().__init__(queues, rec)
        self.budget = budget
        self.sent = 0
        self.results: list[dict] = []
        self.lock = Lock()

    @agent(startup=True)
    def start_up(self):
        for _ in range(2):
            self.submit()

    def submit(self):
        with self.lock:
            if self.sent >= self.budget:
                return
            self.sent += 1
            x = float(self.sent)
        self.queues.send_inputs(x, method="square", topic="simulate", task_info={"n": self.sent})

    @result_processor(topic="simulate")
    def record(self, result: Result):
        self.results.append(
            {
                "x": result.args[0],
                "value": result.value,
                "success": result.success,
                "n": result.task_info["n"],
                "running": result.time.running,
                "created": result.timestamp.created,
                "received": result.timestamp.result_received,
                "host": result.worker_info.hostname if result.worker_info else None,
                "sizes": result.message_sizes,
            }
        )
        with open(self.out, "a") as fp:
            print(result.json(exclude={"inputs", "value"}), file=fp)
        if len(self.results) >= self.budget:
            self.done.set()
        else:
            self.submit()


def main() -> None:
    run_dir = Path(sys.argv[1])
    logging.basicConfig(level=logging.INFO, filename=run_dir.parent / f"{run_dir.name}.log")
    queues = PipeQueues(topics=["simulate"], keep_inputs=True)
    if "--parsl" in sys.argv:
        config = Config(executors=[HighThroughputExecutor(label="cpus", max_workers_per_node=2)])
        server = ParslTaskServer([square], queues, config, run_dir=run_dir)
    else:
        server = LocalTaskServer(queues, [square], num_workers=2, run_dir=run_dir)
    thinker = Streamer(queues, ResourceCounter(2), budget=6)
    thinker.out = run_dir.parent / f"{run_dir.name}-results.jsonl"
    try:
        server.start()
        thinker.start()
        thinker.join()
    finally:
        queues.send_kill_signal()
    server.join()
    print(json.dumps({"results": thinker.results, "exitcode": server.exitcode}))


if __name__ == "__main__":
    main()
