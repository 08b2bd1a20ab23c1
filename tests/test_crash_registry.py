"""Exactly once, MLflow included: ``kill -9`` of ``orch launch molecular-design`` and ``--resume``.

The campaign is killed once its journal holds finished simulations and a training result whose
version is already in MLflow, then resumed to the end. Across both runs: no simulation has two
successful results, no results file has a line twice, no training task has two MLflow runs or
versions, and no process is left behind. Also: the resumed summary counts only this session's
slot time (replayed results ran in the earlier one).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import pytest
from conftest import assert_no_new_engine_processes, engine_processes, read_results
from mlflow import MlflowClient
from test_cli import launch_cmd

from orchestrator.campaigns.molecular_design import (
    MolecularDesign,
    MolecularDesignOptions,
    _record,
)
from orchestrator.models import Result, Timestamps
from orchestrator.queues import Queues
from orchestrator.registry import ModelRegistry, TrackingServer, read_credentials
from orchestrator.registry.server import read_server_info

MODEL = "molecular-design-ip"
# batch policy: the first training set is the first batch, whatever the timing, so the resumed
# run asks for the very training the killed one logged (and gets it replayed)
OPTIONS = ["policy=batch", "budget=12", "retrain_every=4", "pool_size=60", "epochs=3"]


def processes_using(root: Path) -> list[psutil.Process]:
    """Live processes (but this one) whose command line, directory or open files are in ``root``.

    Catches what the engine markers of ``conftest`` may not: a Parsl interchange renames
    itself (``parsl: HTEX interchange``), but keeps its log in the run directory open.
    """
    mark = str(root)
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if (
                mark in " ".join(proc.info["cmdline"] or ())
                or proc.cwd().startswith(mark)
                or any(f.path.startswith(mark) for f in proc.open_files())
            ):
                found.append(proc)
        except psutil.Error:  # gone meanwhile, or another user's
            continue
    return found


def describe(procs: list[psutil.Process], root: Path) -> list[str]:
    """Each process's command line and the files it holds in ``root`` (which run it was)."""
    shown = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            held = [f.path.removeprefix(str(root)) for f in proc.open_files()]
            shown.append(f"{proc.pid}: {' '.join(proc.cmdline()).strip()[:80]} holding {held}")
    return shown


def journal_rows(run_dir: Path) -> list[tuple[str, str | None, str, int]]:
    """``(task_id, input_key, topic, success)`` of every final result in the journal."""
    path = run_dir / "journal.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute("SELECT task_id, input_key, topic, success FROM results").fetchall()
    except sqlite3.Error:  # created but not yet initialised
        return []
    return [(str(t), k, str(topic), int(ok)) for t, k, topic, ok in rows]


def logged_task_ids(run_dir: Path) -> set[str]:
    """``orch.task_id`` of each version of the campaign's model (asked with the run's secret)."""
    info = read_server_info(run_dir)
    credentials = read_credentials(run_dir)
    if not info or credentials is None:
        return set()
    query = urllib.parse.urlencode({"filter": f"name = '{MODEL}'"})
    request = urllib.request.Request(f"{info['url']}/api/2.0/mlflow/model-versions/search?{query}")
    request.add_header("Authorization", credentials.header())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            found = json.load(response).get("model_versions", [])
    except (urllib.error.URLError, OSError, ValueError):
        return set()
    return {
        tag["value"] for v in found for tag in v.get("tags", []) if tag["key"] == "orch.task_id"
    }


