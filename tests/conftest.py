"""Shared fixtures: the no-leftover-process guard and a session on both local sites."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import psutil
import pytest

TESTS_DIR = Path(__file__).parent
REPO = TESTS_DIR.parent
ENGINE_MARKERS = (
    "process_worker_pool",
    "interchange.py",
    "globus-compute-endpoint python-exec",
    "mlflow server",  # embedded tracking servers (and their uvicorn child below)
    "mlflow.server",
    "orchestrator.lifeline",  # the watchdog of a campaign
    "parsl: HTEX interchange",  # an interchange renames itself (and so loses its environ)
)
TAG_ENV = "ORCH_CAMPAIGN_TAG"  # orchestrator.lifeline.TAG_ENV: set in every process orch starts


# Tests press Ctrl-C on the processes they start. A shell starts a background job with SIGINT
# ignored, and an ignored signal stays ignored across exec: take it back for our children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

SESSION_TAG = "ORCH_TEST_SESSION"
"""Set in this session's environment: every process a test starts inherits it, orphans too."""
os.environ.setdefault(SESSION_TAG, uuid.uuid4().hex)


def _started_here(proc: psutil.Process) -> bool:
    """Whether this test session started ``proc`` (it, or a parent, carries the session tag).

    A containerized worker runs with a cleaned environment: its runtime parent holds the tag.
    Processes of other test runs on the same machine are not this session's business.
    """
    tag = os.environ[SESSION_TAG]
    try:
        chain = [proc, *proc.parents()]
    except psutil.Error:
        return False
    for member in chain:
        try:
            environ = member.environ()
            if environ.get(SESSION_TAG) == tag:
                return True
        except psutil.Error:  # gone, or another user's
            continue
    return False


def _is_orch_process(proc: psutil.Process) -> bool:
    """Whether ``proc`` is one orch started: tagged by a campaign, an engine or server, or a
    descendant of one (``multiprocessing`` workers say nothing of an engine in their command
    line, and a containerized worker's environment is cleaned)."""
    try:
        chain = [proc, *proc.parents()]
    except psutil.Error:
        return False
    for member in chain:
        if member.pid == os.getpid():
            return False  # pytest itself, and what it started directly, are not orch's
        try:
            if TAG_ENV in member.environ():
                return True
            cmd = " ".join(member.cmdline())
        except psutil.Error:
            continue
        if any(marker in cmd for marker in ENGINE_MARKERS):
            return True
    return False


def engine_processes() -> list[psutil.Process]:
    """Processes orch started in this test session that are alive (see ``_is_orch_process``)."""
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue  # exited, awaiting its parent's wait(): nothing left running
        if proc.pid != os.getpid() and _started_here(proc) and _is_orch_process(proc):
            found.append(proc)
    return found


def _describe(proc: psutil.Process) -> str | None:
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return " ".join(proc.cmdline())[:120]
    except psutil.Error:  # gone meanwhile
        return None


def assert_no_new_engine_processes(before: set[int], grace: float = 15.0) -> None:
    """Fail if engine processes started after ``before`` are still alive after ``grace`` s."""
    new = [p for p in engine_processes() if p.pid not in before]
    _, alive = psutil.wait_procs(new, timeout=grace)
    leftover = [d for d in map(_describe, alive) if d is not None]
    assert not leftover, f"engine processes left over: {leftover}"


@pytest.fixture(scope="session", autouse=True)
def no_leftover_processes():
    """The whole suite must leave no engine process behind."""
    before = {p.pid for p in engine_processes()}
    yield
    assert_no_new_engine_processes(before)


@pytest.fixture(autouse=True)
def sim_root(tmp_path, monkeypatch) -> Path:
    """Simulation work directories land in this test's tmp dir (it starts empty)."""
    root = tmp_path / "sim"
    monkeypatch.setenv("ORCH_SIM_ROOT", str(root))
    return root


def workdirs(root: Path) -> list[Path]:
    """The simulation work directories left under ``root``."""
    return sorted(root.iterdir()) if root.exists() else []


def read_results(run_dir: Path, topic: str) -> list[dict]:
    """The records of ``<run_dir>/results/<topic>.jsonl``."""
    lines = (run_dir / "results" / f"{topic}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]
