"""Watching and steering a running campaign on the real local sites: orch status, cancel,
drain/undrain, halt then --resume, and who may control a run.

Each test launches ``orch launch`` (a real process with real HTEX engines) on the campaign in
``control_campaign.py`` and acts on it from other ``orch`` processes, as a user would from
another terminal. Waits poll an observable condition (a file, the journal) up to a deadline.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
CAMPAIGN = f"{HERE / 'control_campaign.py'}:ControlCampaign"


def site_yaml(name: str, capacity: int, max_in_flight: int | None = None) -> str:
    text = f"name: {name}\nkind: cpu\nbackend: local\ncapacity: {capacity}\n"
    return text + (f"max_in_flight: {max_in_flight}\n" if max_in_flight else "")


def make_sites(folder: Path, *sites: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(sites):
        (folder / f"site-{i}.yaml").write_text(text)
    return folder


def orch(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator.cli", *args]


def launch_args(sites: Path, run_dir: Path, pid_dir: Path, *options: str) -> list[str]:
    """``orch launch`` arguments for the control campaign with ``key=value`` options."""
    args = ["launch", CAMPAIGN, "--sites", str(sites), "--run-dir", str(run_dir)]
    for option in (f"pid_dir={pid_dir}", *options):
        args += ["-o", option]
    return [*args, "--no-progress"]


def launch(sites: Path, run_dir: Path, pid_dir: Path, *options: str) -> subprocess.Popen:
    pid_dir.mkdir(parents=True, exist_ok=True)
    args = launch_args(sites, run_dir, pid_dir, *options)
    return subprocess.Popen(orch(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(what: str, check: Callable[[], Any], proc: subprocess.Popen, limit: float = 90) -> Any:
    """Poll ``check`` until it returns something true; fail if orch exits or time runs out."""
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"orch exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {limit} s")
        time.sleep(0.1)


def run_orch(*args: str, user: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(orch(*args), capture_output=True, text=True, timeout=60, user=user)


def status(run_dir: Path) -> dict:
    done = run_orch("status", str(run_dir), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def query(run_dir: Path, sql: str, *params: Any) -> list[tuple]:
    db = sqlite3.connect(f"file:{run_dir / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def check_counts_equal_journal(run_dir: Path, current: dict) -> None:
    """Every count ``orch status`` shows equals what SQL on the journal gives."""
    for site in current["sites"]:
        ok = query(run_dir, "SELECT COUNT(*) FROM attempts WHERE site=? AND ok=1", site["name"])
        bad = query(run_dir, "SELECT COUNT(*) FROM attempts WHERE site=? AND ok=0", site["name"])
        assert (site["done"], site["failed"]) == (ok[0][0], bad[0][0])
    for m in current["methods"]:
        rows = query(
            run_dir,
            "SELECT SUM(success), SUM(1 - success) FROM results WHERE method=?",
            m["method"],
        )
        tasks = query(run_dir, "SELECT COUNT(*) FROM tasks WHERE method=?", m["method"])
        assert (m["done"], m["failed"]) == tuple(v or 0 for v in rows[0])
        assert m["tasks"] == tasks[0][0]


def test_status_and_cancel_of_running_queued_and_waiting_tasks(tmp_path):
    # one worker, two tasks at most at the site: nap-0 runs, nap-1 is queued at the site,
    # nap-2 waits in orch
    sites = make_sites(tmp_path / "sites", site_yaml("solo", 1, max_in_flight=2))
    run_dir, pids, go = tmp_path / "run", tmp_path / "pids", tmp_path / "go"
    proc = launch(sites, run_dir, pids, "naps=3", "quick=8", f"wait_file={go}")
    try:
        first = wait_for("nap-0 running", lambda: read_json(pids / "nap-0.json"), proc)
        ids = wait_for("task ids", lambda: read_json(pids / "task_ids.json"), proc)

        def placed() -> dict | None:
            s = status(run_dir)
            states = {t["task_id"]: t["state"] for t in s["unfinished_tasks"]}
            want = (states.get(ids[1]), states.get(ids[2]))
            return s if want == ("sent", "waiting") else None

        during = wait_for("nap-1 queued and nap-2 waiting", placed, proc)
        solo = during["sites"][0]
        assert (solo["running"], solo["queued"], solo["waiting"]) == (1, 1, 1)
        assert during["state"] == "running" and during["totals"]["tasks"] == 3
        check_counts_equal_journal(run_dir, during)

        queued = run_orch("cancel", str(run_dir), ids[1], ids[2])
        assert queued.returncode == 0, queued.stderr
        assert "2 task(s) cancelled" in queued.stdout
        assert "cancelled before it was sent to a site" in queued.stdout  # nap-2
        assert "not started on a worker yet" in queued.stdout  # nap-1, at the site
        child = psutil.Process(first["child"])
        assert child.is_running() and psutil.pid_exists(first["worker"])

        running = run_orch("cancel", str(run_dir), ids[0])
        assert running.returncode == 0, running.stderr
        assert f"SIGUSR2 to its worker (pid {first['worker']})" in running.stdout
        child.wait(timeout=30)  # the task's own process is gone...
        assert not psutil.pid_exists(first["child"]) or child.status() == psutil.STATUS_ZOMBIE
        assert psutil.Process(first["worker"]).is_running()  # ...and its worker lives on

        again = run_orch("cancel", str(run_dir), ids[0])
        assert again.returncode == 2 and "not running or waiting" in again.stderr
        go.touch()  # the campaign goes on: its quick tasks run on the same worker
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, err
    outcomes = read_json(run_dir / "outcomes.json")["outcomes"]
    assert [outcomes[i]["reason"] for i in ids] == ["cancelled"] * 3
    quick = [o for o in outcomes.values() if o["method"] == "quick"]
    assert len(quick) == 8 and all(o["success"] for o in quick)
    assert not (pids / "nap-1.json").exists()  # the worker skipped the cancelled queued task
    after = status(run_dir)
    assert after["state"] == "ended" and after["totals"]["cancelled"] == 3
    check_counts_equal_journal(run_dir, after)
    me = psutil.Process().username()
    actions = [(c["action"], c["user"], c["outcome"][:17]) for c in after["control"]]
    assert actions == [
        ("cancel", me, "2 task(s) cancell"),
        ("cancel", me, "1 task(s) cancell"),
        ("cancel", me, "no task cancelled"),  # refused actions are journaled too
    ]
    reasons = query(run_dir, "SELECT reason, COUNT(*) FROM results GROUP BY reason")
    assert dict(reasons) == {None: 8, "cancelled": 3}
    text = run_orch("status", str(run_dir))
    assert text.returncode == 0 and "cancelled 3" in text.stdout and "ended" in text.stdout


def test_drain_and_undrain_a_site(tmp_path):
    sites = make_sites(tmp_path / "sites", site_yaml("cpu-a", 1), site_yaml("cpu-b", 1))
    run_dir, pids = tmp_path / "run", tmp_path / "pids"
    go, go2 = tmp_path / "go", tmp_path / "go2"
    proc = launch(
        sites, run_dir, pids, "naps=0", "quick=10", "quick_after=10", "pause=0.2",
        f"wait_file={go}", f"wait_file2={go2}",
    )  # fmt: skip
    try:
        wait_for("the control socket", (run_dir / "control.sock").exists, proc)
        assert status(run_dir)["state"] == "running"
        drained = run_orch("drain", str(run_dir), "--site", "cpu-b")
        assert drained.returncode == 0 and "site cpu-b drained" in drained.stdout
        assert {s["name"]: s["state"] for s in status(run_dir)["sites"]} == {
            "cpu-a": "up",
            "cpu-b": "drained",
        }
        missing = run_orch("drain", str(run_dir), "--site", "nowhere")
        assert missing.returncode == 2 and "no site 'nowhere'" in missing.stderr
        go.touch()

        def phase_one_done() -> bool:
            data = read_json(run_dir / "outcomes.json") or {"outcomes": {}}
            return sum(o["phase"] == 1 for o in data["outcomes"].values()) == 10

        wait_for("the first 10 quick tasks", phase_one_done, proc)
        undrained = run_orch("undrain", str(run_dir), "--site", "cpu-b")
        assert undrained.returncode == 0 and "takes tasks again" in undrained.stdout
        go2.touch()
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, err
    data = read_json(run_dir / "outcomes.json")
    by_phase = {1: set(), 2: set()}
    for o in data["outcomes"].values():
        by_phase[o["phase"]].add(o["site"])
    assert by_phase[1] == {"cpu-a"}  # nothing new went to the drained site
    assert "cpu-b" in by_phase[2]  # and it took tasks again once undrained
    assert data["capacity_seen"] == [["cpu", 1], ["cpu", 2]]
    assert data["context_passed"] is True
    events = query(run_dir, "SELECT state, site FROM events WHERE state LIKE '%drained'")
    assert events == [("drained", "cpu-b"), ("undrained", "cpu-b")]
    after = status(run_dir)
    assert [c["action"] for c in after["control"]] == ["drain", "undrain"]
    check_counts_equal_journal(run_dir, after)


def test_halt_then_resume(tmp_path):
    sites = make_sites(tmp_path / "sites", site_yaml("solo", 1))
    run_dir, pids = tmp_path / "run", tmp_path / "pids"
    proc = launch(sites, run_dir, pids, "naps=0", "quick=40", "pause=0.25")
    try:

        def some_done() -> bool:
            data = read_json(run_dir / "outcomes.json") or {"outcomes": {}}
            return len(data["outcomes"]) >= 4

        wait_for("a few results", some_done, proc)
        halted = run_orch("halt", str(run_dir))
        assert halted.returncode == 0 and "halting" in halted.stdout
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, err
    assert "halted by" in err and f"orch launch --resume {run_dir}" in err
    assert not (run_dir / "control.sock").exists()
    stopped = status(run_dir)
    assert stopped["state"] == "halted" and [c["action"] for c in stopped["control"]] == ["halt"]
    done_before = stopped["totals"]["done"]
    assert 4 <= done_before < 40
    late = run_orch("halt", str(run_dir))
    assert late.returncode == 2 and "no campaign is running there" in late.stderr

    resumed = subprocess.run(
        orch("launch", "--resume", str(run_dir), "--no-progress"),
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert resumed.returncode == 0, resumed.stderr
    outcomes = read_json(run_dir / "outcomes.json")["outcomes"]
    assert len(outcomes) == 40 and all(o["success"] for o in outcomes.values())
    assert sum(o["replayed"] for o in outcomes.values()) == done_before
    final = status(run_dir)
    assert final["state"] == "ended" and final["totals"]["replayed"] == done_before


def _nobody() -> int:
    import pwd

    return pwd.getpwnam("nobody").pw_uid


def _others_can(path: Path, bits: int) -> bool:
    """Whether other users have ``bits`` on ``path`` and can enter every folder above it."""
    if not path.is_file() or path.stat().st_mode & bits != bits:
        return False
    return all(folder.stat().st_mode & 0o001 for folder in path.parents)


def python_for_others() -> str:
    """A Python interpreter the user ``nobody`` can run (the test's client runs as nobody)."""
    for candidate in (Path(os.path.realpath(sys.executable)), Path("/usr/bin/python3")):
        real = Path(os.path.realpath(candidate))
        control = HERE.parent / "orchestrator" / "control.py"
        if _others_can(real, 0o005) and _others_can(control, 0o004):
            return str(real)
    pytest.skip("no Python interpreter (and orch checkout) that user nobody can run")


# A client as another user: orchestrator.control needs only the standard library
CLIENT = (
    "import sys, pathlib; sys.path.insert(0, sys.argv[2]); "
    "from orchestrator.control import ControlError, request\n"
    "try:\n    r = request(pathlib.Path(sys.argv[1]), 'halt'); print(r.ok, r.message)\n"
    "except ControlError as exc:\n    print('error:', exc); sys.exit(2)"
)


def halt_as(run_dir: Path, nobody: bool) -> subprocess.CompletedProcess:
    """Ask the campaign in ``run_dir`` to halt, as user ``nobody`` or as this user."""
    python = python_for_others() if nobody else sys.executable
    return subprocess.run(
        [python, "-c", CLIENT, str(run_dir), str(HERE.parent)],
        capture_output=True,
        text=True,
        timeout=30,
        user=_nobody() if nobody else None,
        cwd="/",
    )


@pytest.mark.skipif(os.getuid() != 0, reason="acting as another user needs root here")
def test_another_user_is_refused(tmp_path):
    # a run directory others can enter, so what refuses them is the control channel itself
    base = Path(tempfile.mkdtemp(prefix="orch-owner-", dir="/tmp"))
    try:
        base.chmod(0o755)
        sites = make_sites(base / "sites", site_yaml("solo", 1))
        run_dir, pids = base / "run", base / "pids"
        proc = launch(sites, run_dir, pids, "naps=1", "nap_s=120", f"wait_file={base / 'go'}")
        try:
            wait_for("the nap to run", lambda: read_json(pids / "nap-0.json"), proc)
            run_dir.chmod(0o755)
            socket_path = run_dir / "control.sock"
            assert socket_path.stat().st_mode & 0o777 == 0o600
            other = halt_as(run_dir, nobody=True)
            assert other.returncode == 2, other.stderr
            assert "permission denied" in other.stdout and "belongs to user root" in other.stdout
            assert status(run_dir)["state"] == "running"  # nothing happened
            (nap_id,) = read_json(pids / "task_ids.json")
            ok = run_orch("cancel", str(run_dir), nap_id)  # the owner may
            assert ok.returncode == 0, ok.stderr
            (base / "go").touch()  # the campaign ends: its one task came back (cancelled)
            code, _, err = finish(proc)
            assert code == 0, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.getuid() != 0, reason="acting as another user needs root here")