def resume(run_dir: Path, tmp_path: Path, limit: float = 240) -> subprocess.CompletedProcess[str]:
    """``orch launch --resume RUN_DIR`` to the end (output in files: see the first run)."""
    out_file, err_file = tmp_path / "resumed.out", tmp_path / "resumed.err"
    command = [sys.executable, "-m", "orchestrator.cli", "launch", "--resume", str(run_dir)]
    with out_file.open("w") as stdout, err_file.open("w") as stderr:
        proc = subprocess.Popen([*command, "--no-progress"], stdout=stdout, stderr=stderr)
        try:
            code = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # Ctrl-C: orch says where it was
            proc.wait(timeout=60)
            log = (run_dir / "orch.log").read_text()[-4000:]
            pytest.fail(f"the resumed run did not end in {limit} s: {err_file.read_text()}\n{log}")
    return subprocess.CompletedProcess(command, code, out_file.read_text(), err_file.read_text())


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_kill_9_then_resume_logs_each_training_once(tmp_path, monkeypatch):
    before = {p.pid for p in engine_processes()}
    run_dir = tmp_path / "run"
    options = [f"-o{o}" for o in OPTIONS]
    try:
        # files, not pipes: a process orch leaves behind would hold a pipe open
        out_file, err_file = tmp_path / "first.out", tmp_path / "first.err"
        with out_file.open("w") as stdout, err_file.open("w") as stderr:
            first = subprocess.Popen(
                launch_cmd("molecular-design", run_dir, "--no-progress", *options),
                stdout=stdout,
                stderr=stderr,
            )
        try:
            deadline = time.monotonic() + 200
            while True:  # poll the journal (read-only), then MLflow, until the kill point
                rows = journal_rows(run_dir)
                sims = [r for r in rows if r[2] == "simulate" and r[3]]
                trains = {r[0] for r in rows if r[2] == "train" and r[3]}
                logged = logged_task_ids(run_dir) & trains if sims and trains else set()
                if logged:
                    break
                assert first.poll() is None, f"orch ended first: {err_file.read_text()}"
                assert time.monotonic() < deadline, "no training logged to MLflow in time"
                time.sleep(0.05)  # polling interval
            killed_at = (len(sims), len(trains))
            first.send_signal(signal.SIGKILL)  # the orch process only, as `kill -9 PID`
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        resumed = resume(run_dir, tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "replayed from the journal" in resumed.stdout

        # no simulation succeeded twice, in the journal or in the results file
        rows = journal_rows(run_dir)
        ok_keys = Counter(k for _, k, topic, ok in rows if topic == "simulate" and ok)
        assert ok_keys and max(ok_keys.values()) == 1, ok_keys.most_common(3)
        sims = read_results(run_dir, "simulate")
        ok_inputs = Counter(r["args"][0] for r in sims if r["success"])
        assert len(ok_inputs) >= 12 and max(ok_inputs.values()) == 1, ok_inputs.most_common(3)
        # no line twice in any results file
        for path in sorted((run_dir / "results").glob("*.jsonl")):
            lines = path.read_text().splitlines()
            assert len(lines) == len(set(lines)), path.name
            ids = Counter(json.loads(line)["task_id"] for line in lines)
            assert max(ids.values()) == 1, (path.name, ids.most_common(3))

        # one MLflow run and one version per training task: the replayed one was not logged again
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["phases"]["training (gpu)"]["replayed"] >= 1, summary["phases"]
        journaled_trains = {t for t, _, topic, ok in rows if topic == "train" and ok}
        with TrackingServer(run_dir) as server:
            registry = ModelRegistry(server, MODEL)
            versions = registry.versions()
            assert server.credentials is not None
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.credentials.username)
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.credentials.password)
            client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
            experiment = client.get_experiment_by_name(MODEL)
            assert experiment is not None
            runs = client.search_runs([experiment.experiment_id])
        version_tasks = Counter(v.tags["orch.task_id"] for v in versions)
        run_tasks = Counter(r.data.tags["orch.task_id"] for r in runs)
        assert max(version_tasks.values()) == 1, version_tasks
        assert max(run_tasks.values()) == 1, run_tasks
        assert set(version_tasks) == set(run_tasks) <= journaled_trains
        assert logged <= set(version_tasks)  # what the killed run logged is still there, once
        assert [v["version"] for v in summary["versions"]] == [v.version for v in versions]

        # the summary counts slot time of this session only (replayed results used none)
        share = summary["phases"]["simulation (cpu)"]["seconds"] / (
            summary["wall_seconds"] * summary["cpu_slots"]
        )
        assert share <= 1.0, summary["phases"]
        # the secret shows in neither run's output
        password = server.credentials.password
        shown = out_file.read_text() + err_file.read_text() + resumed.stdout + resumed.stderr
        assert password not in shown

        assert_no_new_engine_processes(before, grace=5)
        _, alive = psutil.wait_procs(processes_using(tmp_path), timeout=5)
        assert not alive, f"processes of either run left over: {describe(alive, tmp_path)}"
        print(
            f"crash+resume: killed at {killed_at[0]} simulation(s) and {killed_at[1]} training(s) "
            f"done; resumed: {sum(ok_keys.values())} simulation(s), max runs per input "
            f"{max(ok_keys.values())}; {len(versions)} version(s) and {len(runs)} run(s) for "
            f"{len(version_tasks)} training task(s); simulation share {share:.0%}"
        )
    finally:  # whatever this test left, so that later tests start clean
        leftover = [p for p in engine_processes() if p.pid not in before]
        for proc in leftover + processes_using(tmp_path):
            with contextlib.suppress(psutil.Error):
                proc.kill()


def sim_result(started: float, seconds: float, replayed: bool, index: int) -> Result:
    stamps = Timestamps(
        created=started - 0.1,
        sent=started - 0.05,
        started=started,
        finished=started + seconds,
        returned=started + seconds + 0.01,
        received=started + seconds + 0.02,
    )
    value = type("IP", (), {"ip_ev": 9.0 + index})()
    return Result(
        task_id=f"sim-{index}",
        method="xtb_ip_ea",
        topic="simulate",
        args=(f"C{'C' * index}",),
        value=value,
        success=True,
        site="local-cpu",
        replayed=replayed,
        timestamps=stamps,
    )


def test_resumed_summary_counts_only_this_sessions_slot_time(tmp_path):
    options = MolecularDesignOptions(pool_size=50, cpu_slots=2, gpu_slots=1, plots=False)
    thinker = MolecularDesign(Queues(["simulate", "train", "infer"]), options)
    now = time.time()
    thinker.started, thinker.ended = now, now + 10.0
    # 6 results replayed from an earlier session (30 s of slot time there), 2 run now (8 s)
    earlier = [sim_result(now - 3600 + 5 * i, 5.0, True, i) for i in range(6)]
    fresh = [sim_result(now + 1.0, 4.0, False, 6), sim_result(now + 2.0, 4.0, False, 7)]
    for result in earlier + fresh:
        thinker.records.append(_record(result, result.value.ip_ev))
        thinker.values[str(result.args[0])] = result.value.ip_ev

    data = thinker.summary_data()
    phase = data["phases"]["simulation (cpu)"]
    assert (phase["tasks"], phase["seconds"], phase["replayed"]) == (2, 8.0, 6)
    assert data["simulations"]["ok"] == 8  # replayed values are still found values
    text = thinker.summary()
    row = next(line for line in text.splitlines() if "simulation (cpu)" in line)
    assert "2 (+6 replayed)" in row and "40% of 2 slots" in row, row
