"""Watching a campaign: what ``orch status`` costs, and what the dashboard costs a campaign.

**status**: a journal of ``--tasks`` (10,000) finished tasks on 3 sites is written with the
real ``Journal`` API (every task created, sent, one attempt, its result, received; one in 50
failed; live snapshot, control actions, objective values), as a campaign of that size leaves
it. Then, ``--rounds`` times: ``read_status`` in this process, and the whole command
``orch status RUN --json`` and ``orch status RUN`` as a user runs it (a new process: Python
start-up and imports included). Baseline in the same run: ``python -c pass``, the floor of
any command.

**dashboard**: a campaign of ``--dash-tasks`` no-op tasks (2 local workers, real HTEX,
``2 x workers`` kept in flight, every state change journaled) runs with and without the
dashboard server (a separate process, as ``orch launch --dashboard`` starts it) while a
poller fetches the page's data twice as often as the page does (status every second, plots
every 5 s). Throughput is timed from the first task sent to the last result taken (the
sites' start-up left out). Rounds alternate; the ratio of throughputs is the dashboard's
cost.

    python benchmarks/operating.py [--tasks 10000] [--rounds 5] [--dash-tasks 2000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from pydantic import BaseModel

from orchestrator.dispatch import Method
from orchestrator.dispatch.journal import Journal
from orchestrator.models import FailureInfo, Task, Timestamps
from orchestrator.thinker import BaseThinker, agent


def synthetic_journal(run_dir: Path, n_tasks: int, seed: int = 1) -> None:
    """A journal as a finished campaign of ``n_tasks`` tasks on 3 sites leaves it."""
    rng = random.Random(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(run_dir)
    sites = [("cpu-a", "cpu", 8), ("cpu-b", "cpu", 4), ("gpu-a", "gpu", 2)]
    journal.set_meta(
        {
            "campaign": "benchmark",
            "options": {},
            "started": 1000.0,
            "site_info": [
                {"name": n, "kind": k, "backend": "local", "capacity": c} for n, k, c in sites
            ],
            "objective": {"name": "value", "goal": "max"},
        }
    )
    t = 1000.0
    for i in range(n_tasks):
        name, kind, _ = sites[i % 3] if i % 10 else sites[2]
        method = "simulate" if kind == "cpu" else "train"
        task = Task(method=method, topic="default", args=(i,), kwargs={})
        task.created = t
        task.site = name
        task.attempt = 1
        journal.created(task.task_id, method, "default", f"k{i}", t)
        journal.event(task.task_id, "sent", name)
        started, ended = t + 0.01, t + 0.01 + rng.expovariate(2.0)
        ok = i % 50 != 0
        journal.attempt(
            task.task_id, 1, method, name, (t, started, ended, ended + 0.005), ok,
            host="node1", pid=100 + i % 14, reason=None if ok else "timeout",
        )  # fmt: skip
        result = task.make_result(
            value=i if ok else None,
            success=ok,
            failure_info=None
            if ok
            else FailureInfo(exception_type="TaskTimeout", message="too slow", reason="timeout"),
            timestamps=Timestamps(
                created=t, sent=t, started=started, finished=ended, returned=ended + 0.005
            ),
        )
        journal.finished(result, f"k{i}")
        journal.event(task.task_id, "received", name)
        if ok and method == "simulate":
            journal.objective(rng.random(), task.task_id)
        t += 0.05
    journal.control("drain", "cpu-b", "me", "site cpu-b drained")
    journal.live(
        {"time": t, "pid": 0, "state": "ended", "started": 1000.0, "sites": {}, "waiting": {}}
    )
    journal.close()


def timed(cmd: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - began


def bench_status(n_tasks: int, rounds: int) -> None:
    from orchestrator.observe.status import read_status

    folder = Path(tempfile.mkdtemp(prefix="orch-bench-status-"))
    try:
        run_dir = folder / "run"
        began = time.perf_counter()
        synthetic_journal(run_dir, n_tasks)
        print(f"journal of {n_tasks} tasks written in {time.perf_counter() - began:.1f} s")
        inproc, as_json, as_text, floor = [], [], [], []
        orch = [sys.executable, "-m", "orchestrator.cli", "status", str(run_dir)]
        for _ in range(rounds):
            began = time.perf_counter()
            status = read_status(run_dir)
            inproc.append(time.perf_counter() - began)
            as_json.append(timed([*orch, "--json"]))
            as_text.append(timed(orch))
            floor.append(timed([sys.executable, "-c", "pass"]))
        assert status["totals"]["tasks"] == n_tasks
        for label, values in (
            ("read_status (in process)", inproc),
            ("orch status --json (whole command)", as_json),
            ("orch status (whole command)", as_text),
            ("python -c pass (baseline)", floor),
        ):
            print(f"{label:38s} median {statistics.median(values):.3f} s  min {min(values):.3f} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


POLL = {"status": 1.0, "plots": 5.0}
"""Seconds between the poller's requests (the page itself: 2 and 10)."""


