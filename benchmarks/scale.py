"""Scale: what one dispatch decision, one queued task and ``orch status`` cost as the backlog grows.

Issue 17, item 4: per-decision cost flat from 100 to 100,000 queued tasks; memory per queued
task <= 2 KB; ``orch status`` on such a run under 1 s.

Setup, per queued size N: ``Queues`` + ``Dispatcher`` with a real ``Journal`` (and the live
snapshot recorder a campaign runs, so ``orch status`` sees a running campaign) in a temporary
run directory, and one site whose two slots are kept full: its ``submit`` returns futures the
benchmark completes by hand, so N tasks of a no-op method (one int argument) wait in orch's
backlog.

One rig per size is built (all stay alive) and the timed rounds run in ``--blocks`` blocks that
visit every size in turn, so a change of load on the machine (it may be shared) hits every
size alike. Measured at each N, over ``--calls`` rounds that keep the backlog at N:

* ``send_inputs``: one call that adds a task behind the N already waiting (the thinker's
  side of a decision: copy the inputs, build the Task, journal it, hold it).
* slot freed -> next sent: from a running task's future being completed to the site's
  ``submit`` being called with the next task from the backlog (the dispatcher drains it
  from the future's callback).
* ``get_result``: the thinker's call that takes that result, and done -> thinker: from the
  future being completed to ``get_result`` returning it (the result is journaled before it is
  handed over, so this includes the journal's commit).
* bytes per queued task: Python memory still allocated after queueing N tasks and flushing the
  journal (tracemalloc, in a separate setup so tracing does not slow the timings), over N;
  the RSS growth of the timed setup over N is shown next to it.
* ``orch status RUN_DIR``: the real CLI in a subprocess (median of ``--status-runs``) while
  the dispatcher is alive with N queued and the journal flushed; ``read_status`` in process
  (the journal queries alone, without the CLI's start-up) next to it. At the largest size it
  is timed again after ``--finished`` more tasks went through (default 100,000): a run with N
  queued whose journal also holds that many results.

"Flat" means the figure at the largest size is within noise of the one at the smallest: the
ratio largest/smallest of each median is printed.

    .venv/bin/python benchmarks/scale.py [--sizes 100 1000 10000 100000] [--calls 1000]
        [--blocks 10] [--status-runs 3] [--finished 100000] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.sites import SiteConfig
from orchestrator.dispatch import Dispatcher, Method, MethodRegistry
from orchestrator.dispatch.journal import Journal
from orchestrator.observe.live import LiveRecorder
from orchestrator.observe.status import read_status
from orchestrator.queues import Queues
from orchestrator.sites.base import Outcome, Site

TOPIC = "scale"
CAPACITY = 2
"""Slots of the benchmark's site (also its ``max_in_flight``: nothing queues at the site)."""

TARGET_BYTES = 2048
TARGET_STATUS_S = 1.0
FLAT_RATIO = 1.5
"""Largest/smallest median ratio still called flat (timings on a shared 2-core machine)."""


def noop(x: int) -> int:
    """The method: returns its argument (never actually run: the benchmark completes it)."""
    return x


class HandSite(Site):
    """A site whose tasks finish when the benchmark says so.

    ``submit`` returns a pending future and records when it was called; :meth:`complete`
    finishes the oldest one, as a worker would, which frees its slot.
    """

    def __init__(self, config: SiteConfig, run_dir: Path):
        super().__init__(config, run_dir)
        self.pending: deque[Future[dict[str, Any]]] = deque()
        self.submitted_ns = 0
        """``time.perf_counter_ns()`` of the last ``submit`` call."""

    def start(self) -> None:
        """Nothing to start."""

    def submit(
        self,
        fn: Any,
        args: Any,
        kwargs: Any,
        walltime: float | None = None,
        task_id: str | None = None,
        resources: Any = None,
    ) -> Future[dict[str, Any]]:
        """Take a task: a future that stays pending until :meth:`complete`."""
        self.submitted_ns = time.perf_counter_ns()
        future: Future[dict[str, Any]] = Future()
        self.pending.append(future)
        return future

    def complete(self) -> int:
        """Finish the oldest task (the dispatcher's callback runs here); when it began, in ns."""
        future = self.pending.popleft()
        now = time.time()
        record = {"ok": True, "value": 0, "host": "bench", "pid": 0, "started": now}
        record["finished"] = now
        began = time.perf_counter_ns()
        future.set_result(record)
        return began

    def outcome(self, future: Future[dict[str, Any]]) -> Outcome:
        """The worker's record, decoded."""
        return Outcome.from_worker(future.result(), input_size=None, value_size=None)

    def shutdown(self) -> None:
        """Forget the pending tasks (their callbacks are not run)."""
        self.pending.clear()


