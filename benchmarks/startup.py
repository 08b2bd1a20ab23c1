"""Where the time goes from ``orch launch`` to the first result, phase by phase.

Runs the demo campaign on the default local sites (``orch launch --sites sites/ demo``) a few
times as a new user would, each in a fresh run directory, and reads each phase's moment from
what the run leaves behind: the journal (task sent, started and ended on its worker, result
taken by the thinker) and the engine's own logs (interchange up, worker pool's block launched,
pool process up, pool connected, first worker ready). Prints the median of each phase, from the
moment ``orch`` was started, for the CPU site that ran the first task.

    python benchmarks/startup.py [--runs 3] [--sites sites/]
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_LOG_TIME = re.compile(r"^(\d{10}\.\d+) ")
_BLOCK_TIME = re.compile(r"\.block-\d+\.(\d{10}\.\d+)\.sh$")


def _first_log_time(path: Path, needle: str = "") -> float | None:
    """The epoch time of the first line of an engine log (Parsl's format) containing needle."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        match = _LOG_TIME.match(line)
        if match and needle in line:
            return float(match.group(1))
    return None


def _phases(run_dir: Path, t0: float) -> dict[str, float | None]:
    """Each phase's moment (seconds after t0) for the site that ran the first task."""
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        first = db.execute(
            "SELECT site, sent, started, ended FROM attempts ORDER BY started LIMIT 1"
        ).fetchone()
        received = db.execute("SELECT min(time) FROM events WHERE state = 'received'").fetchone()[0]
    site, sent, started, ended = first
    site_dir = run_dir / "sites" / site
    executor_dir = next(site_dir.glob("orch-*"), site_dir)
    blocks = [
        float(m.group(1))
        for p in (site_dir / "submit_scripts").glob("*.sh")
        if (m := _BLOCK_TIME.search(p.name))
    ]
    manager_logs = sorted(executor_dir.glob("block-0/*/manager.log"))
    worker_logs = sorted(executor_dir.glob("block-0/*/worker_*.log"))
    manager = manager_logs[0] if manager_logs else Path("/nonexistent")
    worker_up = [t for p in worker_logs if (t := _first_log_time(p, "started")) is not None]
    moments = {
        "interchange up": _first_log_time(executor_dir / "interchange.log"),
        "pool block launched": min(blocks) if blocks else None,
        "pool process up": _first_log_time(manager),
        "pool connected": _first_log_time(manager, "Successfully connected"),
        "first worker ready": min(worker_up) if worker_up else None,
        "first task sent": sent,
        "first task started": started,
        "first task ended": ended,
        "first result taken": received,
    }
    return {name: (None if t is None else t - t0) for name, t in moments.items()}


def one_launch(sites: Path, workdir: Path) -> dict[str, float | None]:
    """Run the demo campaign once; its phases, in seconds after ``orch`` was started."""
    run_dir = workdir / f"run-{time.monotonic_ns()}"
    t0 = time.time()
    subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "launch", "--sites", str(sites), "demo",
         "--run-dir", str(run_dir), "--no-progress"],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    return _phases(run_dir, t0)


def main() -> None:
    """Run the launches and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sites", type=Path, default=REPO / "sites")
    args = parser.parse_args()
    t0 = time.time()
    subprocess.run([sys.executable, "-c", "import orchestrator.cli"], check=True, cwd=REPO)
    cli_import = time.time() - t0
    with tempfile.TemporaryDirectory(prefix="orch-startup-") as tmp:
        runs = [one_launch(args.sites, Path(tmp)) for _ in range(args.runs)]
    print(f"orch launch --sites {args.sites} demo: {args.runs} run(s), seconds after start")
    print(f"(python -c 'import orchestrator.cli' alone: {cli_import:.2f} s)")
    print(f"{'phase':<22} {'median':>7} {'min':>7} {'max':>7}")
    for name in runs[0]:
        values = [r[name] for r in runs if r[name] is not None]
        if not values:
            print(f"{name:<22} {'-':>7}")
            continue
        print(f"{name:<22} {statistics.median(values):7.2f} {min(values):7.2f} {max(values):7.2f}")


if __name__ == "__main__":
    main()
