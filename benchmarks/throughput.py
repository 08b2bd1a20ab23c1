"""No-op task throughput and decision latency: orch vs the same engine driven directly.

One local HTEX site (GlobusComputeEngine) is started once; the raw baseline packs tasks the
way the SDK does and submits them straight to that engine, keeping N in flight with
completion callbacks; the orch run keeps N in flight through ``send_inputs``/``get_result``
on the same engine. Rounds alternate raw/orch so drift hits both alike.

Decision latency: from ``get_result`` returning a result to the thinker until
``send_inputs`` has handed the next task to the site (it returns after the engine's submit).

    python benchmarks/throughput.py [--tasks 2000] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from globus_compute_endpoint.engines.base import GCFuture

from orchestrator.config.sites import SiteConfig
from orchestrator.dispatch import Dispatcher, Method, MethodRegistry
from orchestrator.dispatch.journal import Journal
from orchestrator.queues import Queues
from orchestrator.sites.local import _SERIALIZER, LocalSite, pack_call


def noop() -> None:
    """The task: does nothing."""
    return None


PACKED_NOOP = _SERIALIZER.serialize(noop)
"""The bare function, serialized once (the SDK also serializes a function once, when it
registers it): the raw baseline pays only for its arguments per task."""


def raw_round(site: LocalSite, n_tasks: int, in_flight: int, submit_times: list[float]) -> float:
    """Tasks/s with the engine driven directly, ``in_flight`` tasks outstanding.

    Appends the duration of each pack + ``engine.submit`` call to ``submit_times``: the part of
    a decision that orch cannot avoid.
    """
    engine = site._engine
    assert engine is not None
    done = threading.Event()
    lock = threading.Lock()
    counts = {"sent": 0, "finished": 0}

    def send() -> None:
        began = time.perf_counter()
        task_id = uuid.uuid4()
        future = GCFuture(task_id)
        future.add_done_callback(on_done)
        engine.submit(future, pack_call(task_id, noop, (), {}, PACKED_NOOP), {})
        submit_times.append(time.perf_counter() - began)

    def on_done(_: object) -> None:
        with lock:
            counts["finished"] += 1
            more = counts["sent"] < n_tasks
            if more:
                counts["sent"] += 1
            if counts["finished"] == n_tasks:
                done.set()
        if more:
            send()

    start = time.perf_counter()
    with lock:
        counts["sent"] = min(in_flight, n_tasks)
    for _ in range(min(in_flight, n_tasks)):
        send()
    done.wait()
    return n_tasks / (time.perf_counter() - start)


def orch_round(queues: Queues, n_tasks: int, in_flight: int) -> tuple[float, list[float]]:
    """Tasks/s through orch's queues, and the decision latencies (seconds)."""
    latencies: list[float] = []
    start = time.perf_counter()
    sent = min(in_flight, n_tasks)
    for _ in range(sent):
        queues.send_inputs(method="noop", topic="bench")
    for _ in range(n_tasks):
        result = queues.get_result(topic="bench")
        got = time.perf_counter()
        assert result.success, result.failure_info
        if sent < n_tasks:
            queues.send_inputs(method="noop", topic="bench")
            latencies.append(time.perf_counter() - got)
            sent += 1
    return n_tasks / (time.perf_counter() - start), latencies


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per setting")
    parser.add_argument("--workers", type=int, default=2, help="HTEX workers")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--no-journal", action="store_true", help="leave the journal out (to measure its cost)"
    )
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    config = SiteConfig(
        name="bench", kind="cpu", backend="local", capacity=args.workers, max_in_flight=4096
    )
    site = LocalSite(config, run_dir)
    site.start()
    queues = Queues(["bench"])
    # As in a campaign: every state change and result goes through the journal
    journal = None if args.no_journal else Journal(run_dir)
    dispatcher = Dispatcher(
        [site], MethodRegistry([Method(noop)]), queues.put_result, run_dir, journal=journal
    )
    queues.attach(dispatcher)
    try:
        raw_round(site, 200, 8, [])  # warm up workers and code paths
        orch_round(queues, 200, 8)
        rows = []
        for n in args.in_flight:
            raw, orch, lat, floor = [], [], [], []
            for _ in range(args.rounds):
                raw.append(raw_round(site, args.tasks, n, floor))
                rate, latencies = orch_round(queues, args.tasks, n)
                orch.append(rate)
                lat.extend(latencies)
            rows.append((n, statistics.median(raw), statistics.median(orch), lat, floor))
    finally:
        dispatcher.close()
        site.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)

    print(
        f"\nno-op tasks, local HTEX site, {args.workers} workers, {args.tasks} tasks x "
        f"{args.rounds} rounds (medians)\n"
    )
    header = (
        f"{'in flight':>9} | {'raw tasks/s':>11} | {'orch tasks/s':>12} | {'orch/raw':>8} | "
        f"{'decision median ms':>18} | {'decision p99 ms':>15} | {'raw submit median ms':>20}"
    )
    print(header)
    print("-" * len(header))
    for n, raw_rate, orch_rate, lat, floor in rows:
        print(
            f"{n:>9} | {raw_rate:>11.0f} | {orch_rate:>12.0f} | {orch_rate / raw_rate:>8.2f} | "
            f"{statistics.median(lat) * 1e3:>18.3f} | {percentile(lat, 99) * 1e3:>15.3f} | "
            f"{statistics.median(floor) * 1e3:>20.3f}"
        )
    print(
        "\ndecision: get_result returned -> send_inputs returned (task handed to the engine);"
        "\nraw submit: pack + engine.submit alone, the floor of any decision on this engine."
    )


if __name__ == "__main__":
    main()
