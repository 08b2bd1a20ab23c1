"""Crash and resume: SIGKILL ``orch launch`` at a random point, ``--resume``, compare.

Also: Ctrl-C waits for running tasks and journals the rest; the journal and results files
are repaired and reused as documented.
"""

from __future__ import annotations

import pickle
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from conftest import TAG_ENV, engine_processes, read_results
from durable_campaign import expected_outcome

from orchestrator.dispatch.journal import Journal
from orchestrator.lifeline import read_record, tagged_processes

TESTS = Path(__file__).parent
CAMPAIGN = f"{TESTS / 'durable_campaign.py'}:ChainCampaign"
ROUNDS, BATCH = 10, 20  # 200 tasks

SITE = """\
name: chain-cpu
kind: cpu
backend: local
capacity: 2
"""


@pytest.fixture
def sites_dir(tmp_path) -> Path:
    folder = tmp_path / "sites"
    folder.mkdir()
    (folder / "chain-cpu.yaml").write_text(SITE)
    return folder


def orch(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", "launch", *args]


def calls(calls_dir: Path) -> Counter[tuple[int, int]]:
    """Every call of the task function, as seen by the workers."""
    seen: Counter[tuple[int, int]] = Counter()
    for log in calls_dir.glob("calls-*.log"):
        for line in log.read_text().splitlines():
            if line.strip():
                value, index = map(int, line.split())
                seen[(value, index)] += 1
    return seen


def wait_while_running(proc: subprocess.Popen, done: Callable[[], bool], limit: float = 120):
    """Poll ``done`` until it holds; fail if orch exits first or ``limit`` seconds pass."""
    deadline = time.monotonic() + limit
    while not done():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "orch made no progress"
        time.sleep(0.01)


def kill_orch(proc: subprocess.Popen, run_dir: Path) -> float:
    """SIGKILL orch alone; its watchdog must end everything it started.

    Returns:
        Seconds from the kill until no process of the campaign is left.
    """
    tag = read_record(run_dir)["tag"]
    assert tagged_processes(tag), "orch had started no process yet"
    killed = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = killed + 30
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        psutil.wait_procs(left, timeout=0.5)
    assert not left, [" ".join(p.cmdline())[:120] for p in left]
    return time.monotonic() - killed


def assert_nothing_left(tmp_path: Path) -> None:
    """No process that orch started for this test (tagged, or a descendant) is running."""
    alive = [p for p in engine_processes() if _in(p, tmp_path)]
    _, alive = psutil.wait_procs(alive, timeout=15)
    assert not alive, [" ".join(p.cmdline())[:120] for p in alive]


def _in(proc: psutil.Process, folder: Path) -> bool:
    """Whether ``proc`` belongs to a run under ``folder`` (its record names the tag)."""
    tags = {r["tag"] for r in map(read_record, folder.glob("*")) if r}
    try:
        return proc.environ().get(TAG_ENV) in tags or str(folder) in " ".join(proc.cmdline())
    except psutil.Error:
        return False


def journaled_inputs(run_dir: Path) -> list[tuple[int, int]]:
    """Inputs of the results the journal holds (what was completed before the crash).

    Opening the journal first reads back the results logged but not yet in the database when
    orch was killed (as ``--resume`` does).
    """
    Journal(run_dir).close()
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        rows = db.execute("SELECT result FROM results WHERE memo = 1").fetchall()
    return [tuple(pickle.loads(blob).args[:2]) for (blob,) in rows]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_random_point_then_resume(tmp_path, sites_dir, seed):
    run_dir = tmp_path / "run"
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    opts = ["-o", f"rounds={ROUNDS}", "-o", f"batch={BATCH}", "-o", f"calls_dir={calls_dir}"]
    kill_after = random.Random(seed).randint(1, ROUNDS * BATCH - 10)

    proc = subprocess.Popen(
        orch("--sites", str(sites_dir), CAMPAIGN, "--run-dir", str(run_dir), "--no-progress")
        + opts,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_while_running(proc, lambda: sum(calls(calls_dir).values()) >= kill_after, 240)
    finally:
        orphan_s = kill_orch(proc, run_dir)
    print(f"seed {seed}: every process orch started ended {orphan_s:.2f} s after its kill -9")
    completed_before = journaled_inputs(run_dir)
    calls_before = calls(calls_dir)

    resumed = subprocess.run(
        orch("--resume", str(run_dir), "--no-progress"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr

    # Same outcome as an uninterrupted run (computed without orch)
    assert f"outcome: {expected_outcome(ROUNDS, BATCH)};" in resumed.stdout
    # Every task completed exactly once in the results
    records = read_results(run_dir, "step")
    assert len(records) == ROUNDS * BATCH
    assert len({r["task_id"] for r in records}) == len(records)
    inputs = Counter(tuple(r["args"][:2]) for r in records)
    assert len(inputs) == ROUNDS * BATCH and all(r["success"] for r in records)
    # No completed task ran again: its worker-side call count did not change on resume
    after = calls(calls_dir)
    assert completed_before, "the kill came before any task completed"
    for key in completed_before:
        assert after[key] == calls_before[key] == 1, key
    # Tasks not completed before the crash ran (again) after it
    assert set(after) == set(inputs)
    replayed = int(resumed.stdout.split("replayed: ")[1].split()[0])
    assert replayed == len(completed_before)
    assert_nothing_left(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_waits_for_running_tasks_then_resume_finishes(tmp_path, sites_dir):
    # At most 2 tasks at the site: the others wait in orch and are interrupted at Ctrl-C
    (sites_dir / "chain-cpu.yaml").write_text(SITE + "max_in_flight: 2\n")
    run_dir = tmp_path / "run"
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    opts = ["-o", "rounds=3", "-o", "batch=6", "-o", f"calls_dir={calls_dir}", "-o", "pause=0.5"]
    proc = subprocess.Popen(
        orch("--sites", str(sites_dir), CAMPAIGN, "--run-dir", str(run_dir), "--no-progress")
        + opts
        + ["--grace", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_while_running(proc, lambda: sum(calls(calls_dir).values()) >= 3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "waiting up to 60 s for" in err and "--resume" in err
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        states = Counter(s for (s,) in db.execute("SELECT state FROM events"))
    # The tasks running at Ctrl-C finished; the ones held in orch were interrupted
    assert states["done"] >= 3 and states["interrupted"] >= 1
    assert states["done"] + states["interrupted"] == states["created"]
    resumed = subprocess.run(
        orch("--resume", str(run_dir), "--no-progress"), capture_output=True, text=True, timeout=200
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"outcome: {expected_outcome(3, 6)};" in resumed.stdout
    assert len(read_results(run_dir, "step")) == 18
    assert all(n == 1 for key, n in calls(calls_dir).items())
    assert_nothing_left(tmp_path)


def kill_site_workers(run_dir: Path, site: str) -> int:
    """SIGKILL the worker pool (manager and workers) of one local site; how many died."""
    marker = str(run_dir / "sites" / site) + "/"
    victims = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or ())
        if "process_worker_pool" in cmd and marker in cmd:
            victims.extend([p, *p.children(recursive=True)])
    for p in victims:
        p.kill()
    return len(victims)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_killed_site_workers_lose_no_task(tmp_path):
    import threading

    from durable_campaign import ChainOptions

    from orchestrator.config.sites import SiteConfig
    from orchestrator.runner import load_campaign, run_campaign

    cls, extra = load_campaign(CAMPAIGN)
    configs = [
        SiteConfig(name=name, kind="cpu", backend="local", capacity=2) for name in ("a", "b")
    ]
    run_dir = tmp_path / "run"
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    options = ChainOptions(rounds=6, batch=12, calls_dir=str(calls_dir), pause=0.2)
    done: dict[str, object] = {}
    runner = threading.Thread(
        target=lambda: done.update(summary=run_campaign(cls, configs, run_dir, options, extra))
    )
    runner.start()
    deadline = time.monotonic() + 120
    while sum(calls(calls_dir).values()) < 20:
        assert runner.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    assert kill_site_workers(run_dir, "a") >= 1
    runner.join(timeout=240)
    assert not runner.is_alive()
    summary = done["summary"]
    assert f"outcome: {expected_outcome(6, 12)};" in summary.summary
    records = read_results(run_dir, "step")
    assert len(records) == 72 and all(r["success"] for r in records)
    assert len({tuple(r["args"][:2]) for r in records}) == 72
    moved = [r for r in records if r["moves"]]
    assert moved, "no task was running on the killed site"
    for r in moved:
        assert r["moves"][-1]["site"] == "a" and r["moves"][-1]["reason"] == "site_failure"
    assert summary.per_site["a"]["moved"] == len(moved)
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        downs = db.execute("SELECT site, detail FROM events WHERE state = 'site_down'").fetchall()
    assert downs and downs[0][0] == "a" and "workers were lost" in downs[0][1]
    assert_nothing_left(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_local_site_restarts_its_engine_after_losing_workers(tmp_path):
    from durable_campaign import step

    from orchestrator.config.sites import SiteConfig
    from orchestrator.sites.local import LocalSite

    config = SiteConfig(name="r", kind="cpu", backend="local", capacity=1)
    site = LocalSite(config, tmp_path, extra_paths=[str(TESTS)])
    downs: list[str] = []
    site.on_down(lambda s, reason: downs.append(reason))
    site.start()
    try:
        future = site.submit(step, (1, 1, str(tmp_path), 5.0), {})
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("calls-*.log")):  # the task is running
            assert not future.done(), site.outcome(future)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert kill_site_workers(tmp_path, "r") >= 1
        lost = site.outcome(future)  # waits for the engine to notice
        assert not lost.ok and lost.failure["where"] == "site"
        # Down by the engine's own report, or by the health check the dispatcher runs every
        # second (the interchange drops the dead pool after 3 s without a heartbeat)
        while not site.is_down and time.monotonic() < deadline:
            site.health_check()
            time.sleep(0.2)
        assert site.is_down and downs and "workers were lost" in downs[0]
        assert site.try_revive() is True and not site.is_down
        again = site.outcome(site.submit(step, (2, 2, str(tmp_path), 0.0), {}))
        assert again.ok and again.value == (2 * 31 + 4 + 7)
    finally:
        site.shutdown()
    assert_nothing_left(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_second_ctrl_c_stops_at_once_and_journals_running_tasks(tmp_path, sites_dir):
    run_dir = tmp_path / "run"
    calls_dir = tmp_path / "calls"
    calls_dir.mkdir()
    opts = ["-o", "rounds=1", "-o", "batch=4", "-o", f"calls_dir={calls_dir}", "-o", "pause=120"]
    proc = subprocess.Popen(
        orch("--sites", str(sites_dir), CAMPAIGN, "--run-dir", str(run_dir), "--no-progress")
        + opts
        + ["--grace", "600"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # both workers busy with 120 s tasks
    wait_while_running(proc, lambda: sum(calls(calls_dir).values()) >= 2)
    proc.send_signal(signal.SIGINT)
    log = run_dir / "orch.log"
    wait_while_running(proc, lambda: "stopping: waiting up to 600 s" in log.read_text())
    proc.send_signal(signal.SIGINT)  # do not wait for the 120 s tasks
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "stopping now" in err and "4 task(s) interrupted" in err
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        states = Counter(s for (s,) in db.execute("SELECT state FROM events"))
    assert states["interrupted"] == 4 and states["done"] == 0
    assert_nothing_left(tmp_path)
