"""``read_status`` aggregates in SQL; here it is checked against a row-by-row reading.

A journal with failures of several reasons, retries, replays, sites going down and up and
drained and undrained, and unfinished tasks in several states is read both ways.
"""

from __future__ import annotations

import random
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.dispatch.journal import Journal
from orchestrator.models import FailureInfo, Result, Timestamps
from orchestrator.observe.status import UNFINISHED_LISTED, read_status

SITES = ("a", "b", "c")
METHODS = ("simulate", "train", "alpha")
REASONS = ("timeout", "site_failure", "cancelled", "bad_input", "not_converged")


def write_journal(run_dir: Path, seed: int) -> None:
    """A running campaign's journal, made up from ``seed``."""
    rng = random.Random(seed)
    journal = Journal(run_dir)
    journal.set_meta(
        {
            "campaign": "made_up",
            "started": time.time(),
            "site_info": [
                {"name": s, "kind": "cpu", "backend": "local", "capacity": 2} for s in SITES[:2]
            ],
        }
    )
    now = time.time()
    for i in range(300):
        task_id = f"task-{i:04d}"
        method = rng.choice(METHODS)
        journal.created(task_id, method, "default", None, now + rng.random())
        journal.event(task_id, "waiting")
        if rng.random() < 0.1:
            journal.event(task_id, "replayed")
        site = rng.choice(SITES)
        if rng.random() < 0.6:
            journal.event(task_id, "sent", site)
            if rng.random() < 0.2:
                journal.event(task_id, "retried", rng.choice((*SITES, None)), "site_failure")
            ok = rng.random() < 0.6
            started = rng.choice([None, 0.0, now - rng.random()])
            ended = rng.choice([None, 0.0, (started or now) + rng.random(), (started or now) - 1])
            failure = None
            if not ok:
                failure = FailureInfo(
                    exception_type=f"E{rng.randint(0, 2)}",
                    message="boom",
                    where=rng.choice(["task", "site"]),
                    reason=rng.choice((None, *REASONS)),
                )
            result = Result(
                task_id=task_id,
                method=method,
                topic="default",
                success=ok,
                failure_info=failure,
                site=site,
                timestamps=Timestamps(created=now, started=started, finished=ended),
            )
            journal.finished(result, None)
            journal.attempt(task_id, 1, method, site, (None, started, ended, None), ok)
        else:
            if rng.random() < 0.5:
                journal.event(task_id, "sent", site)
            if rng.random() < 0.4:
                journal.event(task_id, "retried", rng.choice((*SITES, None)), "timeout")
        if rng.random() < 0.08:
            what = rng.choice(["site_down", "site_up", "drained", "undrained"])
            journal.event("-", what, rng.choice(SITES), f"because {i}")
    journal.flush()
    journal.live(
        {
            "state": "running",
            "time": time.time(),
            "pid": 1,
            "sites": {s: {"kind": "cpu", "queued": 0, "running": 1} for s in SITES},
            "waiting": {"cpu": 2},
        }
    )
    journal.close()


def reference(run_dir: Path) -> dict[str, Any]:
    """What the status should say, from every row read one by one."""
    db = sqlite3.connect(run_dir / "journal.sqlite")
    moved: dict[str, int] = {}
    replayed = 0
    up: dict[str, tuple[str, str | None]] = {}
    drained: dict[str, bool] = {}
    newest: dict[str, tuple[str, str | None]] = {}
    for task_id, what, site, detail in db.execute(
        "SELECT task_id, state, site, detail FROM events ORDER BY seq"
    ):
        newest[task_id] = (what, site)
        if what == "retried" and site is not None:
            moved[site] = moved.get(site, 0) + 1
        elif what == "replayed":
            replayed += 1
        elif what in ("site_down", "site_up"):
            up[site] = ("down", detail) if what == "site_down" else ("up", None)
        elif what in ("drained", "undrained"):
            drained[site] = what == "drained"
    methods: dict[str, dict[str, Any]] = {}
    spans: dict[str, list[float]] = {}
    for method, success, reason, started, ended in db.execute(
        "SELECT method, success, reason, started, ended FROM results ORDER BY rowid"
    ):
        m = methods.setdefault(method, {"done": 0, "failed": 0, "failures": {}})
        if success:
            m["done"] += 1
        else:
            m["failed"] += 1
            m["failures"][reason or "failed"] = m["failures"].get(reason or "failed", 0) + 1
        if started and ended and ended >= started:
            spans.setdefault(method, []).append(ended - started)
    for method, values in spans.items():
        values.sort()
        methods[method]["runs_timed"] = len(values)
        methods[method]["median_s"] = statistics.median(values)
        methods[method]["p95_s"] = statistics.quantiles(values, n=100, method="inclusive")[94]
    finished = {task_id for (task_id,) in db.execute("SELECT task_id FROM results")}
    open_tasks = sorted(
        (created, task_id, method)
        for task_id, method, created in db.execute("SELECT task_id, method, created FROM tasks")
        if task_id not in finished
    )[:UNFINISHED_LISTED]
    unfinished = [
        {
            "task_id": task_id,
            "method": method,
            "created": created,
            "state": newest[task_id][0],
            "site": newest[task_id][1],
        }
        for created, task_id, method in open_tasks
    ]
    db.close()
    sites = {
        name: {
            "state": "down"
            if up.get(name, ("up",))[0] == "down"
            else "drained"
            if drained.get(name)
            else "up",
            "why": up.get(name, ("up", None))[1],
            "moved": moved.get(name, 0),
        }
        for name in SITES
    }
    return {"sites": sites, "methods": methods, "replayed": replayed, "unfinished": unfinished}


@pytest.mark.parametrize("seed", range(4))
def test_status_matches_a_row_by_row_reading(tmp_path, seed):
    write_journal(tmp_path, seed)
    want = reference(tmp_path)
    got = read_status(tmp_path)
    assert got["state"] == "running"
    for site in got["sites"]:
        assert {k: site[k] for k in ("state", "why", "moved")} == want["sites"][site["name"]]
    assert got["totals"]["replayed"] == want["replayed"]
    for m in got["methods"]:
        expected = want["methods"][m["method"]]
        assert (m["done"], m["failed"]) == (expected["done"], expected["failed"])
        assert list(m["failures"].items()) == list(expected["failures"].items())  # same order
        for key in ("runs_timed", "median_s", "p95_s"):
            assert m[key] == expected.get(key, 0 if key == "runs_timed" else None), key
    assert got["unfinished_tasks"] == want["unfinished"]
    # the journal exercises every path
    assert {s["state"] for s in got["sites"]} != {"up"} and got["totals"]["replayed"]
    assert any(m["failures"] for m in got["methods"]) and got["unfinished_tasks"]
