"""``orch report``: the HTML report of a run, every number checked against SQL on its journal.

The journals are written with the real :class:`~orchestrator.dispatch.journal.Journal` API, on
a clock the test sets (the journal stamps events with ``time.time()``): a synthetic campaign
on three sites (two CPU, one GPU) with retries, moves, a site outage, a drain, cancellations,
final failures, replayed tasks, control actions and an objective. The page is checked as text
(``data-key`` elements against SQL), then rendered in headless Chromium.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import random
import re
import sqlite3
import statistics
import struct
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from support.browser import HAVE_CHROMIUM, SKIP_REASON, Browser

import orchestrator.dispatch.journal as journal_module
from orchestrator.dispatch.journal import Journal
from orchestrator.exceptions import ConfigError
from orchestrator.models import FailureInfo, Task, Timestamps
from orchestrator.observe import report

T0 = 1_763_700_000.0
SITES = [
    {"name": "cpu-a", "kind": "cpu", "backend": "local", "capacity": 3},
    {"name": "cpu-b", "kind": "cpu", "backend": "globus", "capacity": 2},
    {"name": "gpu", "kind": "gpu", "backend": "local", "capacity": 1},
]
KIND = {s["name"]: s["kind"] for s in SITES}
SECTIONS = [
    "summary",
    "timeline",
    "utilization",
    "reaction",
    "latency",
    "failures",
    "retries",
    "control",
    "models",
    "objective",
]
MODEL = "synthetic-ip"


# -- a synthetic campaign, journaled through the real API ------------------------------------


class Clock:
    """Stands in for the journal module's ``time``: ``time()`` says what the test set."""

    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)


@dataclass
class Worker:
    site: str
    host: str
    pid: int
    free: float = T0


@dataclass
class Run:
    run_dir: Path
    tasks: int
    train_ids: list[str] = field(default_factory=list)


def _workers() -> dict[str, list[Worker]]:
    return {
        s["name"]: [
            Worker(s["name"], f"{s['name']}-node", 4000 + 10 * i) for i in range(s["capacity"])
        ]
        for s in SITES
    }


