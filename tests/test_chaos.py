"""Chaos soak: 2,000 tasks under injected faults, one ``kill -9`` of orch and a resume.

Every task must complete exactly once, every results line must be unique, and nothing orch
started may be left running.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
from conftest import read_results

from orchestrator.lifeline import read_record, recorded_processes, tagged_processes

TESTS = Path(__file__).parent
CAMPAIGN = f"{TESTS / 'chaos_campaign.py'}:SoakCampaign"
COUNT = 2000
FAULTS = (
    "kill_worker=0.003,kill_pool=0.001,kill_interchange=0.001,stall_worker=0.003,"
    "drop_result=0.003,stall_s=2,seed={seed}"
)
SITE = """\
name: {name}
kind: cpu
backend: local
capacity: 2
"""


def orch(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", "launch", *args]


def finished(run_dir: Path) -> int:
    try:
        with sqlite3.connect(f"file:{run_dir / 'journal.sqlite'}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0


def faults(run_dir: Path) -> Counter[str]:
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        rows = db.execute("SELECT detail FROM events WHERE state = 'fault'").fetchall()
    return Counter(detail.split(":")[0] for (detail,) in rows)


def left_running(run_dir: Path, tag: str) -> list[psutil.Process]:
    return tagged_processes(tag) + recorded_processes(run_dir)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_under_faults_with_a_kill_and_a_resume(tmp_path):
    sites = tmp_path / "sites"
    sites.mkdir()
    for name in ("chaos-a", "chaos-b"):
        (sites / f"{name}.yaml").write_text(SITE.format(name=name))
    run_dir = tmp_path / "run"
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    opts = ["-o", f"count={COUNT}", "-o", f"calls_dir={calls_dir}", "--no-progress"]
    first = subprocess.Popen(
        orch("--sites", str(sites), CAMPAIGN, "--run-dir", str(run_dir))
        + opts
        + ["--inject-faults", FAULTS.format(seed=11)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    started = time.monotonic()
    while finished(run_dir) < COUNT // 3:
        assert first.poll() is None, first.communicate()
        if time.monotonic() - started > 400:  # a hang: keep every thread's stack, then fail
            first.send_signal(signal.SIGUSR1)
            log_file, deadline = run_dir / "orch.log", time.monotonic() + 10
            while "most recent call first" not in log_file.read_text(errors="replace"):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            first.kill()
            first.communicate(timeout=30)
            log = log_file.read_text(errors="replace")
            pytest.fail(f"the soak made no progress; orch's threads:\n{log[-20000:]}")
        time.sleep(0.05)
    tag = read_record(run_dir)["tag"]
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    killed = time.monotonic()
    deadline = killed + 30
    while (left := left_running(run_dir, tag)) and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.5)
    assert not left, [" ".join(p.cmdline())[:100] for p in left]
    orphans_s = time.monotonic() - killed
    before_resume = finished(run_dir)
    faults_first = faults(run_dir)

    resumed = subprocess.run(
        orch("--resume", str(run_dir), "--inject-faults", FAULTS.format(seed=12))
        + ["--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"ok: {COUNT}; failed: 0;" in resumed.stdout, resumed.stdout[-2000:]
    # Exactly once: one results line per task, every line unique, every input once
    lines = (run_dir / "results" / "tick.jsonl").read_text().splitlines()
    assert len(lines) == len(set(lines)) == COUNT
    records = read_results(run_dir, "tick")
    assert len({r["task_id"] for r in records}) == COUNT
    assert sorted(r["args"][0] for r in records) == list(range(COUNT))
    assert all(r["success"] and r["value"] == r["args"][0] ** 2 for r in records)
    # Nothing left running once the resumed run has ended
    tag2 = read_record(run_dir)["tag"]
    stray = left_running(run_dir, tag2) + tagged_processes(tag)
    _, stray = psutil.wait_procs(stray, timeout=5)
    assert not stray, [" ".join(p.cmdline())[:100] for p in stray]
    caused = faults(run_dir)
    calls = Counter()
    for log in calls_dir.glob("calls-*.log"):
        calls.update(int(line) for line in log.read_text().split())
    moved = sum(1 for r in records if r["moves"])
    print(
        f"soak: {COUNT} tasks, killed at {before_resume} finished, orphans gone "
        f"{orphans_s:.2f} s after the kill; faults (both runs) {dict(caused)}, first run "
        f"{dict(faults_first)}; {moved} task(s) moved; {sum(calls.values())} executions "
        f"for {len(calls)} inputs ({sum(1 for c in calls.values() if c > 1)} ran more than "
        f"once: in flight at a fault or the kill); {time.monotonic() - started:.0f} s"
    )
    assert sum(caused.values()) > 0
