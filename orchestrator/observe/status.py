"""``orch status``: a run's state, read from its journal without disturbing the campaign.

The journal is opened read-only (SQLite WAL: readers never block the campaign's writes).
Counts come from the journal's tables (exact); what is in flight right now (queued,
running, waiting in orch) comes from the live snapshot the campaign writes every second.
"""

from __future__ import annotations

import itertools
import operator
import sqlite3
import statistics
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from orchestrator.observe.reading import connect, read_meta, run_state

LAST_FAILURES = 10
"""Failures listed in the status (the newest)."""

UNFINISHED_LISTED = 50
"""Unfinished tasks listed by id in the status (the oldest), for ``orch cancel``."""

_COUNTED_EVENTS = ("retried", "replayed", "site_down", "site_up", "drained", "undrained")
"""Event states the status counts or follows (the tasks' own states are read per task)."""

_OPPOSITE = {
    "site_down": "site_up",
    "site_up": "site_down",
    "drained": "undrained",
    "undrained": "drained",
}


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[int(q * 100) - 1]


def read_status(run_dir: Path) -> dict[str, Any]:
    """Everything ``orch status`` shows about the run in ``run_dir``, as JSON-ready data.

    Raises:
        ConfigError: ``run_dir`` holds no readable journal.
    """
    now = time.time()
    with closing(connect(run_dir)) as db:
        db.execute("BEGIN")  # one read transaction: every count from the same moment
        tables = _tables(db)
        meta = read_meta(db)
        live: dict[str, Any] = meta.get("live") or {}
        state = run_state(live)
        # -- sites ----------------------------------------------------------------------------
        info = {s["name"]: dict(s) for s in meta.get("site_info") or []}
        for name, site in (live.get("sites") or {}).items():
            info.setdefault(name, {"name": name}).update(
                {k: site.get(k) for k in ("kind", "backend", "capacity")}
            )
        done_at: dict[str, tuple[int, int]] = {}
        if "attempts" in tables:
            for site, ok, n in db.execute(
                "SELECT site, ok, COUNT(*) FROM attempts GROUP BY site, ok"
            ):
                d, f = done_at.get(site, (0, 0))
                done_at[site] = (d + n, f) if ok else (d, f + n)
        # -- the oldest unfinished tasks, listed while the run goes on (for orch cancel) ------
        unfinished = []
        if state == "running":
            for task_id, method, created_at in db.execute(
                "SELECT t.task_id, t.method, t.created FROM tasks t LEFT JOIN results r "
                "ON r.task_id = t.task_id WHERE r.task_id IS NULL ORDER BY t.created LIMIT ?",
                (UNFINISHED_LISTED,),
            ):
                unfinished.append({"task_id": task_id, "method": method, "created": created_at})
        # -- one pass over the events (the largest table; an index would slow every insert):
        # per (state, site) the count and the newest event with its detail (SQLite takes a
        # bare column from the row of the one MAX()); per unfinished task its newest event.
        ids = [t["task_id"] for t in unfinished]
        mine = f"task_id IN ({','.join('?' * len(ids))})" if ids else "0"
        moved: dict[str, int] = {}
        replayed = 0
        newest: dict[tuple[str, str | None], tuple[int, str | None]] = {}
        latest: dict[str, tuple[int, str, str | None]] = {}
        for task_id, what, site, detail, seq, n in db.execute(
            f"SELECT CASE WHEN {mine} THEN task_id END AS listed, state, site, detail, "
            f"MAX(seq), COUNT(*) FROM events WHERE {mine} OR state IN "
            f"({', '.join(repr(s) for s in _COUNTED_EVENTS)}) GROUP BY listed, state, site",
            ids + ids,
        ):
            if task_id is not None and seq > latest.get(task_id, (-1, "", None))[0]:
                latest[task_id] = (seq, what, site)
            if what == "retried":
                if site is not None:
                    moved[site] = moved.get(site, 0) + n
            elif what == "replayed":
                replayed += n
            elif what in _OPPOSITE and seq > newest.get((what, site), (-1, None))[0]:
                newest[(what, site)] = (seq, detail)
        for task in unfinished:
            _, task["state"], task["site"] = latest.get(task["task_id"], (0, "created", None))
        site_state: dict[str, tuple[str, str | None]] = {}
        drained: dict[str, bool] = {}
        for (what, site), (seq, detail) in newest.items():  # the newer of each pair wins
            if site is None or seq < newest.get((_OPPOSITE[what], site), (-1, None))[0]:
                continue
            if what in ("site_down", "site_up"):
                site_state[site] = ("down", detail) if what == "site_down" else ("up", None)
            else:
                drained[site] = what == "drained"
        live_sites = live.get("sites") or {}
        waiting = live.get("waiting") or {}
        sites = []
        for name in list(info) + [s for s in done_at if s not in info]:
            row = info.get(name, {"name": name})
            up, why = site_state.get(name, ("up", None))
            current = live_sites.get(name, {})
            running = state == "running"
            done, failed = done_at.get(name, (0, 0))
            sites.append(
                {
                    "name": name,
                    "kind": row.get("kind"),
                    "backend": row.get("backend"),
                    "capacity": row.get("capacity"),
                    "state": "down" if up == "down" else "drained" if drained.get(name) else "up",
                    "why": why,
                    "waiting": int(waiting.get(row.get("kind"), 0)) if running else 0,
                    "queued": int(current.get("queued", 0)) if running else 0,
                    "running": int(current.get("running", 0)) if running else 0,
                    "done": done,
                    "failed": failed,
                    "moved": int(moved.get(name, 0)),
                }
            )
        # -- methods ------------------------------------------------------------------------
        result_cols = _columns(db, "results")
        timed = "started" in result_cols and "ended" in result_cols
        # Counted in SQL: a results row holds the pickled result, so each scan reads them all.
        # Groups in the order of their first row: methods and failure reasons appear in the
        # order the rows do.
        per_method: dict[str, dict[str, Any]] = {}
        for method, success, reason, n, _ in db.execute(
            "SELECT method, success, "
            + ("reason" if timed else "NULL")
            + ", COUNT(*), MIN(rowid) AS first FROM results GROUP BY method, success"
            + (", reason" if timed else "")
            + " ORDER BY first"
        ):
            m = per_method.setdefault(
                method, {"method": method, "tasks": 0, "done": 0, "failed": 0, "failures": {}}
            )
            if success:
                m["done"] += n
            else:
                m["failed"] += n
                key = reason or "failed"
                m["failures"][key] = m["failures"].get(key, 0) + n
        spans: dict[str, list[float]] = {}
        if timed:
            rows = db.execute(
                "SELECT method, ended - started AS span FROM results "
                "WHERE started AND ended AND ended >= started ORDER BY method, span"
            ).fetchall()
            for method, group in itertools.groupby(rows, key=operator.itemgetter(0)):
                spans[method] = [span for _, span in group]
        created = dict(db.execute("SELECT method, COUNT(*) FROM tasks GROUP BY method").fetchall())
        for method, n in created.items():
            per_method.setdefault(
                method, {"method": method, "tasks": 0, "done": 0, "failed": 0, "failures": {}}
            )["tasks"] = n
        for method, m in per_method.items():
            finished = m["done"] + m["failed"]
            m["tasks"] = max(m["tasks"], finished)
            m["unfinished"] = m["tasks"] - finished
            values = sorted(spans.get(method, []))
            m["runs_timed"] = len(values)
            m["median_s"] = statistics.median(values) if values else None
            m["p95_s"] = _quantile(values, 0.95)
        # -- failures, control ----------------------------------------------------------------
        last = []
        if timed and any(m["failed"] for m in per_method.values()):
            for task_id, method, site, reason, message, at in db.execute(
                "SELECT task_id, method, site, reason, message, finished FROM results "
                "WHERE success = 0 ORDER BY finished DESC LIMIT ?",
                (LAST_FAILURES,),
            ):
                last.append(
                    {
                        "task_id": task_id,
                        "method": method,
                        "site": site,
                        "reason": reason,
                        "message": message,
                        "time": at,
                    }
                )
        control = []
        if "control" in tables:
            for at, action, target, user, outcome in db.execute(
                "SELECT time, action, target, user, outcome FROM control ORDER BY seq"
            ):
                control.append(
                    {
                        "time": at,
                        "action": action,
                        "target": target,
                        "user": user,
                        "outcome": outcome,
                    }
                )
    # -- progress and time left -----------------------------------------------------------------
    progress = live.get("progress")
    eta = None
    first = live.get("progress_first")
    if progress and progress.get("budget") and first and state == "running":
        gained = progress["done"] - first["done"]
        spent = float(progress.get("time") or now) - first["time"]
        left = progress["budget"] - progress["done"]
        if gained > 0 and spent > 0 and left >= 0:
            eta = left * spent / gained
    totals = {
        "tasks": sum(m["tasks"] for m in per_method.values()),
        "done": sum(m["done"] for m in per_method.values()),
        "failed": sum(m["failed"] for m in per_method.values()),
        "cancelled": sum(m["failures"].get("cancelled", 0) for m in per_method.values()),
        "unfinished": sum(m["unfinished"] for m in per_method.values()),
        "replayed": replayed,
    }
    started = live.get("started") or meta.get("started")
    ended = live.get("time") if state != "running" else None
    return {
        "run_dir": str(run_dir),
        "campaign": meta.get("campaign"),
        "state": state,
        "pid": live.get("pid"),
        "started": started,
        "updated": live.get("time"),
        "elapsed_s": ((ended or now) - started) if started else None,
        "sites": sites,
        "waiting": waiting if state == "running" else {},
        "methods": sorted(per_method.values(), key=lambda m: m["method"]),
        "totals": totals,
        "last_failures": last,
        "unfinished_tasks": unfinished if state == "running" else [],
        "control": control,
        "progress": progress,
        "eta_s": eta,
        "objective": meta.get("objective"),
    }


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def render(status: dict[str, Any]) -> Any:
    """The status as rich renderables (a group of tables and lines) for the terminal."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    head = (
        f"[bold]{escape(str(status['campaign']))}[/bold]  {escape(status['run_dir'])}\n"
        f"state: [bold]{status['state']}[/bold]"
        + (f" (pid {status['pid']})" if status["state"] == "running" else "")
        + f"   elapsed: {_seconds(status['elapsed_s'])}"
    )
    totals = status["totals"]
    head += (
        f"\ntasks: {totals['tasks']}  done {totals['done']}  failed {totals['failed']}"
        f" (cancelled {totals['cancelled']})  unfinished {totals['unfinished']}"
        f"  replayed {totals['replayed']}"
    )
    progress = status.get("progress")
    if progress:
        line = f"progress: {progress['done']}"
        if progress.get("budget"):
            line += f" of {progress['budget']}"
        if progress.get("text"):
            line += f"  {progress['text']}"
        if status.get("eta_s") is not None:
            line += f"  (about {_seconds(status['eta_s'])} left)"
        head += "\n" + escape(line)
    parts.append(Text.from_markup(head))

    sites = Table(title="sites", title_justify="left")
    for column in ("site", "kind", "slots", "state", "waiting", "queued", "in use", "done"):
        sites.add_column(column, justify="left" if column in ("site", "kind", "state") else "right")
    sites.add_column("failed", justify="right")
    sites.add_column("moved", justify="right")
    for s in status["sites"]:
        state = {"up": "[green]up[/green]", "down": "[red]down[/red]"}.get(
            s["state"], "[yellow]drained[/yellow]"
        )
        if s.get("why"):
            state += " " + escape(str(s["why"]))[:80]
        sites.add_row(
            s["name"],
            str(s["kind"]),
            str(s["capacity"]),
            state,
            str(s["waiting"]),
            str(s["queued"]),
            f"{s['running']}/{s['capacity']}",
            str(s["done"]),
            str(s["failed"]),
            str(s["moved"]),
        )
    parts.append(sites)

    methods = Table(title="methods", title_justify="left")
    for column in ("method", "tasks", "done", "failed", "unfinished", "median", "p95", "failures"):
        methods.add_column(column, justify="left" if column in ("method", "failures") else "right")
    for m in status["methods"]:
        methods.add_row(
            m["method"],
            str(m["tasks"]),
            str(m["done"]),
            str(m["failed"]),
            str(m["unfinished"]),
            _seconds(m["median_s"]),
            _seconds(m["p95_s"]),
            escape(", ".join(f"{k} {v}" for k, v in sorted(m["failures"].items()))) or "-",
        )
    parts.append(methods)

    if status["last_failures"]:
        fails = Table(title="last failures", title_justify="left")
        for column in ("task", "method", "site", "reason", "message"):
            fails.add_column(column, overflow="fold")
        for f in status["last_failures"]:
            fails.add_row(
                f["task_id"],
                f["method"],
                str(f["site"] or "-"),
                str(f["reason"]),
                escape(str(f["message"] or ""))[:120],
            )
        parts.append(fails)
    if status["control"]:
        control = Table(title="control actions", title_justify="left")
        for column in ("time", "action", "target", "user", "outcome"):
            control.add_column(column, overflow="fold")
        for c in status["control"]:
            control.add_row(
                time.strftime("%H:%M:%S", time.localtime(c["time"])),
                c["action"],
                escape(str(c["target"] or "")),
                escape(str(c["user"])),
                escape(str(c["outcome"])),
            )
        parts.append(control)
    return Group(*parts)