def build_run(run_dir: Path, n_tasks: int, seed: int = 1, objective: bool = True) -> Run:
    """Journal a synthetic campaign of ``n_tasks`` tasks into ``run_dir``."""
    rng = random.Random(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    clock = Clock()
    actions: list[tuple[float, int, Callable[[Journal], None]]] = []
    order = iter(range(10**9))

    def at(t: float, fn: Callable[[Journal], None]) -> None:
        actions.append((t, next(order), fn))

    workers = _workers()
    gap = 0.4  # seconds between two new tasks
    span = n_tasks * gap
    down = (T0 + 0.3 * span, T0 + 0.38 * span)  # cpu-b unreachable
    drained = (T0 + 0.6 * span, T0 + 0.66 * span)  # cpu-b drained by the user
    run = Run(run_dir, n_tasks)

    def usable(site: str, t: float) -> bool:
        return site != "cpu-b" or not (down[0] <= t < down[1] or drained[0] <= t < drained[1])

    def pick(kind: str, t: float, avoid: str | None = None) -> Worker:
        pool = [
            w
            for name, ws in workers.items()
            if KIND[name] == kind and usable(name, t) and name != avoid
            for w in ws
        ] or [w for name, ws in workers.items() if KIND[name] == kind for w in ws]
        return min(pool, key=lambda w: (w.free, w.site, w.pid))

    for i in range(n_tasks):
        created = T0 + i * gap + rng.uniform(0, 0.05)
        task_id = f"t{i:05d}"
        roll = rng.random()
        method = "simulate" if roll < 0.85 else ("infer" if roll < 0.97 else "train")
        kind = "cpu" if method == "simulate" else "gpu"
        if rng.random() < 0.004:  # replayed from an earlier run: no created, no attempt
            at(created, lambda j, tid=task_id: j.event(tid, "replayed"))
            continue
        at(
            created,
            lambda j, tid=task_id, m=method, c=created: j.created(tid, m, m, None, c),
        )
        task = Task(method=method, topic=method, args=(i,), kwargs={}, task_id=task_id)
        task.created = created
        if rng.random() < 0.005:  # cancelled while waiting in orch
            t = created + 0.5
            at(t, lambda j, tid=task_id: j.event(tid, "waiting"))
            result = task.make_result(
                success=False,
                failure_info=FailureInfo(
                    exception_type="Cancelled",
                    message="cancelled while waiting in orch",
                    reason="cancelled",
                ),
                timestamps=Timestamps(created=created),
            )
            at(t + 0.1, lambda j, tid=task_id: j.control("cancel", tid, "alice", "cancelled"))
            at(t + 0.1, lambda j, r=result: j.finished(r, None))
            continue
        duration = {"simulate": rng.uniform(0.5, 3.5), "infer": rng.uniform(0.3, 1.2)}.get(
            method, rng.uniform(4, 8)
        )
        fate = rng.random()
        plan = ["ok"]
        if fate < 0.03:
            plan = ["timeout", "ok"]
        elif fate < 0.04:
            plan = ["site_failure", "ok"]
        elif fate < 0.06:
            plan = ["nonzero_exit"]
        ready = created + rng.uniform(0.002, 0.02)
        avoid = None
        for attempt, outcome in enumerate(plan, start=1):
            worker = pick(kind, ready, avoid)
            sent = max(ready, worker.free - 0.005)
            site = worker.site
            at(sent, lambda j, tid=task_id, s=site: j.event(tid, "sent", s))
            if outcome == "site_failure":
                started = ended = None
                host, pid = None, None
                returned = sent + rng.uniform(0.3, 0.8)
            else:
                started = sent + rng.uniform(0.005, 0.03)
                ended = started + (duration if outcome != "timeout" else 3.0 * duration)
                returned = ended + rng.uniform(0.002, 0.02)
                host, pid = worker.host, worker.pid
                worker.free = returned
            ok = outcome == "ok"
            reason = None if ok else outcome
            message = None if ok else f"{outcome} on {site} (attempt {attempt})"
            args = (task_id, attempt, method, site, (sent, started, ended, returned), ok)
            kwargs = {"host": host, "pid": pid, "reason": reason, "message": message}
            at(returned, lambda j, a=args, k=kwargs: j.attempt(*a, **k))
            if attempt < len(plan):
                at(returned, lambda j, tid=task_id, s=site, r=reason: j.event(tid, "retried", s, r))
                task.retries += 1
                avoid = site
                ready = returned + 0.01
                continue
            task.site = site
            info = None
            if not ok:
                info = FailureInfo(exception_type="CodeFailed", message=message, reason=reason)
            result = task.make_result(
                value=i if ok else None,
                success=ok,
                failure_info=info,
                worker_host=host,
                worker_pid=pid,
                timestamps=Timestamps(
                    created=created, sent=sent, started=started, finished=ended, returned=returned
                ),
            )
            at(returned, lambda j, r=result: j.finished(r, None))
            received = returned + rng.uniform(0.001, 0.01)
            at(received, lambda j, tid=task_id, s=site: j.event(tid, "received", s))
            if ok and method == "simulate" and objective:
                value = rng.gauss(10.0, 1.0)
                at(received, lambda j, v=value, tid=task_id: j.objective(v, tid))
            if ok and method == "train":
                run.train_ids.append(task_id)
    at(down[0], lambda j: j.event("-", "site_down", "cpu-b", "unreachable: connection refused"))
    at(down[1], lambda j: j.event("-", "site_up", "cpu-b"))
    at(drained[0], lambda j: j.control("drain", "cpu-b", "alice", "drained"))
    at(drained[0], lambda j: j.event("-", "drained", "cpu-b"))
    at(drained[1], lambda j: j.control("undrain", "cpu-b", "alice", "undrained"))
    at(drained[1], lambda j: j.event("-", "undrained", "cpu-b"))
    actions.sort(key=lambda a: (a[0], a[1]))
    end = actions[-1][0] + 0.5
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(journal_module, "time", clock)
        journal = Journal(run_dir)
        meta: dict[str, Any] = {
            "campaign": "synthetic",
            "options": {"budget": n_tasks, "seed": seed},
            "sites": "sites/",
            "started": T0,
            "site_info": SITES,
        }
        if objective:
            meta["objective"] = {"name": "IP (eV)", "goal": "max"}
        journal.set_meta(meta)
        for t, _, action in actions:
            clock.now = t
            action(journal)
        clock.now = end
        journal.control("halt", "", "alice", "halting")
        journal.live(
            {
                "time": end,
                "pid": 1,
                "state": "ended",
                "started": T0,
                "sites": {
                    s["name"]: {**s, "in_flight": 0, "down": None, "drained": False} for s in SITES
                },
                "waiting": {},
                "delayed": 0,
                "capacity": {"cpu": 5, "gpu": 1},
                "progress": {"done": n_tasks, "budget": n_tasks, "text": f"{n_tasks} tasks"},
            }
        )
        journal.close()
    return run


def make_store(run_dir: Path, train_ids: list[str]) -> None:
    """An MLflow store like orch's: versions with metrics, orch tags, lineage counts, an alias."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    import orchestrator.registry  # noqa: F401 - turns MLflow's telemetry off

    db = run_dir / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment(
        MODEL, artifact_location=(run_dir / "mlflow" / "artifacts").as_uri()
    )
    client.create_registered_model(MODEL)
    now = int(T0 * 1000)
    for number, rmse in enumerate((0.52, 0.37, 0.41), start=1):
        task_id = train_ids[(number - 1) % len(train_ids)]
        run = client.create_run(experiment, tags={"orch.task_id": task_id})
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("val_rmse", rmse, now, 0), Metric("seconds", 4.0 + number, now, 0)],
            params=[Param("n_train", str(100 * number)), Param("epochs", "40")],
        )
        client.set_terminated(run_id, "FINISHED")
        client.create_model_version(
            MODEL,
            source=f"runs:/{run_id}/model",
            run_id=run_id,
            tags={
                "orch.task_id": task_id,
                "orch.site": "gpu",
                "orch.round": str(number),
                "orch.lineage_rows": str(25 * number),
            },
        )
    client.set_registered_model_alias(MODEL, "champion", "2")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    run = build_run(tmp_path_factory.mktemp("report") / "run", 400)
    make_store(run.run_dir, run.train_ids)
    return run


# -- reading the page and the journal ---------------------------------------------------------


class _Keys(HTMLParser):
    """Text of every element with a ``data-key``; ids of every ``section``."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, str] = {}
        self.sections: list[str] = []
        self._open: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "section" and values.get("id"):
            self.sections.append(str(values["id"]))
        if tag in ("br", "img", "meta", "link", "input", "hr"):
            return
        key = values.get("data-key")
        if key is not None:
            self.keys[key] = ""
        self._open.append(key)

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag not in ("br", "img", "meta", "link", "input", "hr"):
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for key in self._open:
            if key is not None:
                self.keys[key] += data


def page_keys(page: str) -> tuple[dict[str, str], list[str]]:
    parser = _Keys()
    parser.feed(page)
    return {k: v.strip() for k, v in parser.keys.items()}, parser.sections


def sql(run_dir: Path) -> sqlite3.Connection:
    path = run_dir / "journal.sqlite"
    return sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)  # closed: no -wal