def _poll(url: str, stop: threading.Event, counts: dict[str, int]) -> None:
    base, _, query = url.partition("?")
    last_plots = 0.0
    while not stop.wait(POLL["status"]):
        due = time.monotonic() - last_plots >= POLL["plots"]
        for path in ["api/status"] + (["api/plots"] if due else []):
            try:
                with urllib.request.urlopen(f"{base}{path}?{query}", timeout=30) as reply:
                    reply.read()
                counts[path] = counts.get(path, 0) + 1
            except OSError:
                counts["errors"] = counts.get("errors", 0) + 1
            if path == "api/plots":
                last_plots = time.monotonic()


def noop() -> None:
    """The task: does nothing."""


class NoopOptions(BaseModel):
    tasks: int = 2000
    in_flight: int = 4


class NoopCampaign(BaseThinker):
    """Keeps ``in_flight`` no-op tasks in flight until ``tasks`` came back; times them."""

    methods = [Method(noop)]
    Options = NoopOptions

    def __init__(self, queues, options: NoopOptions):
        super().__init__(queues)
        self.options = options
        self.first_sent = 0.0
        self.last_back = 0.0

    @agent
    def run(self) -> None:
        opts = self.options
        self.first_sent = time.perf_counter()
        sent = 0
        for _ in range(min(opts.in_flight, opts.tasks)):
            self.queues.send_inputs(method="noop")
            sent += 1
        for _ in range(opts.tasks):
            result = self.queues.get_result()
            assert result.success, result.failure_info
            if sent < opts.tasks:
                self.queues.send_inputs(method="noop")
                sent += 1
        self.last_back = time.perf_counter()


def dashboard_round(n_tasks: int, with_dashboard: bool) -> tuple[float, dict[str, int]]:
    from orchestrator.config.sites import SiteConfig
    from orchestrator.runner import run_campaign

    folder = Path(tempfile.mkdtemp(prefix="orch-bench-dash-"))
    board = None
    stop = threading.Event()
    counts: dict[str, int] = {}
    try:
        run_dir = folder / "run"
        run_dir.mkdir()
        config = SiteConfig(name="bench", kind="cpu", backend="local", capacity=2)
        options = NoopOptions(tasks=n_tasks, in_flight=4)
        if with_dashboard:
            board = subprocess.Popen(
                [sys.executable, "-m", "orchestrator.observe.dashboard", str(run_dir)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert board.stdout is not None
            url = board.stdout.readline().split(" ", 1)[1].strip()
            poller = threading.Thread(target=_poll, args=(url, stop, counts), daemon=True)
            poller.start()
        made: list[NoopCampaign] = []

        class Timed(NoopCampaign):
            def __init__(self, queues, options):
                super().__init__(queues, options)
                made.append(self)

        run_campaign(Timed, [config], run_dir, options, extra_paths=[str(Path(__file__).parent)])
        thinker = made[0]
        return n_tasks / (thinker.last_back - thinker.first_sent), counts
    finally:
        stop.set()
        if board is not None:
            board.terminate()
            board.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def bench_dashboard(n_tasks: int, rounds: int) -> None:
    rates: dict[bool, list[float]] = {False: [], True: []}
    polls: dict[str, int] = {}
    for r in range(rounds):
        for flag in (False, True) if r % 2 == 0 else (True, False):
            rate, counts = dashboard_round(n_tasks, flag)
            rates[flag].append(rate)
            for key, value in counts.items():
                polls[key] = polls.get(key, 0) + value
            print(f"round {r + 1}: dashboard {'on ' if flag else 'off'}  {rate:.1f} tasks/s")
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"campaign throughput without dashboard: median {off:.1f} tasks/s")
    print(f"campaign throughput with dashboard:    median {on:.1f} tasks/s (requests: {polls})")
    print(f"ratio with/without: {on / off:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dash-tasks", type=int, default=2000)
    parser.add_argument("--dash-rounds", type=int, default=3)
    parser.add_argument("--only", choices=["status", "dashboard"], default=None)
    parser.add_argument(
        "--page-rate",
        action="store_true",
        help="Poll as the page does (2 s / 10 s), not twice as often.",
    )
    args = parser.parse_args()
    if args.page_rate:
        POLL.update(status=2.0, plots=10.0)
    if args.only in (None, "status"):
        bench_status(args.tasks, args.rounds)
    if args.only in (None, "dashboard"):
        bench_dashboard(args.dash_tasks, args.dash_rounds)


if __name__ == "__main__":
    main()