def test_peer_check_refuses_another_user_even_on_an_open_socket(tmp_path):
    """The boundary check itself (SO_PEERCRED): root is not stopped by a socket's mode, and
    a socket left open to all must still refuse other users."""
    from orchestrator.control import ControlServer, Reply

    base = Path(tempfile.mkdtemp(prefix="orch-peer-", dir="/tmp"))
    calls: list[str] = []
    refused: list[tuple[str, str]] = []
    server = ControlServer(
        base,
        lambda request, user: calls.append(user) or Reply(True, "done"),
        on_refused=lambda user, action: refused.append((user, action)),
    ).start()
    try:
        base.chmod(0o755)
        os.chmod(base / "control.sock", 0o666)  # as if someone opened it up
        other = halt_as(base, nobody=True)
        assert other.returncode == 0, other.stderr
        assert other.stdout.startswith("False refused: this run belongs to user root")
        assert calls == [] and refused == [("nobody", "halt")]
        mine = halt_as(base, nobody=False)
        assert mine.stdout.strip() == "True done" and calls == ["root"]
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not (base / "control.sock").exists()


def test_kill_9_then_deleting_the_run_dir_leaves_no_process(tmp_path):
    """The watchdog ends what orch started from what it saw itself, even when the run
    directory (with its process list) is deleted right after orch was killed."""
    sites = make_sites(tmp_path / "sites", site_yaml("solo", 1))
    run_dir, pids = tmp_path / "run", tmp_path / "pids"
    proc = launch(sites, run_dir, pids, "naps=1", "nap_s=120", f"wait_file={tmp_path / 'go'}")
    try:
        nap = wait_for("the nap to run", lambda: read_json(pids / "nap-0.json"), proc)
        family = psutil.Process(proc.pid).children(recursive=True)  # interchange, watchdog...
        known = {p.pid for p in family}
        family += [psutil.Process(nap[k]) for k in ("worker", "child") if nap[k] not in known]
        proc.kill()
        proc.wait()
        shutil.rmtree(run_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    gone, alive = psutil.wait_procs(family, timeout=30)
    left = [f"{p.pid} {p.name()}" for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"left running after kill -9 and rm -r of the run dir: {left}"