def one(db: sqlite3.Connection, query: str, *params: Any) -> Any:
    return db.execute(query, params).fetchone()[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(run_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): digest(p)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in ("report.html", "report.png")
    }


def reaction_times(rows: list[tuple[str, float | None, float | None]]) -> list[float]:
    """Per attempt end, the wait to the next start on its site kind (written independently)."""
    starts: dict[str, list[float]] = defaultdict(list)
    for site, started, _ in rows:
        if started is not None:
            starts[KIND[site]].append(started)
    for values in starts.values():
        values.sort()
    out = []
    for site, _, ended in rows:
        if ended is None:
            continue
        later = starts[KIND[site]]
        i = bisect.bisect_left(later, ended)
        if i < len(later):
            out.append(later[i] - ended)
    return out


def s3(value: float) -> str:
    return f"{value:.3f}"


# -- the tests --------------------------------------------------------------------------------


def test_numbers_on_the_page_equal_sql_on_the_journal(full_run: Run) -> None:
    run_dir = full_run.run_dir
    before = listing(run_dir)
    path = report.write_report(run_dir)
    assert path == run_dir / "report.html"
    assert listing(run_dir) == before  # nothing else in the run directory was written
    page = path.read_text()
    keys, sections = page_keys(page)
    assert sections == SECTIONS
    assert "<script" not in page
    assert {url.split("/")[2] for url in re.findall(r"https?://[^\s\"'<>]+", page)} <= {
        "www.w3.org"
    }
    for name in ("timeline", "utilization", "reaction", "latency", "failures", "retries"):
        assert f'data-plot="{name}"><svg' in page, name
    assert 'data-plot="objective"><svg' in page and 'data-plot="models"><svg' in page

    with closing(sql(run_dir)) as db:
        created = one(db, "SELECT COUNT(*) FROM tasks")
        replayed = one(db, "SELECT COUNT(*) FROM events WHERE state = 'replayed'")
        assert replayed > 0
        assert keys["total"] == str(created + replayed)
        assert keys["replayed"] == str(replayed)
        assert keys["done"] == str(one(db, "SELECT COUNT(*) FROM results WHERE success = 1"))
        assert keys["failed"] == str(one(db, "SELECT COUNT(*) FROM results WHERE success = 0"))
        cancelled = one(db, "SELECT COUNT(*) FROM results WHERE reason = 'cancelled'")
        assert cancelled > 0 and keys["cancelled"] == str(cancelled)
        assert keys["attempts"] == str(one(db, "SELECT COUNT(*) FROM attempts"))
        assert keys["unfinished"] == str(
            one(db, "SELECT COUNT(*) FROM tasks WHERE task_id NOT IN (SELECT task_id FROM results)")
        )
        assert keys["state"] == "ended"
        first = one(db, "SELECT MIN(time) FROM events")
        last = one(
            db,
            "SELECT MAX(t) FROM (SELECT MAX(time) AS t FROM events UNION SELECT MAX(finished) "
            "FROM results UNION SELECT MAX(time) FROM control UNION SELECT MAX(time) FROM "
            "objective UNION SELECT json_extract(value, '$.time') FROM meta WHERE key = 'live')",
        )
        assert keys["duration_s"] == f"{last - first:.1f}"

        # sites: final results, attempts and busy worker-seconds per site
        for site in SITES:
            name = site["name"]
            done = one(db, "SELECT COUNT(*) FROM results WHERE site = ? AND success = 1", name)
            failed = one(db, "SELECT COUNT(*) FROM results WHERE site = ? AND success = 0", name)
            attempts = one(db, "SELECT COUNT(*) FROM attempts WHERE site = ?", name)
            busy = one(
                db,
                "SELECT SUM(ended - started) FROM attempts WHERE site = ? AND started IS NOT NULL",
                name,
            )
            assert keys[f"site.{name}.capacity"] == str(site["capacity"])
            assert keys[f"site.{name}.done"] == str(done)
            assert keys[f"site.{name}.failed"] == str(failed)
            assert keys[f"site.{name}.attempts"] == str(attempts)
            assert keys[f"site.{name}.busy_s"] == f"{busy:.1f}"
            utilization = busy / (site["capacity"] * (last - first))
            assert keys[f"site.{name}.utilization"] == f"{100 * utilization:.1f}%"
        workers = one(db, "SELECT COUNT(*) FROM (SELECT DISTINCT site, host, pid FROM attempts)")
        assert keys["timeline.workers"] == str(workers)
        assert keys["timeline.attempts"] == keys["attempts"]
        assert keys["timeline.failed"] == str(one(db, "SELECT COUNT(*) FROM attempts WHERE ok = 0"))

        # reaction: the next start on the same kind after each end
        rows = db.execute("SELECT site, started, ended FROM attempts").fetchall()
        waits = reaction_times(rows)
        assert keys["reaction.count"] == str(len(waits))
        assert keys["reaction.median"] == s3(statistics.median(waits))
        p95 = statistics.quantiles(waits, n=100, method="inclusive")[94]
        assert keys["reaction.p95"] == s3(p95)
        for kind in ("cpu", "gpu"):
            mine = reaction_times([r for r in rows if KIND[r[0]] == kind])
            assert keys[f"reaction.{kind}.median"] == s3(statistics.median(mine))

        # latency: medians of each hop of the attempt that made the result
        hops = defaultdict(lambda: defaultdict(list))
        for method, c, se, st, en, rt, rc in db.execute(
            "SELECT t.method, t.created, a.sent, a.started, a.ended, a.returned, "
            "(SELECT MIN(time) FROM events WHERE state = 'received' AND task_id = t.task_id) "
            "FROM tasks t JOIN attempts a ON a.task_id = t.task_id "
            "WHERE a.attempt = (SELECT MAX(attempt) FROM attempts WHERE task_id = t.task_id)"
        ):
            stamps = [c, se, st, en, rt, rc]
            for (key, _, _), lo, hi in zip(report.HOPS, stamps, stamps[1:], strict=False):
                if lo is not None and hi is not None:
                    hops[method][key].append(hi - lo)
        assert set(hops) == {"simulate", "infer", "train"}
        for method, by_hop in hops.items():
            for key, spans in by_hop.items():
                assert keys[f"latency.{method}.{key}"] == s3(statistics.median(spans)), (
                    method,
                    key,
                )

        # failures: final results by reason and site; failed attempts
        failures = one(db, "SELECT COUNT(*) FROM results WHERE success = 0")
        assert keys["failures.total"] == str(failures)
        for reason, n in db.execute(
            "SELECT reason, COUNT(*) FROM results WHERE success = 0 GROUP BY reason"
        ):
            assert keys[f"failures.reason.{reason}"] == str(n)
        for site, n in db.execute(
            "SELECT COALESCE(site, '(no site)'), COUNT(*) FROM results WHERE success = 0 "
            "GROUP BY site"
        ):
            assert keys[f"failures.site.{site}"] == str(n)
        assert keys["failures.attempts"] == str(
            one(db, "SELECT COUNT(*) FROM attempts WHERE ok = 0")
        )
        newest = db.execute(
            "SELECT task_id FROM results WHERE success = 0 ORDER BY finished DESC LIMIT 20"
        ).fetchall()
        for (task_id,) in newest:
            assert task_id in page

        # retries by site and reason; moves between sites
        assert keys["retries.total"] == str(
            one(db, "SELECT COUNT(*) FROM events WHERE state = 'retried'")
        )
        assert keys["retries.tasks"] == str(
            one(db, "SELECT COUNT(DISTINCT task_id) FROM events WHERE state = 'retried'")
        )
        for site, why, n in db.execute(
            "SELECT site, detail, COUNT(*) FROM events WHERE state = 'retried' "
            "GROUP BY site, detail"
        ):
            assert keys[f"retries.{site}.{why}"] == str(n)
        by_task = defaultdict(list)
        for task_id, _, site in db.execute(
            "SELECT task_id, attempt, site FROM attempts ORDER BY task_id, attempt"
        ):
            by_task[task_id].append(site)
        moves = sum(
            a != b for sites in by_task.values() for a, b in zip(sites, sites[1:], strict=False)
        )
        assert moves > 0 and keys["retries.moves"] == str(moves)
        assert keys["retries.site_events"] == str(
            one(
                db,
                "SELECT COUNT(*) FROM events WHERE state IN "
                "('site_down', 'site_up', 'drained', 'undrained')",
            )
        )

        # control and objective
        assert keys["control.total"] == str(one(db, "SELECT COUNT(*) FROM control"))
        assert "unreachable: connection refused" in page
        best = one(db, "SELECT MAX(value) FROM objective")
        assert keys["objective.best"] == f"{best:.6g}"
        assert keys["objective.count"] == str(one(db, "SELECT COUNT(*) FROM objective"))
        best_task = one(db, "SELECT task_id FROM objective ORDER BY value DESC LIMIT 1")
        assert keys["objective.best_task"] == best_task

    # models: three versions, the champion, lineage from the training task
    assert keys["models.versions"] == "3"
    assert keys[f"models.{MODEL}.2.val_rmse"] == "0.37"
    assert keys[f"models.{MODEL}.3.steered"] == "75"
    assert "@champion" in page and f"trained by task {full_run.train_ids[0]} on gpu" in page