@dataclass
class Rig:
    """One dispatcher with a full site, its journal and live recorder, in a temp run dir."""

    run_dir: Path
    journal: Journal
    queues: Queues
    dispatcher: Dispatcher
    site: HandSite
    live: LiveRecorder

    @classmethod
    def build(cls) -> Rig:
        """Wire the pieces as a campaign does, and fill the site's slots."""
        run_dir = Path(tempfile.mkdtemp(prefix="orch-scale-"))
        config = SiteConfig(
            name="full", kind="cpu", backend="local", capacity=CAPACITY, max_in_flight=CAPACITY
        )
        site = HandSite(config, run_dir)
        site.start()
        journal = Journal(run_dir)
        journal.set_meta(
            {
                "campaign": "scale_benchmark",
                "started": time.time(),
                "site_info": [
                    {"name": site.name, "kind": site.kind, "backend": "local", "capacity": CAPACITY}
                ],
            }
        )
        queues = Queues([TOPIC])
        dispatcher = Dispatcher(
            [site], MethodRegistry([Method(noop)]), queues.put_result, run_dir, journal=journal
        )
        queues.attach(dispatcher)
        live = LiveRecorder(dispatcher, journal).start()
        for i in range(CAPACITY):
            queues.send_inputs(i, method="noop", topic=TOPIC)
        assert len(site.pending) == CAPACITY
        return cls(run_dir, journal, queues, dispatcher, site, live)

    def queue(self, n: int) -> tuple[float, float]:
        """Send ``n`` tasks (they wait in the backlog); seconds it took, and of it in gc."""
        send = self.queues.send_inputs
        collecting: list[float] = []
        began_gc = [0.0]

        def watch(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                began_gc[0] = time.perf_counter()
            else:
                collecting.append(time.perf_counter() - began_gc[0])

        gc.callbacks.append(watch)
        try:
            began = time.perf_counter()
            for i in range(n):
                send(i, method="noop", topic=TOPIC)
            took = time.perf_counter() - began
        finally:
            gc.callbacks.remove(watch)
        assert self.dispatcher.waiting("cpu") == n, self.dispatcher.waiting("cpu")
        return took, sum(collecting)

    def flush(self) -> None:
        """Commit what the journal has queued, and let its writer drop the batch it wrote.

        The writer keeps its last batch referenced while it waits for the next item; a second
        flush is that next item, so the first batch's statements are freed.
        """
        self.journal.flush()
        self.journal.flush()

    def close(self) -> None:
        """Stop the recorder, close the dispatcher and journal, remove the run dir."""
        self.live.stop("ended")
        self.dispatcher.close()
        self.site.shutdown()
        shutil.rmtree(self.run_dir, ignore_errors=True)


@dataclass
class Row:
    """The figures of one queued size."""

    queued: int
    queue_s: float = 0.0
    gc_s: float = 0.0
    flush_s: float = 0.0
    send_us: list[float] | None = None
    freed_us: list[float] | None = None
    get_us: list[float] | None = None
    result_us: list[float] | None = None
    rss_bytes: float = 0.0
    traced_bytes: float = 0.0
    status_s: float | None = None
    read_status_s: float | None = None
    finished: int = 0
    finish_s: float = 0.0
    finished_status_s: float | None = None
    finished_read_status_s: float | None = None


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def decisions(rig: Rig, calls: int, warmup: int = 50) -> tuple[list[float], ...]:
    """Time ``calls`` rounds: send_inputs, slot freed -> sent, get_result, done -> thinker (us).

    Each round adds one task behind the backlog and frees one slot, which sends the task at
    the head of the backlog: the backlog stays at its size.
    """
    send_us: list[float] = []
    freed_us: list[float] = []
    get_us: list[float] = []
    result_us: list[float] = []
    queues, site = rig.queues, rig.site
    waiting = rig.dispatcher.waiting("cpu")
    for i in range(warmup + calls):
        began = time.perf_counter_ns()
        queues.send_inputs(i, method="noop", topic=TOPIC)
        sent = time.perf_counter_ns() - began
        freed = site.complete()
        handed = site.submitted_ns - freed
        assert handed > 0, "freeing a slot sent nothing"
        began = time.perf_counter_ns()
        result = queues.get_result(TOPIC, timeout=10)
        ended = time.perf_counter_ns()
        assert result.success, result.failure_info
        if i >= warmup:
            send_us.append(sent / 1e3)
            freed_us.append(handed / 1e3)
            get_us.append((ended - began) / 1e3)
            result_us.append((ended - freed) / 1e3)
    assert rig.dispatcher.waiting("cpu") == waiting
    return send_us, freed_us, get_us, result_us


def time_status(rig: Rig, runs: int) -> tuple[float, float, str]:
    """Median seconds of the real ``orch status RUN_DIR``, of ``read_status``, and its output."""
    rig.live.write()
    rig.flush()
    orch = Path(sys.executable).with_name("orch")
    times, output = [], ""
    for _ in range(runs):
        began = time.perf_counter()
        done = subprocess.run(
            [str(orch), "status", str(rig.run_dir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        times.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise RuntimeError(f"orch status failed ({done.returncode}): {done.stderr[-2000:]}")
        output = done.stdout
    in_process = []
    for _ in range(runs):
        began = time.perf_counter()
        read_status(rig.run_dir)
        in_process.append(time.perf_counter() - began)
    return statistics.median(times), statistics.median(in_process), output


def finish(rig: Rig, count: int) -> float:
    """Run ``count`` more rounds untimed (the backlog keeps its size); the seconds they took."""
    queues, site = rig.queues, rig.site
    began = time.perf_counter()
    for i in range(count):
        queues.send_inputs(i, method="noop", topic=TOPIC)
        site.complete()
        queues.get_result(TOPIC, timeout=10)
    return time.perf_counter() - began


def measure_timing(
    sizes: list[int], calls: int, blocks: int, status_runs: int, profile: bool, finished: int
) -> tuple[list[Row], str, str]:
    """The timing figures of every size, with one rig per size alive at once.

    The timed rounds run in ``blocks`` blocks, each visiting every rig (in alternating order),
    so a change of load on the machine meanwhile hits every size alike and the ratios stay
    fair. With ``finished``, that many more tasks then go through the largest rig and
    ``orch status`` is timed again on it.

    Returns:
        The rows, the ``orch status`` output at the largest size, and the profile of the
        largest size's rounds (empty unless ``profile``).
    """
    rows = [Row(queued=n) for n in sizes]
    rigs: list[Rig] = []
    try:
        for row in rows:
            rig = Rig.build()
            rigs.append(rig)
            gc.collect()
            before = rss()
            row.queue_s, row.gc_s = rig.queue(row.queued)
            began = time.perf_counter()
            rig.flush()
            row.flush_s = time.perf_counter() - began
            gc.collect()
            row.rss_bytes = (rss() - before) / row.queued
            print(
                f"queued {row.queued:>7}: queued in {row.queue_s:.2f} s "
                f"({row.queue_s / row.queued * 1e6:.1f} us/task, {row.gc_s:.2f} s of it in gc), "
                f"journal flush after it {row.flush_s:.2f} s",
                flush=True,
            )
        for rig in rigs:
            decisions(rig, 0)  # warm-up rounds only
        for row in rows:
            row.send_us, row.freed_us, row.get_us, row.result_us = [], [], [], []
        per_block = max(1, calls // blocks)
        for block in range(blocks):
            order = list(zip(rows, rigs, strict=True))
            for row, rig in order if block % 2 == 0 else reversed(order):
                figures = decisions(rig, per_block, warmup=0)
                for into, values in zip(
                    (row.send_us, row.freed_us, row.get_us, row.result_us), figures, strict=True
                ):
                    into.extend(values)
        report = ""
        if profile:  # rounds of their own: the profiler slows what it watches
            profiler = cProfile.Profile()
            profiler.enable()
            decisions(rigs[-1], calls, warmup=0)
            profiler.disable()
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(25)
            report = text.getvalue()
        output = ""
        if status_runs:
            for row, rig in zip(rows, rigs, strict=True):
                row.status_s, row.read_status_s, output = time_status(rig, status_runs)
            if finished:
                row, rig = rows[-1], rigs[-1]
                row.finished, row.finish_s = finished, finish(rig, finished)
                row.finished_status_s, row.finished_read_status_s, output = time_status(
                    rig, status_runs
                )
        return rows, output, report
    finally:
        for rig in rigs:
            rig.close()


def measure_memory(n: int, top: int) -> tuple[float, list[str]]:
    """Traced bytes per queued task at ``n`` queued, and the ``top`` lines holding them."""
    rig = Rig.build()
    try:
        rig.flush()
        gc.collect()
        tracemalloc.start(1)
        rig.queue(n)
        rig.flush()
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        lines = [
            f"  peak while queueing: {peak / n:.0f} B/task (journal statements not yet written)"
        ]
        if top:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            for stat in snapshot.statistics("lineno")[:top]:
                frame = stat.traceback[0]
                where = f"{_short(frame.filename)}:{frame.lineno}"
                lines.append(
                    f"  {stat.size / n:8.1f} B/task  {stat.count / n:5.2f} blocks/task  {where}"
                )
        tracemalloc.stop()
        return current / n, lines
    finally:
        tracemalloc.stop()
        rig.close()


def _short(filename: str) -> str:
    for marker in ("/orchestrator/", "/lib/python"):
        if marker in filename:
            return filename[filename.index(marker) + 1 :]
    return filename


def _cell(values: list[float] | None) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.1f} / {percentile(values, 99):.1f}"


RATIOS = {
    "send_us": "send_inputs",
    "freed_us": "slot freed -> sent",
    "get_us": "get_result",
    "result_us": "done -> thinker",
}
"""The per-decision figures whose largest/smallest ratio decides "flat"."""


def print_table(rows: list[Row], calls: int) -> None:
    """Print the table, the ratios largest/smallest and which targets are met."""
    print(
        f"\nno-op method, one site of {CAPACITY} slots kept full, real journal; {calls} rounds "
        "per size; us = microseconds, median / p99; B = bytes per queued task\n"
    )
    header = (
        f"{'queued':>7} | {'queue s':>7} | {'send_inputs us':>14} | {'slot freed->sent us':>19} | "
        f"{'get_result us':>14} | {'done->thinker us':>16} | {'B traced':>8} | {'B RSS':>6} | "
        f"{'orch status s':>13} | {'read_status s':>13}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        status = "-" if row.status_s is None else f"{row.status_s:.2f}"
        inside = "-" if row.read_status_s is None else f"{row.read_status_s:.3f}"
        print(
            f"{row.queued:>7} | {row.queue_s:>7.2f} | {_cell(row.send_us):>14} | "
            f"{_cell(row.freed_us):>19} | {_cell(row.get_us):>14} | {_cell(row.result_us):>16} | "
            f"{row.traced_bytes:>8.0f} | {row.rss_bytes:>6.0f} | {status:>13} | {inside:>13}"
        )
    first, last = rows[0], rows[-1]
    ratios = {
        name: statistics.median(getattr(last, name)) / statistics.median(getattr(first, name))
        for name in RATIOS
    }
    print(
        f"\nratio {last.queued}/{first.queued} of the medians: "
        + ", ".join(f"{label} {ratios[name]:.2f}" for name, label in RATIOS.items())
    )
    flat = all(r <= FLAT_RATIO for r in ratios.values())
    memory_ok = last.traced_bytes <= TARGET_BYTES
    if last.status_s is None:
        status = "not measured"
    else:
        verdict = "met" if last.status_s < TARGET_STATUS_S else "NOT met"
        status = f"{verdict} ({last.status_s:.2f} s)"
    print(
        f"targets at {last.queued} queued: per-decision cost flat (every ratio <= {FLAT_RATIO}): "
        f"{'met' if flat else 'NOT met'}; memory <= {TARGET_BYTES} B/task: "
        f"{'met' if memory_ok else 'NOT met'} ({last.traced_bytes:.0f}); "
        f"orch status < {TARGET_STATUS_S:g} s: {status}"
    )
    if last.finished_status_s is not None:
        verdict = "met" if last.finished_status_s < TARGET_STATUS_S else "NOT met"
        print(
            f"beyond the target, orch status with {last.queued} queued after {last.finished} "
            f"more finished (run through in {last.finish_s:.0f} s): "
            f"{last.finished_status_s:.2f} s, read_status {last.finished_read_status_s:.3f} s "
            f"(< {TARGET_STATUS_S:g} s: {verdict})"
        )


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000, 100_000])
    parser.add_argument("--calls", type=int, default=1000, help="timed rounds per size")
    parser.add_argument(
        "--blocks", type=int, default=10, help="blocks the rounds are split in, across sizes"
    )
    parser.add_argument("--status-runs", type=int, default=3, help="orch status runs per size")
    parser.add_argument(
        "--finished",
        type=int,
        default=100_000,
        help="at the largest size, finish this many more tasks and time orch status again",
    )
    parser.add_argument("--top", type=int, default=10, help="tracemalloc lines shown (largest)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile extra (untimed) rounds at the largest size",
    )
    args = parser.parse_args()
    sizes = sorted(set(args.sizes))
    load = os.getloadavg()[0]
    rows, status_output, profile_text = measure_timing(
        sizes, args.calls, args.blocks, args.status_runs, args.profile, args.finished
    )
    top_lines: list[str] = []
    for row in rows:
        largest = row is rows[-1]
        row.traced_bytes, lines = measure_memory(row.queued, args.top if largest else 0)
        if largest:
            top_lines = lines
    print(
        f"\nload average (1 min) at the start {load:.2f}, at the end {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    print_table(rows, args.calls)
    last = rows[-1]
    if top_lines:
        print(f"\nwhere the bytes of a queued task are (tracemalloc, {last.queued} queued):")
        print("\n".join(top_lines))
    if profile_text:
        print(f"\ncProfile of the timed rounds at {last.queued} queued (by own time):")
        print(profile_text)
    if status_output:
        print(f"\norch status at {last.queued} queued:\n{status_output}")


if __name__ == "__main__":
    main()