def test_plots_are_inline_svg_and_fast_enough_for_a_dashboard(full_run: Run) -> None:
    data = report.collect(full_run.run_dir, models=False)
    assert data.notes["models"] == "model versions were not read"
    started = time.perf_counter()
    svgs = report.plot_svgs(data)
    elapsed = time.perf_counter() - started
    assert set(svgs) == {
        "timeline",
        "utilization",
        "reaction",
        "latency",
        "failures",
        "retries",
        "objective",
    }
    for name, svg in svgs.items():
        assert svg.startswith("<svg") and svg.endswith("</svg>"), name
        assert "<image" not in svg or name == "timeline"
    page = report.render_html(data, svgs)
    assert page.count("<svg") == len(svgs)
    print(f"plot_svgs on {data.counts['total']} tasks: {elapsed:.2f} s")


def test_a_report_of_10000_tasks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    started = time.perf_counter()
    run = build_run(tmp_path / "run", 10_000, seed=7)
    built = time.perf_counter() - started
    times = {}
    started = time.perf_counter()
    data = report.collect(run.run_dir)
    times["collect"] = time.perf_counter() - started
    started = time.perf_counter()
    svgs = report.plot_svgs(data)
    times["plot_svgs"] = time.perf_counter() - started
    started = time.perf_counter()
    page = report.render_html(data, svgs)
    times["render_html"] = time.perf_counter() - started
    started = time.perf_counter()
    report.plot_svgs(report.collect(run.run_dir, models=False))
    times["dashboard refresh (collect(models=False) + plot_svgs)"] = time.perf_counter() - started
    with closing(sql(run.run_dir)) as db:
        attempts = one(db, "SELECT COUNT(*) FROM attempts")
        keys, sections = page_keys(page)
        assert keys["done"] == str(one(db, "SELECT COUNT(*) FROM results WHERE success = 1"))
        assert keys["attempts"] == str(attempts)
    assert sections == SECTIONS
    assert attempts > 9_000 and len(svgs) == 7
    with capsys.disabled():
        print(f"\n10,000-task journal ({attempts} attempts) built in {built:.1f} s")
        for what, seconds in times.items():
            print(f"  {what}: {seconds:.2f} s")
        sizes = ", ".join(f"{k} {len(v) // 1024} kB" for k, v in svgs.items())
        print(f"  page {len(page) // 1024} kB; svgs: {sizes}")


def test_a_run_without_attempts_objective_or_models_says_so(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    journal = Journal(run_dir)
    journal.set_meta({"campaign": "quiet", "site_info": SITES[:1]})
    for i in range(3):
        task = Task(method="simulate", topic="simulate", args=(i,), kwargs={}, task_id=f"q{i}")
        journal.created(task.task_id, task.method, task.topic, None, task.created)
        journal.finished(
            task.make_result(
                success=False,
                failure_info=FailureInfo(
                    exception_type="Cancelled",
                    message="cancelled while waiting in orch",
                    reason="cancelled",
                ),
                timestamps=Timestamps(created=task.created),
            ),
            None,
        )
    journal.close()
    page = report.write_report(run_dir).read_text()
    keys, sections = page_keys(page)
    assert sections == SECTIONS
    assert keys["total"] == "3" and keys["cancelled"] == "3" and keys["attempts"] == "0"
    assert "<svg" not in page.split('id="failures"')[0]  # no timeline, utilization, ...
    assert page.count("no attempt has finished yet") == 3  # timeline, utilization, reaction
    assert "this campaign declares no objective" in page
    assert "this campaign versioned no models" in page
    assert "no control action (cancel, drain, undrain, halt) was taken" in page
    assert 'data-plot="failures"><svg' in page and keys["failures.reason.cancelled"] == "3"


def test_an_old_journal_degrades_section_by_section(tmp_path: Path) -> None:
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    with closing(sqlite3.connect(run_dir / "journal.sqlite")) as db:  # the first schema
        db.executescript(
            """
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL,
                task_id TEXT NOT NULL, state TEXT NOT NULL, site TEXT, detail TEXT);
            CREATE TABLE tasks (task_id TEXT PRIMARY KEY, method TEXT NOT NULL,
                topic TEXT NOT NULL, input_key TEXT, created REAL NOT NULL);
            CREATE TABLE results (task_id TEXT PRIMARY KEY, input_key TEXT, method TEXT NOT NULL,
                topic TEXT NOT NULL, success INTEGER NOT NULL, memo INTEGER NOT NULL,
                finished REAL NOT NULL, result BLOB);
            """
        )
        db.execute("INSERT INTO meta VALUES ('campaign', '\"ancient\"')")
        db.execute('INSERT INTO meta VALUES (\'objective\', \'{"name": "y", "goal": "min"}\')')
        for i in range(4):
            db.execute("INSERT INTO tasks VALUES (?, 'f', 'f', NULL, ?)", (f"o{i}", T0 + i))
            db.execute(
                "INSERT INTO events (time, task_id, state) VALUES (?, ?, 'created')",
                (T0 + i, f"o{i}"),
            )
            db.execute(
                "INSERT INTO results VALUES (?, NULL, 'f', 'f', ?, 0, ?, NULL)",
                (f"o{i}", int(i != 2), T0 + i + 1),
            )
            db.execute(
                "INSERT INTO events (time, task_id, state, site) VALUES (?, ?, 'done', 'x')",
                (T0 + i + 1, f"o{i}"),
            )
        db.commit()
    data = report.collect(run_dir)
    for section in ("timeline", "utilization", "reaction", "control", "objective"):
        assert data.notes[section].startswith("not recorded in this run"), section
    assert data.notes["models"] == "this campaign versioned no models"
    page = report.render_html(data)
    keys, sections = page_keys(page)
    assert sections == SECTIONS
    assert keys["total"] == "4" and keys["done"] == "3" and keys["failed"] == "1"
    assert keys["failures.total"] == "1"
    assert "this journal has no attempts table" in page
    assert "this journal has no control table" in page
    assert "this journal has no objective table" in page
    assert keys["duration_s"] == "4.0"


def test_a_running_campaign_is_read_without_blocking_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "live"
    run_dir.mkdir()
    journal = Journal(run_dir)
    try:
        journal.set_meta({"campaign": "live", "site_info": SITES[:1]})
        journal.live({"time": time.time(), "pid": os.getpid(), "state": "running"})
        for i in range(5):
            journal.created(f"r{i}", "simulate", "simulate", None, time.time())
        journal.flush()
        data = report.collect(run_dir, models=False)
        assert data.state == "running" and data.counts["total"] == 5
        assert data.counts["unfinished"] == 5
        # the campaign goes on writing while (and after) the report reads
        for i in range(5, 8):
            journal.created(f"r{i}", "simulate", "simulate", None, time.time())
        journal.flush()
        keys, _ = page_keys(report.render_html(report.collect(run_dir, models=False), {}))
        assert keys["total"] == "8" and keys["state"] == "running"
    finally:
        journal.close()
    with closing(sqlite3.connect(run_dir / "journal.sqlite")) as db:  # a campaign killed
        db.execute(
            "UPDATE meta SET value = json_set(value, '$.time', 1.0, '$.pid', 0) WHERE key = 'live'"
        )
        db.commit()
    assert report.collect(run_dir, models=False).state == "stopped"


def test_a_directory_without_a_journal_is_a_config_error(tmp_path: Path) -> None:
    for where in (tmp_path, tmp_path / "missing"):
        for call in (report.collect, report.write_report):
            with pytest.raises(ConfigError) as raised:
                call(where)
            message = str(raised.value)
            assert str(where) in message and "\n" not in message and "orch launch" in message
    assert not (tmp_path / "report.html").exists()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.skipif(not HAVE_CHROMIUM, reason=SKIP_REASON)
@pytest.mark.timeout(180)
def test_the_report_renders_in_headless_chromium(full_run: Run, tmp_path: Path) -> None:
    run_dir = full_run.run_dir
    path = report.write_report(run_dir)
    screenshot = run_dir / "report.png"
    browser = Browser(tmp_path / "profile")
    try:
        browser.navigate(path.as_uri())
        assert browser.wait_for("document.readyState === 'complete'")
        sections = browser.evaluate("[...document.querySelectorAll('section')].map(s => s.id)")
        assert sections == SECTIONS
        svgs = browser.evaluate(
            "[...document.querySelectorAll('figure.plot > svg')].map(s => "
            "[s.parentElement.dataset.plot, s.getBoundingClientRect().width, "
            "s.getBoundingClientRect().height])"
        )
        assert {name for name, _, _ in svgs} >= {"timeline", "utilization", "objective", "models"}
        assert all(width > 400 and height > 100 for _, width, height in svgs), svgs
        done = browser.evaluate("document.querySelector('[data-key=\"done\"]').textContent")
        with closing(sql(run_dir)) as db:
            assert done == str(one(db, "SELECT COUNT(*) FROM results WHERE success = 1"))
        browser.click('nav a[href="#objective"]')
        assert browser.wait_for("location.hash === '#objective' && window.scrollY > 0")
        assert browser.console_errors() == []
        browser.screenshot(screenshot, full_page=True)
    finally:
        browser.close()
    width, height = _png_size(screenshot)
    assert 1300 <= width <= 1400 and height > 2000  # the page, less a scrollbar
    print(f"report screenshot: {screenshot}")


@pytest.fixture(autouse=True)
def _no_stray_clock() -> Iterator[None]:
    yield
    assert journal_module.time is time  # the synthetic clock never outlives its journal
