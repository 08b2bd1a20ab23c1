"""``orch report``: a self-contained HTML report of a campaign run, read from its journal.

:func:`collect` reads every number the report shows from the run's journal
(``RUN_DIR/journal.sqlite``), opened read-only in one read transaction (a consistent view of
a campaign that is still running: SQLite WAL readers never block its writes), and from the
run's MLflow store when there is one (``RUN_DIR/mlflow/mlflow.db``, read from a private copy
through MLflow's client). :func:`plot_svgs` draws the plots as inline SVG (matplotlib, no
pyplot state), :func:`render_html` puts both in one page that needs no network, no other file
and no JavaScript, and :func:`write_report` does all three into ``RUN_DIR/report.html``.

A journal written by an older orch may lack tables, columns or meta keys: the sections that
need them say so ("not recorded in this run") and the others are drawn as usual.

The page's key figures sit in elements with a ``data-key`` attribute (``<td data-key="done">``)
whose text is the number exactly as :func:`collect` computed it (tests compare them with SQL
on the journal). :func:`plot_svgs` is cheap enough for a live dashboard to call every few
seconds (``collect(run_dir, models=False)`` skips the MLflow store).
"""

from __future__ import annotations

import html
import io
import logging
import math
import os
import re
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.exceptions import ConfigError
from orchestrator.observe.reading import JOURNAL_NAME, open_readonly, read_meta, run_state
from orchestrator.observe.reading import connect as _connect
from orchestrator.observe.reading import wal_path as _wal

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"
"""File name of the report inside a run directory (the default output)."""
MLFLOW_DB = Path("mlflow") / "mlflow.db"
"""Where a run directory keeps its MLflow store (``orchestrator.registry.store_paths``)."""
LAST_FAILURES = 20
"""Failures listed one by one (the newest)."""
MAX_ROWS = 200
"""Rows shown at most in the long tables (control actions, site events)."""
UTILIZATION_BINS = 300
"""Time bins of the utilization plot (each the mean busy workers over its span)."""
GANTT_RASTER_BARS = 3000
"""Above this many bars the Gantt bars are embedded as an image inside the SVG (small, fast)."""

HOPS: tuple[tuple[str, str, str], ...] = (
    ("waiting", "created → sent", "waiting in orch"),
    ("to_worker", "sent → started", "to the worker"),
    ("running", "started → ended", "running"),
    ("back", "ended → returned", "back to orch"),
    ("to_thinker", "returned → received", "to the thinker"),
)
"""The hops of a task's life: key, the two timestamps, what the time is spent on."""

NOT_RECORDED = "not recorded in this run"

_SITE_EVENTS = ("site_down", "site_up", "drained", "undrained")


# -- what the report shows ------------------------------------------------------------------


@dataclass
class SiteSummary:
    """One site: what the run declared and what its workers did."""

    name: str
    kind: str
    backend: str
    capacity: int | None
    attempts: int = 0
    done: int = 0
    """Final results that succeeded on this site."""
    failed: int = 0
    """Final results that failed on this site."""
    busy_s: float = 0.0
    """Worker-seconds spent running attempts (sum of ``ended - started``)."""
    utilization: float | None = None
    """``busy_s / (capacity * duration)``; None without a capacity or a duration."""
    peak_busy: int = 0
    """Most attempts running at once."""
    down: str | None = None
    drained: bool = False


@dataclass
class Attempts:
    """Every finished attempt (``attempts`` table), one entry per attempt, in columns.

    Times are epoch seconds, NaN where the journal has NULL.
    """

    task_id: list[str]
    attempt: list[int]
    method: list[str]
    site: list[str]
    host: list[str | None]
    pid: list[int | None]
    sent: np.ndarray
    started: np.ndarray
    ended: np.ndarray
    returned: np.ndarray
    ok: np.ndarray
    reason: list[str | None]
    row: np.ndarray
    """Index into :attr:`ReportData.workers` of the worker that ran each attempt."""

    def __len__(self) -> int:
        return len(self.task_id)


@dataclass
class UtilizationSeries:
    """Busy workers of one site over time (mean per time bin)."""

    site: str
    capacity: int | None
    edges: np.ndarray
    """Bin edges, seconds since :attr:`ReportData.t0`."""
    busy: np.ndarray
    """Mean running attempts in each bin."""


@dataclass
class Reaction:
    """Time from an attempt's end to the next attempt start on a site of the same kind."""

    values: dict[str, np.ndarray]
    """Per site kind, the reaction times in seconds."""
    median: dict[str, float]
    p95: dict[str, float]
    all_median: float | None
    all_p95: float | None
    count: int


@dataclass
class MethodLatency:
    """Median seconds of each hop (:data:`HOPS`) of one method's tasks."""

    method: str
    tasks: int
    hops: dict[str, float | None]
    counts: dict[str, int]
    """Tasks that have both timestamps of the hop."""

    @property
    def total(self) -> float:
        """Sum of the hop medians that are known."""
        return sum(v for v in self.hops.values() if v is not None)


@dataclass
class FailureRow:
    """One failed task (its final result)."""

    task_id: str
    method: str
    site: str | None
    reason: str | None
    message: str | None
    time: float


@dataclass
class Failures:
    """Failed tasks (final results) and failed attempts."""

    total: int
    by_reason: list[tuple[str, int]]
    by_site: list[tuple[str, int]]
    attempts_by_reason: list[tuple[str, int]] | None
    """Failed attempts, retried ones included (None without an attempts table)."""
    recent: list[FailureRow]


@dataclass
class SiteEvent:
    """A site went down or came back, was drained or undrained."""

    time: float
    state: str
    site: str | None
    detail: str | None


@dataclass
class Retries:
    """Retries (``retried`` events) and moves of tasks from one site to another."""

    total: int
    tasks: int
    by_site_reason: list[tuple[str, str, int]]
    moves: list[tuple[str, str, int]] | None
    """Consecutive attempts of a task on different sites (from, to, count); None: no attempts."""
    moves_total: int
    site_events: list[SiteEvent]
    site_events_total: int


@dataclass
class ControlRow:
    """One control action and what it did."""

    time: float
    action: str
    target: str | None
    user: str | None
    outcome: str | None


@dataclass
class ModelVersionRow:
    """One registered model version with where it came from and what it steered."""

    model: str
    version: int
    created: float | None
    aliases: tuple[str, ...]
    run_id: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]

    @property
    def task_id(self) -> str | None:
        """The training task that made the version (``orch.task_id``)."""
        return self.tags.get("orch.task_id")

    @property
    def steered(self) -> int | None:
        """Tasks the version chose or served (``orch.lineage_rows``), if recorded."""
        value = self.tags.get("orch.lineage_rows")
        return int(value) if value is not None and value.isdigit() else None


@dataclass
class Models:
    """The run's MLflow store: its registered models' versions."""

    store: Path | None
    versions: list[ModelVersionRow]
    error: str | None = None


@dataclass
class Objective:
    """The campaign's objective values in the order they came."""

    name: str
    goal: str
    times: np.ndarray
    values: np.ndarray
    best: float | None
    best_task: str | None
    best_index: int | None
    """1-based count of values when the best one came."""

    @property
    def count(self) -> int:
        """Values recorded."""
        return len(self.values)

    def best_so_far(self) -> np.ndarray:
        """The best value after each one (running max or min, per :attr:`goal`)."""
        if not len(self.values):
            return self.values
        if self.goal == "min":
            return np.minimum.accumulate(self.values)
        return np.maximum.accumulate(self.values)


@dataclass
class ReportData:
    """Every number the report shows, read from one run's journal (and MLflow store)."""

    run_dir: Path
    campaign: str
    state: str
    t0: float | None
    """Start of the run's time axis (epoch seconds): its first journaled change."""
    t1: float | None
    """Its last journaled change: event, result, control action, objective value or live
    snapshot."""
    launched: float | None
    """The (latest) launch, ``meta['started']``."""
    counts: dict[str, int]
    """total, created, replayed, done, failed, cancelled, unfinished, received, attempts,
    retried, interrupted."""
    sites: list[SiteSummary]
    options: dict[str, Any]
    progress: str | None
    workers: list[str]
    """Worker labels (site / host / pid), the Gantt chart's rows, top to bottom."""
    attempts: Attempts | None
    utilization: list[UtilizationSeries]
    reaction: Reaction | None
    latency: list[MethodLatency]
    latency_source: str
    failures: Failures
    retries: Retries
    control: list[ControlRow] | None
    models: Models | None
    objective: Objective | None
    notes: dict[str, str] = field(default_factory=dict)
    """Why a section has nothing to show (section id -> sentence)."""
    collected_s: float = 0.0

    @property
    def duration_s(self) -> float | None:
        """Seconds from the first to the last journaled change."""
        if self.t0 is None or self.t1 is None:
            return None
        return self.t1 - self.t0

    @property
    def methods(self) -> list[str]:
        """Methods that ran attempts (or had latencies), sorted."""
        names = set(self.attempts.method) if self.attempts is not None else set()
        names.update(m.method for m in self.latency)
        return sorted(names)


# -- reading the journal ----------------------------------------------------------------------


class _Journal:
    """Queries on a read-only journal that may lack newer tables and columns."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.tables = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        self._columns: dict[str, set[str]] = {}

    def has(self, table: str, *columns: str) -> bool:
        if table not in self.tables:
            return False
        if table not in self._columns:
            self._columns[table] = {
                row[1] for row in self.db.execute(f"PRAGMA table_info({table})")
            }
        return all(column in self._columns[table] for column in columns)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.db.execute(sql, params).fetchone()
        return row[0] if row else None

    def meta(self) -> dict[str, Any]:
        return read_meta(self.db)


def _f(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _finite(*values: float | None) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def collect(run_dir: Path, *, models: bool = True) -> ReportData:
    """Read every number the report shows from a run's journal (and its MLflow store).

    Args:
        run_dir: The campaign's run directory (the one holding ``journal.sqlite``).
        models: Also read the MLflow store's model versions (a live dashboard skips them).

    Returns:
        The report's data.

    Raises:
        ConfigError: ``run_dir`` holds no readable journal (one line: the path and the fix).
    """
    clock = time.perf_counter()
    run_dir = Path(run_dir)
    wal = _wal(run_dir / JOURNAL_NAME)
    for _ in range(2):
        had_wal = wal.exists()
        with closing(_connect(run_dir)) as db:
            db.execute("BEGIN")  # one snapshot: the numbers agree with each other
            try:
                data = _collect(run_dir, _Journal(db))
            except sqlite3.Error as exc:
                raise ConfigError(
                    f"{run_dir / JOURNAL_NAME}: cannot read the journal ({exc}); check that "
                    "it is a campaign journal"
                ) from None
            finally:
                db.execute("COMMIT")
        if had_wal or not wal.exists():
            break  # else a campaign opened the journal while it was read: read it again
    if models:
        data.models = read_models(run_dir)
        if not data.models.store:
            data.notes["models"] = "this campaign versioned no models"
        elif data.models.error:
            data.notes["models"] = data.models.error
        elif not data.models.versions:
            data.notes["models"] = "the run's MLflow store holds no registered model version"
    else:
        data.notes["models"] = "model versions were not read"
    data.collected_s = time.perf_counter() - clock
    return data


def _collect(run_dir: Path, j: _Journal) -> ReportData:
    notes: dict[str, str] = {}
    meta = j.meta()
    live = meta.get("live") if isinstance(meta.get("live"), dict) else {}
    assert isinstance(live, dict)
    has_events = j.has("events")
    has_results = j.has("results")
    has_tasks = j.has("tasks")

    # -- the time axis ----------------------------------------------------------------------
    ends: list[float | None] = []
    starts: list[float | None] = []
    if has_events:
        first, last = j.rows("SELECT MIN(time), MAX(time) FROM events")[0]
        starts.append(first)
        ends.append(last)
    if has_tasks:
        starts.append(j.one("SELECT MIN(created) FROM tasks"))
    if has_results:
        ends.append(j.one("SELECT MAX(finished) FROM results"))
    for table in ("control", "objective"):
        if j.has(table, "time"):
            ends.append(j.one(f"SELECT MAX(time) FROM {table}"))
    launched = meta.get("started") if isinstance(meta.get("started"), int | float) else None
    starts.append(launched)
    ends.append(live.get("time") if isinstance(live.get("time"), int | float) else None)
    t0 = min(_finite(*starts), default=None)
    t1 = max(_finite(*ends, *starts), default=None)

    # -- counts -----------------------------------------------------------------------------
    counts = {
        "created": j.one("SELECT COUNT(*) FROM tasks") if has_tasks else 0,
        "replayed": 0,
        "received": 0,
        "retried": 0,
        "interrupted": 0,
    }
    if has_events:
        for state, n in j.rows(
            "SELECT state, COUNT(*) FROM events WHERE state IN "
            "('replayed', 'received', 'retried', 'interrupted') GROUP BY state"
        ):
            counts[state] = n
    counts["total"] = counts["created"] + counts["replayed"]
    counts["done"] = counts["failed"] = counts["cancelled"] = 0
    if has_results:
        counts["done"] = j.one("SELECT COUNT(*) FROM results WHERE success = 1")
        counts["failed"] = j.one("SELECT COUNT(*) FROM results WHERE success = 0")
        if j.has("results", "reason"):
            counts["cancelled"] = j.one(
                "SELECT COUNT(*) FROM results WHERE success = 0 AND reason = 'cancelled'"
            )
    counts["unfinished"] = 0
    if has_tasks:
        counts["unfinished"] = (
            j.one("SELECT COUNT(*) FROM tasks WHERE task_id NOT IN (SELECT task_id FROM results)")
            if has_results
            else counts["created"]
        )
    counts["attempts"] = j.one("SELECT COUNT(*) FROM attempts") if j.has("attempts") else 0

    # -- sites ------------------------------------------------------------------------------
    sites = _sites(j, meta, live)
    by_name = {site.name: site for site in sites}

    # -- attempts: timeline, utilization, reaction -------------------------------------------
    attempts: Attempts | None = None
    workers: list[str] = []
    if not j.has("attempts"):
        notes["timeline"] = notes["utilization"] = notes["reaction"] = (
            f"{NOT_RECORDED}: this journal has no attempts table (an orch older than "
            "per-attempt journaling wrote it)"
        )
    else:
        attempts, workers = _attempts(j, [s.name for s in sites])
        for name in attempts.site:
            if name not in by_name:
                by_name[name] = SiteSummary(name, "?", "?", None)
                sites.append(by_name[name])
        if not len(attempts):
            notes["timeline"] = notes["utilization"] = notes["reaction"] = (
                "no attempt has finished yet"
            )
    duration = (t1 - t0) if t0 is not None and t1 is not None else None
    utilization = _utilization(attempts, sites, t0, t1) if attempts is not None else []
    reaction = _reaction(attempts, by_name) if attempts is not None and len(attempts) else None
    if reaction is not None and not reaction.count and "reaction" not in notes:
        notes["reaction"] = "no attempt started after another one ended on a site of its kind"
    for site in sites:
        if site.capacity and duration and duration > 0:
            site.utilization = site.busy_s / (site.capacity * duration)

    # -- latency ----------------------------------------------------------------------------
    latency, source = _latency(j)
    if not latency:
        notes["latency"] = (
            "no task has finished yet" if j.has("attempts") else f"{NOT_RECORDED}: no attempts"
        )

    # -- failures, retries, control, objective -----------------------------------------------
    failures = _failures(j)
    if not has_results:
        notes["failures"] = f"{NOT_RECORDED}: this journal has no results table"
    retries = _retries(j)
    if not has_events:
        notes["retries"] = f"{NOT_RECORDED}: this journal has no events table"
    control: list[ControlRow] | None = None
    if j.has("control"):
        control = [
            ControlRow(float(t), str(a), tg, u, o)
            for t, a, tg, u, o in j.rows(
                "SELECT time, action, target, user, outcome FROM control ORDER BY seq"
            )
        ]
        if not control:
            notes["control"] = "no control action (cancel, drain, undrain, halt) was taken"
    else:
        notes["control"] = f"{NOT_RECORDED}: this journal has no control table"
    objective = _objective(j, meta)
    if objective is None:
        notes["objective"] = (
            "this campaign declares no objective"
            if not meta.get("objective")
            else f"{NOT_RECORDED}: this journal has no objective table"
        )
    elif not objective.count:
        notes["objective"] = f"no value of {objective.name} has come yet"

    options = meta.get("options") if isinstance(meta.get("options"), dict) else {}
    progress = live.get("progress") if isinstance(live.get("progress"), dict) else None
    return ReportData(
        run_dir=run_dir,
        campaign=str(meta.get("campaign") or run_dir.name),
        state=run_state(live),
        t0=t0,
        t1=t1,
        launched=launched,
        counts=counts,
        sites=sites,
        options=dict(options or {}),
        progress=str(progress.get("text")) if progress and progress.get("text") else None,
        workers=workers,
        attempts=attempts,
        utilization=utilization,
        reaction=reaction,
        latency=latency,
        latency_source=source,
        failures=failures,
        retries=retries,
        control=control,
        models=None,
        objective=objective,
        notes=notes,
    )


def _sites(j: _Journal, meta: dict[str, Any], live: dict[str, Any]) -> list[SiteSummary]:
    sites: dict[str, SiteSummary] = {}
    for info in meta.get("site_info") or []:
        if isinstance(info, dict) and info.get("name"):
            capacity = info.get("capacity")
            sites[str(info["name"])] = SiteSummary(
                str(info["name"]),
                str(info.get("kind") or "?"),
                str(info.get("backend") or "?"),
                int(capacity) if isinstance(capacity, int | float) else None,
            )
    for name, snap in (live.get("sites") or {}).items():
        if not isinstance(snap, dict):
            continue
        site = sites.setdefault(
            str(name),
            SiteSummary(str(name), str(snap.get("kind") or "?"), str(snap.get("backend")), None),
        )
        if site.capacity is None and isinstance(snap.get("capacity"), int | float):
            site.capacity = int(snap["capacity"])
        site.down = snap.get("down") or None
        site.drained = bool(snap.get("drained"))
    if j.has("results", "site"):
        for name, success, n in j.rows(
            "SELECT site, success, COUNT(*) FROM results WHERE site IS NOT NULL "
            "GROUP BY site, success"
        ):
            site = sites.setdefault(str(name), SiteSummary(str(name), "?", "?", None))
            if success:
                site.done = n
            else:
                site.failed = n
    if j.has("attempts"):
        for name, n, busy in j.rows(
            "SELECT site, COUNT(*), COALESCE(SUM(CASE WHEN started IS NOT NULL AND ended IS NOT "
            "NULL THEN ended - started END), 0.0) FROM attempts GROUP BY site"
        ):
            site = sites.setdefault(str(name), SiteSummary(str(name), "?", "?", None))
            site.attempts = n
            site.busy_s = float(busy)
    return list(sites.values())


def _attempts(j: _Journal, site_order: list[str]) -> tuple[Attempts, list[str]]:
    rows = j.rows(
        "SELECT task_id, attempt, method, site, host, pid, sent, started, ended, returned, ok, "
        "reason FROM attempts ORDER BY COALESCE(started, sent, returned)"
    )
    cols = list(zip(*rows, strict=True)) if rows else [()] * 12
    site = [str(s) for s in cols[3]]
    host = list(cols[4])
    pid = list(cols[5])
    started = np.array([_f(v) for v in cols[7]], dtype=float)
    rank = {name: i for i, name in enumerate(site_order)}
    keys = sorted(
        {(s, h, p) for s, h, p in zip(site, host, pid, strict=True)},
        key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1] is None, str(k[1]), k[2] or 0),
    )
    index = {key: i for i, key in enumerate(keys)}
    labels = [
        f"{s} / {h} / {p}" if h is not None or p is not None else f"{s} / (no worker)"
        for s, h, p in keys
    ]
    attempts = Attempts(
        task_id=[str(t) for t in cols[0]],
        attempt=[int(a) for a in cols[1]],
        method=[str(m) for m in cols[2]],
        site=site,
        host=host,
        pid=pid,
        sent=np.array([_f(v) for v in cols[6]], dtype=float),
        started=started,
        ended=np.array([_f(v) for v in cols[8]], dtype=float),
        returned=np.array([_f(v) for v in cols[9]], dtype=float),
        ok=np.array([bool(v) for v in cols[10]], dtype=bool),
        reason=list(cols[11]),
        row=np.array([index[k] for k in zip(site, host, pid, strict=True)], dtype=int),
    )
    return attempts, labels


def _busy_steps(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Times of the changes and the number running after each (ends first at equal times)."""
    times = np.concatenate([ends, starts])
    delta = np.concatenate([-np.ones(len(ends)), np.ones(len(starts))])
    order = np.argsort(times, kind="stable")
    return times[order], np.cumsum(delta[order])


def _utilization(
    attempts: Attempts, sites: list[SiteSummary], t0: float | None, t1: float | None
) -> list[UtilizationSeries]:
    if t0 is None or t1 is None or not len(attempts):
        return []
    span = max(t1 - t0, 1e-9)
    edges = np.linspace(0.0, span, UTILIZATION_BINS + 1)
    site_arr = np.array(attempts.site, dtype=object)
    ran = np.isfinite(attempts.started) & np.isfinite(attempts.ended)
    out = []
    for site in sites:
        mask = ran & (site_arr == site.name)
        if not mask.any():
            continue
        starts = attempts.started[mask] - t0
        ends = np.maximum(attempts.ended[mask] - t0, starts)
        times, level = _busy_steps(starts, ends)
        site.peak_busy = int(level.max()) if len(level) else 0
        integral = np.concatenate([[0.0], np.cumsum(np.diff(times) * level[:-1])])
        at_edges = np.interp(edges, times, integral)
        busy = np.diff(at_edges) / np.diff(edges)
        out.append(UtilizationSeries(site.name, site.capacity, edges, busy))
    return out


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q))


def _reaction(attempts: Attempts, sites: dict[str, SiteSummary]) -> Reaction:
    def kind_of(name: str) -> str:
        site = sites.get(name)
        return site.kind if site is not None and site.kind != "?" else name

    kinds = np.array([kind_of(s) for s in attempts.site], dtype=object)
    values: dict[str, np.ndarray] = {}
    for kind in sorted(set(kinds.tolist())):
        mask = kinds == kind
        starts = np.sort(attempts.started[mask & np.isfinite(attempts.started)])
        ends = attempts.ended[mask & np.isfinite(attempts.ended)]
        nxt = np.searchsorted(starts, ends, side="left")
        has_next = nxt < len(starts)
        values[kind] = starts[nxt[has_next]] - ends[has_next]
    every = np.concatenate(list(values.values())) if values else np.array([])
    return Reaction(
        values=values,
        median={k: float(np.median(v)) for k, v in values.items() if len(v)},
        p95={k: _percentile(v, 95) for k, v in values.items() if len(v)},
        all_median=float(np.median(every)) if len(every) else None,
        all_p95=_percentile(every, 95) if len(every) else None,
        count=len(every),
    )


def _latency(j: _Journal) -> tuple[list[MethodLatency], str]:
    received = (
        "LEFT JOIN (SELECT task_id, MIN(time) AS received FROM events WHERE state = 'received' "
        "GROUP BY task_id) AS r ON r.task_id = t.task_id"
        if j.has("events")
        else "LEFT JOIN (SELECT NULL AS task_id, NULL AS received) AS r ON 0"
    )
    if j.has("attempts") and j.has("tasks"):
        rows = j.rows(
            "SELECT t.method, t.created, a.sent, a.started, a.ended, a.returned, r.received "
            "FROM tasks AS t JOIN attempts AS a ON a.task_id = t.task_id AND a.attempt = "
            "(SELECT MAX(attempt) FROM attempts WHERE task_id = t.task_id) " + received
        )
        source = "the attempt that made each task's result (its last)"
    elif j.has("results", "started", "ended") and j.has("tasks"):
        rows = j.rows(
            "SELECT t.method, t.created, NULL, s.started, s.ended, NULL, r.received "
            "FROM tasks AS t JOIN results AS s ON s.task_id = t.task_id " + received
        )
        source = "final results (this journal has no attempts: only the worker's times)"
    else:
        return [], "not recorded"
    by_method: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_method[str(row[0])].append(row[1:])
    out = []
    for method in sorted(by_method):
        table = np.array([[_f(v) for v in row] for row in by_method[method]], dtype=float)
        hops: dict[str, float | None] = {}
        counts: dict[str, int] = {}
        for i, (key, _, _) in enumerate(HOPS):
            spans = table[:, i + 1] - table[:, i]
            spans = spans[np.isfinite(spans)]
            counts[key] = len(spans)
            hops[key] = float(np.median(spans)) if len(spans) else None
        out.append(MethodLatency(method, len(table), hops, counts))
    return out, source


def _failures(j: _Journal) -> Failures:
    if not j.has("results"):
        return Failures(0, [], [], None, [])
    total = j.one("SELECT COUNT(*) FROM results WHERE success = 0")
    by_reason: list[tuple[str, int]] = []
    by_site: list[tuple[str, int]] = []
    recent: list[FailureRow] = []
    if j.has("results", "reason"):
        by_reason = [
            (str(r), int(n))
            for r, n in j.rows(
                "SELECT COALESCE(reason, '(none)') AS r, COUNT(*) AS n FROM results "
                "WHERE success = 0 GROUP BY r ORDER BY n DESC, r"
            )
        ]
    if j.has("results", "site"):
        by_site = [
            (str(s), int(n))
            for s, n in j.rows(
                "SELECT COALESCE(site, '(no site)') AS s, COUNT(*) AS n FROM results "
                "WHERE success = 0 GROUP BY s ORDER BY n DESC, s"
            )
        ]
    columns = [c if j.has("results", c) else "NULL" for c in ("site", "reason", "message")]
    for task_id, method, site, reason, message, finished in j.rows(
        f"SELECT task_id, method, {columns[0]}, {columns[1]}, {columns[2]}, finished "
        "FROM results WHERE success = 0 ORDER BY finished DESC, task_id LIMIT ?",
        (LAST_FAILURES,),
    ):
        recent.append(FailureRow(str(task_id), str(method), site, reason, message, float(finished)))
    attempts_by_reason = None
    if j.has("attempts"):
        attempts_by_reason = [
            (str(r), int(n))
            for r, n in j.rows(
                "SELECT COALESCE(reason, '(none)') AS r, COUNT(*) AS n FROM attempts "
                "WHERE ok = 0 GROUP BY r ORDER BY n DESC, r"
            )
        ]
    return Failures(int(total), by_reason, by_site, attempts_by_reason, recent)


def _retries(j: _Journal) -> Retries:
    if not j.has("events"):
        return Retries(0, 0, [], None, 0, [], 0)
    total, tasks = j.rows(
        "SELECT COUNT(*), COUNT(DISTINCT task_id) FROM events WHERE state = 'retried'"
    )[0]
    by_site_reason = [
        (str(s), str(r), int(n))
        for s, r, n in j.rows(
            "SELECT COALESCE(site, '(no site)') AS s, COALESCE(detail, '(none)') AS r, "
            "COUNT(*) AS n FROM events WHERE state = 'retried' GROUP BY s, r "
            "ORDER BY n DESC, s, r"
        )
    ]
    moves = None
    moves_total = 0
    if j.has("attempts"):
        moves = [
            (str(a), str(b), int(n))
            for a, b, n in j.rows(
                "SELECT prev, site, COUNT(*) AS n FROM (SELECT site, LAG(site) OVER "
                "(PARTITION BY task_id ORDER BY attempt) AS prev FROM attempts) "
                "WHERE prev IS NOT NULL AND prev != site GROUP BY prev, site "
                "ORDER BY n DESC, prev, site"
            )
        ]
        moves_total = sum(n for _, _, n in moves)
    marks = ", ".join(f"'{s}'" for s in _SITE_EVENTS)
    site_events_total = j.one(f"SELECT COUNT(*) FROM events WHERE state IN ({marks})")
    site_events = [
        SiteEvent(float(t), str(s), site, d)
        for t, s, site, d in j.rows(
            f"SELECT time, state, site, detail FROM events WHERE state IN ({marks}) "
            "ORDER BY seq LIMIT ?",
            (MAX_ROWS,),
        )
    ]
    return Retries(
        int(total),
        int(tasks),
        by_site_reason,
        moves,
        moves_total,
        site_events,
        int(site_events_total),
    )


def _objective(j: _Journal, meta: dict[str, Any]) -> Objective | None:
    declared = meta.get("objective")
    if not isinstance(declared, dict) or not j.has("objective"):
        return None
    rows = j.rows("SELECT time, task_id, value FROM objective ORDER BY seq")
    goal = "min" if str(declared.get("goal")) == "min" else "max"
    times = np.array([float(t) for t, _, _ in rows], dtype=float)
    values = np.array([float(v) for _, _, v in rows], dtype=float)
    best = best_task = best_index = None
    if len(values):
        i = int(np.argmin(values) if goal == "min" else np.argmax(values))
        best, best_task, best_index = float(values[i]), rows[i][1], i + 1
    return Objective(
        str(declared.get("name") or "objective"), goal, times, values, best, best_task, best_index
    )


def read_models(run_dir: Path) -> Models:
    """The model versions of the run's MLflow store (``RUN_DIR/mlflow/mlflow.db``).

    The store is copied first (SQLite's backup API, from a read-only connection) and MLflow's
    client reads the copy: nothing in the run directory is written, and a campaign writing
    to its store meanwhile is not disturbed. MLflow is imported only when the store exists.

    Args:
        run_dir: The campaign's run directory.

    Returns:
        The versions, oldest first per model; ``store`` is None without a store, ``error``
        says why a store could not be read.
    """
    store = Path(run_dir) / MLFLOW_DB
    if not store.is_file():
        return Models(None, [])
    try:
        with tempfile.TemporaryDirectory(prefix="orch-report-") as tmp:
            copy = Path(tmp) / "mlflow.db"
            source = open_readonly(store)
            with closing(source), closing(sqlite3.connect(copy)) as target:
                source.backup(target)
            return Models(store, _model_versions(f"sqlite:///{copy}"))
    except Exception as exc:  # noqa: BLE001 - the rest of the report still stands
        logger.warning("report: cannot read the MLflow store %s", store, exc_info=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return Models(store, [], f"the MLflow store {store} could not be read: {first}")


def _model_versions(uri: str) -> list[ModelVersionRow]:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    out: list[ModelVersionRow] = []
    token = None
    registered: list[Any] = []
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        registered.extend(page)
        token = page.token
        if not token:
            break
    for model in sorted(registered, key=lambda m: m.name):
        aliases: dict[int, list[str]] = defaultdict(list)
        for alias, version in sorted((model.aliases or {}).items()):
            aliases[int(version)].append(alias)
        quoted = model.name.replace("'", "\\'")
        found = client.search_model_versions(f"name = '{quoted}'")
        for mv in sorted(found, key=lambda m: int(m.version)):
            metrics: dict[str, float] = {}
            params: dict[str, str] = {}
            if mv.run_id:
                run = client.get_run(mv.run_id)
                metrics = {k: float(v) for k, v in run.data.metrics.items()}
                params = {k: str(v) for k, v in run.data.params.items()}
            created = mv.creation_timestamp / 1000 if mv.creation_timestamp else None
            out.append(
                ModelVersionRow(
                    model=model.name,
                    version=int(mv.version),
                    created=created,
                    aliases=tuple(aliases.get(int(mv.version), ())),
                    run_id=mv.run_id or "",
                    metrics=metrics,
                    params=params,
                    tags={str(k): str(v) for k, v in (mv.tags or {}).items()},
                )
            )
    return out


# -- plots ------------------------------------------------------------------------------------

_RC: dict[Any, Any] = {
    "svg.fonttype": "none",  # text stays text: small, crisp, selectable
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "axes.edgecolor": "#8a929b",
    "legend.frameon": False,
    "legend.fontsize": 8,
}
_PALETTE = [
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#9c755f",
    "#ff9da7",
    "#bab0ac",
    "#86bcb6",
]
_FAIL = "#d62728"
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.DOTALL)
_WIDTH = 10.0  # inches
_DPI = 110  # of the images inside an SVG


def method_colors(data: ReportData) -> dict[str, str]:
    """A stable color per method (the same in every plot and in the page's legends)."""
    return {m: _PALETTE[i % len(_PALETTE)] for i, m in enumerate(data.methods)}


def plot_svgs(data: ReportData) -> dict[str, str]:
    """Draw the report's plots as inline ``<svg>`` markup (matplotlib's SVG backend).

    No pyplot state is used (figures are plain :class:`matplotlib.figure.Figure` objects), so
    a dashboard thread may call this while a campaign draws its own plots.

    Args:
        data: What :func:`collect` read.

    Returns:
        Plot name (``timeline``, ``utilization``, ``reaction``, ``latency``, ``failures``,
        ``retries``, ``models``, ``objective``) -> ``<svg ...>...</svg>``; a plot without
        data is left out.
    """
    import matplotlib as mpl

    out: dict[str, str] = {}
    colors = method_colors(data)
    drawers = {
        "timeline": lambda: _plot_timeline(data, colors),
        "utilization": lambda: _plot_utilization(data),
        "reaction": lambda: _plot_reaction(data),
        "latency": lambda: _plot_latency(data),
        "failures": lambda: _plot_failures(data),
        "retries": lambda: _plot_retries(data),
        "models": lambda: _plot_models(data),
        "objective": lambda: _plot_objective(data),
    }
    with mpl.rc_context(_RC):
        for name, draw in drawers.items():
            try:
                figure = draw()
            except Exception:  # noqa: BLE001 - one broken plot must not lose the report
                logger.warning("report: the %s plot failed", name, exc_info=True)
                continue
            if figure is not None:
                out[name] = _svg(figure)
    return out


def _text_in(labels: Iterable[Any], size: float = 9.0) -> float:
    """About how wide the longest label is, in inches (a browser's sans-serif: ~0.6 em/char)."""
    longest = max((len(str(label)) for label in labels), default=0)
    return longest * size * 0.6 / 72


def _legend_in(labels: Iterable[Any], size: float = 8.0) -> float:
    """The room a legend right of the axes needs, in inches."""
    return 0.55 + _text_in(labels, size)


def _figure(
    height: float,
    lefts: Sequence[float] = (0.7,),
    right: float = 0.25,
    bottom: float = 0.5,
    top: float = 0.3,
    gap: float = 0.35,
    width: float = _WIDTH,
) -> tuple[Any, list[Any]]:
    """A figure with a row of axes placed by hand (inches), one per entry of ``lefts``.

    ``lefts`` is the room each panel's labels need on its left. A layout engine
    (constrained, tight) would measure the text instead, but it draws the figure several
    times: placing the axes by hand makes every plot about three times faster to render.
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    room = width - sum(lefts) - right - gap * (len(lefts) - 1)
    each = max(room / len(lefts), 0.5)
    axes = []
    x = 0.0
    for left in lefts:
        x += left
        axes.append(
            figure.add_axes(
                (x / width, bottom / height, each / width, max(height - bottom - top, 0.3) / height)
            )
        )
        x += each + gap
    return figure, axes


def _column(
    n: int, panel: float, left: float, right: float, bottom: float, top: float, gap: float
) -> tuple[Any, list[Any]]:
    """A figure with ``n`` axes stacked top to bottom (``panel`` inches high), sharing x."""
    from matplotlib.figure import Figure

    height = bottom + top + n * panel + (n - 1) * gap
    figure = Figure(figsize=(_WIDTH, height))
    axes: list[Any] = []
    for i in range(n):
        y = height - top - (i + 1) * panel - i * gap
        box = (left / _WIDTH, y / height, (_WIDTH - left - right) / _WIDTH, panel / height)
        axes.append(figure.add_axes(box, sharex=axes[0] if axes else None))
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    return figure, axes


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None}, dpi=_DPI)
    text = buffer.getvalue()
    text = _METADATA.sub("", text[text.index("<svg") :], count=1)
    return text.strip()


def _rel(values: np.ndarray, t0: float | None) -> np.ndarray:
    return values - (t0 or 0.0)


TIME_LABEL = "seconds since the run's first change"


def _plot_timeline(data: ReportData, colors: dict[str, str]) -> Any:
    from matplotlib.collections import PolyCollection
    from matplotlib.patches import Patch

    a = data.attempts
    if a is None or not len(a):
        return None
    start = np.where(np.isfinite(a.started), a.started, a.sent)
    end = np.where(np.isfinite(a.ended), a.ended, a.returned)
    start = np.where(np.isfinite(start), start, end)
    end = np.where(np.isfinite(end), end, start)
    keep = np.isfinite(start) & np.isfinite(end)
    if not keep.any():
        return None
    x0 = _rel(start, data.t0)
    x1 = np.maximum(_rel(end, data.t0), x0)
    lo = min(0.0, float(x0[keep].min()))
    span = max(float(x1[keep].max()) - lo, 1e-6)
    x1 = np.maximum(x1, x0 + span * 4e-4)  # an instant attempt still shows as a sliver
    rows = len(data.workers)
    size = 7.0 if rows > 20 else 8.0
    handles = [Patch(facecolor=c, label=m) for m, c in colors.items()]
    if not a.ok.all():
        handles.append(Patch(facecolor="white", edgecolor=_FAIL, hatch="////", label="failed"))
    panel = min(max(0.24 * rows, 1.0), 10.5)
    figure, (ax,) = _figure(
        panel + 0.85,
        lefts=(0.3 + _text_in(data.workers, size),),
        right=_legend_in([h.get_label() for h in handles]),
        top=0.35,
    )
    methods = np.array(a.method, dtype=object)
    many = int(keep.sum()) > GANTT_RASTER_BARS
    vector = keep & ~a.ok if many else keep  # many bars: those that succeeded become an image
    if many:
        _gantt_image(ax, figure, a, keep & a.ok, methods, colors, x0, x1, lo, span, rows)
    if int(vector.sum()) > GANTT_RASTER_BARS:  # many failures too: in the image, red
        _gantt_image(
            ax, figure, a, vector, methods, {m: _FAIL for m in colors}, x0, x1, lo, span, rows
        )
        vector = np.zeros_like(vector)
    y = a.row.astype(float)
    for method, color in colors.items():
        for ok in (True, False):
            mask = vector & (methods == method) & (a.ok == ok)
            if not mask.any():
                continue
            ys, xs, xe = y[mask], x0[mask], x1[mask]
            boxes: Any = np.stack(
                [
                    np.stack([xs, ys - 0.38], 1),
                    np.stack([xe, ys - 0.38], 1),
                    np.stack([xe, ys + 0.38], 1),
                    np.stack([xs, ys + 0.38], 1),
                ],
                1,
            )
            ax.add_collection(
                PolyCollection(
                    boxes,  # an (n, 4, 2) array: matplotlib's fast path
                    closed=False,
                    facecolors=color,
                    edgecolors=_FAIL if not ok else "white",
                    linewidths=0.9 if not ok else 0.3,
                    hatch="////" if not ok else None,
                    zorder=3,
                ),
                autolim=False,  # the limits are set below
            )
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_xlim(lo, lo + span * 1.01)
    step = max(1, math.ceil(rows / 44))
    ax.set_yticks(range(0, rows, step))
    ax.set_yticklabels(data.workers[::step], fontsize=size)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel(TIME_LABEL)
    ax.set_title(f"{len(a)} attempts on {rows} workers (site / host / pid)", loc="left")
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def _gantt_image(
    ax: Any,
    figure: Any,
    a: Attempts,
    mask: np.ndarray,
    methods: np.ndarray,
    colors: dict[str, str],
    x0: np.ndarray,
    x1: np.ndarray,
    lo: float,
    span: float,
    rows: int,
) -> None:
    """Paint the bars of ``mask`` into one image at the axes' own resolution.

    Ten thousand vector bars cost matplotlib about half a second to draw (and the browser
    more); one image of the same bars costs milliseconds and a few tens of kB.
    """
    from matplotlib.colors import to_rgba_array

    sub = 8  # image rows per worker row: the bar fills the middle six
    box = ax.get_position()
    width = max(int(box.width * figure.get_figwidth() * _DPI), 100)
    image = np.zeros((rows * sub, width, 4), dtype=np.uint8)
    first = np.clip(((x0 - lo) / span * width).astype(int), 0, width - 1)
    last = np.clip(np.ceil((x1 - lo) / span * width).astype(int), first + 1, width)
    rgba = {m: (to_rgba_array(c)[0] * 255).astype(np.uint8) for m, c in colors.items()}
    for i in np.flatnonzero(mask):
        top = int(a.row[i]) * sub
        image[top + 1 : top + sub - 1, first[i] : last[i]] = rgba[methods[i]]
    ax.imshow(
        image,
        extent=(lo, lo + span, rows - 0.5, -0.5),
        aspect="auto",
        interpolation="nearest",
        zorder=2,
    )


def _plot_utilization(data: ReportData) -> Any:
    if not data.utilization:
        return None
    n = len(data.utilization)
    panel = 0.95 if n <= 4 else 0.7
    figure, axes = _column(n, panel, left=0.95, right=0.25, bottom=0.5, top=0.3, gap=0.32)
    by_name = {site.name: site for site in data.sites}
    span = float(data.utilization[0].edges[-1])
    for i, (ax, series) in enumerate(zip(axes, data.utilization, strict=True)):
        capacity = series.capacity or max(float(series.busy.max()), 1.0)
        fraction = series.busy / capacity
        color = _PALETTE[i % len(_PALETTE)]
        ax.stairs(fraction, series.edges, fill=True, color=color, alpha=0.3, lw=0)
        ax.stairs(fraction, series.edges, color=color, lw=1.1)
        ax.axhline(1.0, color="#8a929b", lw=0.7, ls="--")
        ax.set_ylim(0, max(1.0, float(fraction.max())) * 1.12)
        ax.set_xlim(0, span)
        ax.set_yticks([0, 0.5, 1.0])
        ax.yaxis.set_major_formatter(_percent_formatter())
        site = by_name.get(series.site)
        workers = (
            f"{series.capacity} worker{'s' if series.capacity != 1 else ''}"
            if series.capacity
            else "capacity not recorded"
        )
        mean = (
            f", {100 * site.utilization:.1f}% busy over the run"
            if site is not None and site.utilization is not None
            else ""
        )
        ax.set_title(f"{series.site} ({workers}{mean})", loc="left", fontsize=9, pad=3)
    axes[-1].set_xlabel(TIME_LABEL)
    figure.text(0.012, 0.5, "busy workers / capacity", rotation=90, va="center", fontsize=9)
    return figure


def _percent_formatter() -> Any:
    from matplotlib.ticker import PercentFormatter

    return PercentFormatter(1.0, decimals=0)


def _plot_reaction(data: ReportData) -> Any:
    r = data.reaction
    if r is None or not r.count:
        return None
    labels = [f"{kind} ({len(v)} attempts)" for kind, v in r.values.items() if len(v)]
    labels += [f"median {r.all_median:.3f} s", f"p95 {r.all_p95:.3f} s"]
    figure, (ax,) = _figure(2.8, lefts=(0.75,), right=_legend_in(labels), top=0.15)
    floor = 1e-4  # seconds: shorter waits (zero included) are drawn in the first bin
    every = np.maximum(np.concatenate([v for v in r.values.values() if len(v)]), floor)
    lo, hi = float(every.min()), float(every.max())
    bins = np.geomspace(lo, hi * 1.0001, 60) if hi > lo * 1.01 else np.geomspace(lo / 2, lo * 2, 5)
    for i, (kind, values) in enumerate(r.values.items()):
        if len(values):
            color = _PALETTE[i % len(_PALETTE)]
            clipped = np.maximum(values, floor)
            ax.hist(clipped, bins=bins, histtype="stepfilled", alpha=0.35, color=color)
            ax.hist(
                clipped,
                bins=bins,
                histtype="step",
                color=color,
                lw=1.2,
                label=f"{kind} ({len(values)} attempts)",
            )
    ax.set_xscale("log")
    if r.all_median is not None:
        median = max(r.all_median, floor)
        ax.axvline(median, color="#333", lw=1, ls="--", label=f"median {r.all_median:.3f} s")
    if r.all_p95 is not None:
        p95 = max(r.all_p95, floor)
        ax.axvline(p95, color=_FAIL, lw=1, ls=":", label=f"p95 {r.all_p95:.3f} s")
    ax.set_xlabel("seconds from an attempt's end to the next start on its site kind (log scale)")
    ax.set_ylabel("attempts")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


_HOP_COLORS = ("#bab0ac", "#76b7b2", "#4e79a7", "#f28e2b", "#b07aa1")


def _plot_latency(data: ReportData) -> Any:
    if not data.latency:
        return None
    rows = len(data.latency)
    labels = [f"{what} ({stamps})" for _, stamps, what in HOPS]
    figure, (ax,) = _figure(
        min(0.7 + 0.42 * rows, 8.0) + 0.25,
        lefts=(0.3 + _text_in([m.method for m in data.latency]),),
        right=_legend_in(labels),
        top=0.15,
    )
    left = np.zeros(rows)
    for (key, _, _), color, label in zip(HOPS, _HOP_COLORS, labels, strict=True):
        widths = np.array([m.hops.get(key) or 0.0 for m in data.latency])
        ax.barh(range(rows), widths, left=left, color=color, label=label, height=0.6)
        left += widths
    ax.set_yticks(range(rows))
    ax.set_yticklabels([m.method for m in data.latency])
    ax.set_ylim(rows - 0.4, -0.6)
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("median seconds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def _bars(ax: Any, pairs: Sequence[tuple[str, int]], color: str, title: str) -> None:
    labels = [p[0] for p in pairs][:15]
    values = [p[1] for p in pairs][:15]
    ax.barh(range(len(values)), values, color=color, height=0.55)
    ax.set_yticks(range(len(values)))
    ax.set_yticklabels(labels)
    ax.set_ylim(max(len(values), 2) - 0.4, -0.6)
    ax.grid(axis="y", visible=False)
    ax.set_title(title, loc="left")
    ax.xaxis.get_major_locator().set_params(integer=True)


def _plot_failures(data: ReportData) -> Any:
    f = data.failures
    reasons = f.attempts_by_reason or []
    if not f.total and not reasons:
        return None
    panels = [
        (pairs, color, title)
        for pairs, color, title in (
            (f.by_reason, _FAIL, "failed tasks by reason"),
            (f.by_site, "#f28e2b", "failed tasks by site"),
            (reasons, "#9c755f", "failed attempts by reason"),
        )
        if pairs  # an old journal may lack reasons or sites
    ]
    if not panels:
        return None
    rows = max(min(len(pairs), 15) for pairs, _, _ in panels)
    lefts = [0.25 + _text_in(p[0] for p in pairs[:15]) for pairs, _, _ in panels]
    figure, axes = _figure(min(0.8 + 0.3 * max(rows, 2), 6.0), lefts=lefts, top=0.3, bottom=0.35)
    for ax, (pairs, color, title) in zip(axes, panels, strict=True):
        _bars(ax, pairs, color, title)
    return figure


def _plot_retries(data: ReportData) -> Any:
    r = data.retries
    if not r.total:
        return None
    by_site: dict[str, Counter[str]] = defaultdict(Counter)
    for site, reason, n in r.by_site_reason:
        by_site[site][reason] += n
    reasons = sorted({reason for _, reason, _ in r.by_site_reason})
    names = sorted(by_site)
    figure, (ax,) = _figure(
        min(0.75 + 0.35 * max(len(names), 2), 6.0),
        lefts=(0.3 + _text_in(names),),
        right=_legend_in(reasons),
        top=0.15,
    )
    left = np.zeros(len(names))
    for i, reason in enumerate(reasons):
        widths = np.array([by_site[s][reason] for s in names], dtype=float)
        ax.barh(
            range(len(names)),
            widths,
            left=left,
            height=0.55,
            label=reason,
            color=_PALETTE[i % len(_PALETTE)],
        )
        left += widths
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names)
    ax.set_ylim(max(len(names), 2) - 0.4, -0.6)
    ax.grid(axis="y", visible=False)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("retries (on the site the attempt failed on)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def _plot_models(data: ReportData) -> Any:
    m = data.models
    if m is None or not m.versions:
        return None
    metric = _main_metric(m.versions)
    if metric is None:
        return None
    by_model: dict[str, list[ModelVersionRow]] = defaultdict(list)
    for row in m.versions:
        by_model[row.model].append(row)
    figure, (ax,) = _figure(2.4, lefts=(0.8,), right=_legend_in(by_model), top=0.15)
    for i, (name, rows) in enumerate(sorted(by_model.items())):
        xs = [r.version for r in rows if metric in r.metrics]
        ys = [r.metrics[metric] for r in rows if metric in r.metrics]
        color = _PALETTE[i % len(_PALETTE)]
        ax.plot(xs, ys, marker="o", color=color, label=name, lw=1.2, ms=4)
        for r in rows:
            if r.aliases and metric in r.metrics:
                ax.annotate(
                    ", ".join(f"@{a}" for a in r.aliases),
                    (r.version, r.metrics[metric]),
                    textcoords="offset points",
                    xytext=(6, 6),
                    fontsize=8,
                    color="#2e7d32",
                )
                ax.plot([r.version], [r.metrics[metric]], "o", ms=8, mfc="none", color="#2e7d32")
    ax.margins(x=0.08, y=0.2)
    ax.set_xlabel("version")
    ax.set_ylabel(metric)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return figure


def _main_metric(versions: Sequence[ModelVersionRow]) -> str | None:
    names = Counter(k for v in versions for k in v.metrics)
    for preferred in ("val_rmse", "rmse", "val_loss", "loss", "val_mae", "mae"):
        if preferred in names:
            return preferred
    return names.most_common(1)[0][0] if names else None


def _plot_objective(data: ReportData) -> Any:
    o = data.objective
    if o is None or not o.count:
        return None
    figure, axes = _figure(2.8, lefts=(0.75, 0.75), top=0.15, gap=0.3)
    best = o.best_so_far()
    count = np.arange(1, o.count + 1)
    # the best-so-far line only needs the values that improved it (and the last one)
    steps = np.flatnonzero(np.r_[True, best[1:] != best[:-1]])
    steps = np.r_[steps, o.count - 1] if steps[-1] != o.count - 1 else steps
    axes[0].plot(
        count,
        o.values,
        ".",
        color="#bab0ac",
        ms=2.5,
        label="each value",
        rasterized=o.count > 2000,  # thousands of dots: an image inside the SVG
    )
    axes[0].step(
        count[steps], best[steps], where="post", color="#4e79a7", lw=1.6, label="best so far"
    )
    axes[0].set_xlabel("simulations (objective values)")
    axes[0].set_ylabel(o.name)
    times = _rel(o.times, data.t0)
    axes[1].step(times[steps], best[steps], where="post", color="#4e79a7", lw=1.6)
    axes[1].set_xlabel(TIME_LABEL)
    axes[1].set_ylabel(f"best {o.name}")
    axes[0].legend(loc="lower right" if o.goal == "max" else "upper right")
    return figure


# -- the page ---------------------------------------------------------------------------------

_CSS = """
:root { --ink:#1f2328; --muted:#5f6b76; --line:#d9dee3; --bg:#f6f7f9; --card:#fff;
  --accent:#4e79a7; --bad:#c62828; --ok:#2e7d32; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
  color:var(--ink); background:var(--bg); }
header { background:#1f2d3d; color:#fff; padding:18px 32px 12px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; }
header .sub { color:#c6d0da; font-size:13px; word-break:break-all; }
nav { margin-top:10px; display:flex; flex-wrap:wrap; gap:4px 14px; font-size:13px; }
nav a { color:#9ec5ee; text-decoration:none; }
nav a:hover { text-decoration:underline; }
main { max-width:1180px; margin:0 auto; padding:16px 24px 40px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:14px 20px 18px; margin:16px 0; }
h2 { font-size:17px; margin:0 0 4px; }
h3 { font-size:14px; margin:14px 0 6px; color:var(--muted); font-weight:600; }
p.lead { margin:0 0 10px; color:var(--muted); font-size:13px; }
p.none { margin:8px 0; padding:10px 12px; background:var(--bg); border-radius:6px;
  color:var(--muted); font-style:italic; }
.cards { display:flex; flex-wrap:wrap; gap:10px; margin:8px 0 12px; }
.card { border:1px solid var(--line); border-radius:6px; padding:8px 14px; min-width:110px; }
.card .label { font-size:11px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
.card .value { font-size:20px; font-weight:600; font-variant-numeric:tabular-nums; }
.card .value.bad { color:var(--bad); } .card .value.ok { color:var(--ok); }
.state { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px;
  background:#e8eef5; color:#1f2d3d; font-weight:600; }
.state.ended { background:#e3f1e4; color:var(--ok); }
.state.failed, .state.interrupted, .state.halted, .state.stopped { background:#fbe4e4;
  color:var(--bad); }
table { border-collapse:collapse; margin:6px 0 8px; font-size:13px; }
th, td { padding:4px 10px; border-bottom:1px solid var(--line); text-align:left;
  vertical-align:top; white-space:nowrap; }
th small { display:block; font-weight:400; }
th { background:var(--bg); font-weight:600; font-size:12px; color:var(--muted); }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
td.msg { max-width:460px; white-space:normal; word-break:break-word; color:var(--muted); }
td.mono, span.mono { font-family:ui-monospace,"DejaVu Sans Mono",monospace; font-size:12px; }
figure { margin:8px 0 4px; }
figure svg { width:100%; height:auto; display:block; }
figcaption { color:var(--muted); font-size:12px; margin-top:2px; }
.cols { display:flex; flex-wrap:wrap; gap:8px 32px; align-items:flex-start; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:5px;
  vertical-align:middle; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:0 0 24px; }
"""

_SECTIONS = (
    ("summary", "Summary"),
    ("timeline", "Timeline"),
    ("utilization", "Utilization"),
    ("reaction", "Reaction time"),
    ("latency", "Latency"),
    ("failures", "Failures"),
    ("retries", "Retries and moves"),
    ("control", "Control actions"),
    ("models", "Models"),
    ("objective", "Objective"),
)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def fmt_seconds(value: float | None) -> str:
    """Seconds as the report prints them (3 decimals; ``–`` when unknown)."""
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 120:
        return f"{int(minutes)} min {rest:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)} h {int(minutes)} min"


def _clock(epoch: float | None, t0: float | None) -> str:
    if epoch is None:
        return "–"
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
    return f"{stamp} (+{epoch - t0:.1f} s)" if t0 is not None else stamp


def _td(value: Any, key: str | None = None, cls: str = "") -> str:
    attrs = f' data-key="{_e(key)}"' if key else ""
    if cls:
        attrs += f' class="{cls}"'
    return f"<td{attrs}>{_e(value)}</td>"


def _table(
    head: Sequence[str | tuple[str, str]],
    rows: Iterable[str],
    numeric: Iterable[int] = (),
    cls: str = "",
) -> str:
    """A table; a heading given as ``(text, detail)`` shows the detail small below it."""
    nums = set(numeric)
    cells = "".join(
        ('<th class="num">' if i in nums else "<th>")
        + (f"{_e(h[0])}<small>{_e(h[1])}</small>" if isinstance(h, tuple) else _e(h))
        + "</th>"
        for i, h in enumerate(head)
    )
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{cells}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _card(label: str, value: Any, key: str, cls: str = "") -> str:
    klass = f"value {cls}".strip()
    return (
        f'<div class="card"><div class="label">{_e(label)}</div>'
        f'<div class="{klass}" data-key="{_e(key)}">{_e(value)}</div></div>'
    )


def _figure_html(svgs: dict[str, str], name: str, caption: str) -> str:
    svg = svgs.get(name)
    if not svg:
        return ""
    return (
        f'<figure class="plot" data-plot="{name}">{svg}<figcaption>{caption}</figcaption></figure>'
    )


def _none(data: ReportData, section: str, default: str) -> str:
    return f'<p class="none">{_e(data.notes.get(section, default))}</p>'


def render_html(data: ReportData, svgs: dict[str, str] | None = None) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no script, no links out).

    Args:
        data: What :func:`collect` read.
        svgs: What :func:`plot_svgs` drew (drawn here when None; ``{}`` for a page without
            plots).

    Returns:
        The page.
    """
    if svgs is None:
        svgs = plot_svgs(data)
    parts = [
        _summary(data),
        _timeline(data, svgs),
        _utilization_html(data, svgs),
        _reaction_html(data, svgs),
        _latency_html(data, svgs),
        _failures_html(data, svgs),
        _retries_html(data, svgs),
        _control_html(data),
        _models_html(data, svgs),
        _objective_html(data, svgs),
    ]
    nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title in _SECTIONS)
    made = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>orch report: {_e(data.campaign)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(data.campaign)}</h1>"
        f'<div class="sub">run dir {_e(data.run_dir)} · report made {_e(made)}</div>'
        f"<nav>{nav}</nav></header><main>{''.join(parts)}</main>"
        f"<footer>orch report · journal read in {data.collected_s:.2f} s</footer>"
        "</body></html>\n"
    )


def _section(sid: str, lead: str, body: str) -> str:
    title = dict(_SECTIONS)[sid]
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{lead_html}{body}</section>'


def _summary(data: ReportData) -> str:
    c = data.counts
    state = _e(data.state)
    cards = [
        f'<div class="card"><div class="label">state</div><div class="value">'
        f'<span class="state {state}" data-key="state">{state}</span></div></div>',
        _card("duration", _duration(data.duration_s), "duration"),
        _card("tasks", c["total"], "total"),
        _card("done", c["done"], "done", "ok"),
        _card("failed", c["failed"], "failed", "bad" if c["failed"] else ""),
        _card("replayed", c["replayed"], "replayed"),
        _card("cancelled", c["cancelled"], "cancelled"),
        _card("unfinished", c["unfinished"], "unfinished"),
        _card("attempts", c["attempts"], "attempts"),
        _card("retries", c["retried"], "retried"),
    ]
    facts = [
        ("first change", _clock(data.t0, None)),
        ("last change", _clock(data.t1, data.t0)),
        ("duration (s)", f"{data.duration_s:.1f}" if data.duration_s is not None else "–"),
    ]
    if data.launched is not None and data.t0 is not None and data.launched - data.t0 > 1:
        facts.append(("latest launch", _clock(data.launched, data.t0)))
    if data.progress:
        facts.append(("progress", data.progress))
    keys = {"duration (s)": "duration_s"}
    fact_rows = [f"<tr><th>{_e(k)}</th>{_td(v, keys.get(k))}</tr>" for k, v in facts]
    site_rows = []
    for s in data.sites:
        status = "down: " + s.down if s.down else ("drained" if s.drained else "")
        site_rows.append(
            "<tr>"
            + _td(s.name)
            + _td(s.kind)
            + _td(s.backend)
            + _td(s.capacity if s.capacity is not None else "?", f"site.{s.name}.capacity", "num")
            + _td(s.attempts, f"site.{s.name}.attempts", "num")
            + _td(s.done, f"site.{s.name}.done", "num")
            + _td(s.failed, f"site.{s.name}.failed", "num")
            + _td(status)
            + "</tr>"
        )
    sites = (
        _table(
            ["site", "kind", "backend", "workers", "attempts", "done", "failed", "state"],
            site_rows,
            numeric=(3, 4, 5, 6),
        )
        if site_rows
        else '<p class="none">no site recorded in this run</p>'
    )
    options = ""
    if data.options:
        rows = [f"<tr><th>{_e(k)}</th>{_td(v, cls='mono')}</tr>" for k, v in data.options.items()]
        options = f"<div><h3>options</h3>{_table(['option', 'value'], rows)}</div>"
    lead = (
        "Tasks: created plus replayed from an earlier run's journal; done and failed count "
        "final results; unfinished tasks have none (yet)."
    )
    body = (
        f'<div class="cards">{"".join(cards)}</div><div class="cols">'
        f"<div><h3>sites</h3>{sites}</div>"
        f"<div><h3>run</h3>{_table(['', ''], fact_rows)}</div>{options}</div>"
    )
    return _section("summary", lead, body)


def _legend(colors: dict[str, str]) -> str:
    return " ".join(
        f'<span><span class="swatch" style="background:{c}"></span>{_e(m)}</span>'
        for m, c in colors.items()
    )


def _timeline(data: ReportData, svgs: dict[str, str]) -> str:
    lead = (
        "One row per worker (site / host / pid); a bar per attempt from its start to its end "
        "on the worker, colored by method; failed attempts are hatched with a red edge "
        "(an attempt the site failed before it ran is drawn from sent to returned)."
    )
    a = data.attempts
    if a is None or not len(a):
        return _section("timeline", lead, _none(data, "timeline", "no attempt recorded"))
    failed = int((~a.ok).sum())
    body = (
        f'<p><span data-key="timeline.attempts">{len(a)}</span> attempts, '
        f'<span data-key="timeline.failed">{failed}</span> failed, on '
        f'<span data-key="timeline.workers">{len(data.workers)}</span> workers. '
        f"{_legend(method_colors(data))}</p>"
        + _figure_html(svgs, "timeline", "Gantt chart of every attempt.")
    )
    return _section("timeline", lead, body)


def _utilization_html(data: ReportData, svgs: dict[str, str]) -> str:
    lead = (
        "Running attempts per site divided by its workers (capacity), averaged over "
        f"{UTILIZATION_BINS} time bins; the table's utilization is busy worker-seconds over "
        "capacity × the run's duration."
    )
    if not data.utilization:
        return _section("utilization", lead, _none(data, "utilization", "no attempt ran"))
    rows = []
    for s in data.sites:
        if not s.attempts:
            continue
        util = f"{100 * s.utilization:.1f}%" if s.utilization is not None else "–"
        rows.append(
            "<tr>"
            + _td(s.name)
            + _td(s.capacity if s.capacity is not None else "?", cls="num")
            + _td(f"{s.busy_s:.1f}", f"site.{s.name}.busy_s", "num")
            + _td(s.peak_busy, f"site.{s.name}.peak_busy", "num")
            + _td(util, f"site.{s.name}.utilization", "num")
            + "</tr>"
        )
    table = _table(
        ["site", "workers", "busy worker-s", "peak busy", "utilization"], rows, numeric=(1, 2, 3, 4)
    )
    body = _figure_html(svgs, "utilization", "Busy workers / capacity over time.") + table
    return _section("utilization", lead, body)


def _reaction_html(data: ReportData, svgs: dict[str, str]) -> str:
    lead = (
        "For each attempt that ended on a worker, the time until the next attempt started on "
        "any worker of a site of the same kind (attempts with no later start are left out): "
        "how fast a freed worker gets new work."
    )
    r = data.reaction
    if r is None or not r.count:
        return _section("reaction", lead, _none(data, "reaction", "no attempt ran"))
    rows = [
        "<tr>"
        + _td(kind)
        + _td(len(values), f"reaction.{kind}.count", "num")
        + _td(fmt_seconds(r.median.get(kind)), f"reaction.{kind}.median", "num")
        + _td(fmt_seconds(r.p95.get(kind)), f"reaction.{kind}.p95", "num")
        + "</tr>"
        for kind, values in r.values.items()
    ]
    rows.append(
        "<tr><th>all</th>"
        + _td(r.count, "reaction.count", "num")
        + _td(fmt_seconds(r.all_median), "reaction.median", "num")
        + _td(fmt_seconds(r.all_p95), "reaction.p95", "num")
        + "</tr>"
    )
    table = _table(["site kind", "attempts", "median s", "p95 s"], rows, numeric=(1, 2, 3))
    body = _figure_html(svgs, "reaction", "Histogram of reaction times.") + table
    return _section("reaction", lead, body)


def _latency_html(data: ReportData, svgs: dict[str, str]) -> str:
    lead = (
        "Median seconds of each hop of a task's life, per method, from "
        f"{_e(data.latency_source)}. Worker times come from the worker's clock; "
        "created → sent of a retried task includes its earlier attempts."
    )
    if not data.latency:
        return _section("latency", lead, _none(data, "latency", "no task finished"))
    head: list[str | tuple[str, str]] = ["method", "tasks"]
    head += [(what, stamps) for _, stamps, what in HOPS]
    head.append(("total", "of the medians"))
    rows = []
    for m in data.latency:
        cells = [_td(m.method), _td(m.tasks, f"latency.{m.method}.tasks", "num")]
        cells += [
            _td(fmt_seconds(m.hops[key]), f"latency.{m.method}.{key}", "num") for key, _, _ in HOPS
        ]
        cells.append(_td(fmt_seconds(m.total), f"latency.{m.method}.total", "num"))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = _table(head, rows, numeric=range(1, len(head)))
    body = _figure_html(svgs, "latency", "Stacked median hop times per method.") + table
    return _section("latency", lead, body)


def _failures_html(data: ReportData, svgs: dict[str, str]) -> str:
    f = data.failures
    lead = (
        "Failed tasks (final results) by reason and by site; failed attempts include those "
        "that were retried and then succeeded."
    )
    if "failures" in data.notes:
        return _section("failures", lead, _none(data, "failures", ""))
    cards = _card("failed tasks", f.total, "failures.total", "bad" if f.total else "")
    if f.attempts_by_reason is not None:
        failed_attempts = sum(n for _, n in f.attempts_by_reason)
        cards += _card("failed attempts", failed_attempts, "failures.attempts")
    if not f.total and not f.attempts_by_reason:
        return _section(
            "failures", lead, f'<div class="cards">{cards}</div><p class="none">nothing failed</p>'
        )
    tables = []
    for title, pairs, key in (
        ("tasks by reason", f.by_reason, "failures.reason"),
        ("tasks by site", f.by_site, "failures.site"),
        ("attempts by reason", f.attempts_by_reason or [], "failures.attempt_reason"),
    ):
        if pairs:
            rows = [f"<tr>{_td(k)}{_td(n, f'{key}.{k}', 'num')}</tr>" for k, n in pairs]
            tables.append(f"<div><h3>{title}</h3>{_table(['', 'count'], rows, (1,))}</div>")
    recent = [
        "<tr>"
        + _td(_clock(r.time, data.t0))
        + _td(r.task_id, cls="mono")
        + _td(r.method)
        + _td(r.site or "–")
        + _td(r.reason or "–")
        + _td(r.message or "", cls="msg")
        + "</tr>"
        for r in f.recent
    ]
    last = ""
    if recent:
        last = f"<h3>the last {len(recent)} failures (newest first)</h3>" + _table(
            ["finished", "task", "method", "site", "reason", "message"], recent
        )
    body = (
        f'<div class="cards">{cards}</div>'
        + _figure_html(svgs, "failures", "Failures by reason and site.")
        + f'<div class="cols">{"".join(tables)}</div>'
        + last
    )
    return _section("failures", lead, body)


def _retries_html(data: ReportData, svgs: dict[str, str]) -> str:
    r = data.retries
    lead = (
        "Retries (journaled <code>retried</code> events: the site the attempt failed on and "
        "why), moves (a task's next attempt on another site) and site outages and drains."
    )
    if "retries" in data.notes:
        return _section("retries", lead, _none(data, "retries", ""))
    cards = (
        _card("retries", r.total, "retries.total")
        + _card("tasks retried", r.tasks, "retries.tasks")
        + _card("moves", r.moves_total if r.moves is not None else "–", "retries.moves")
        + _card("site events", r.site_events_total, "retries.site_events")
    )
    parts = [f'<div class="cards">{cards}</div>']
    parts.append(_figure_html(svgs, "retries", "Retries per site, by reason."))
    cols = []
    if r.by_site_reason:
        rows = [
            f"<tr>{_td(s)}{_td(why)}{_td(n, f'retries.{s}.{why}', 'num')}</tr>"
            for s, why, n in r.by_site_reason
        ]
        cols.append(
            "<div><h3>by site and reason</h3>"
            f"{_table(['site', 'reason', 'retries'], rows, (2,))}</div>"
        )
    if r.moves:
        rows = [
            f"<tr>{_td(a)}{_td(b)}{_td(n, f'moves.{a}.{b}', 'num')}</tr>" for a, b, n in r.moves
        ]
        cols.append(f"<div><h3>moves</h3>{_table(['from', 'to', 'tasks'], rows, (2,))}</div>")
    if cols:
        parts.append(f'<div class="cols">{"".join(cols)}</div>')
    elif not r.total:
        parts.append('<p class="none">no task was retried</p>')
    if r.site_events:
        rows = [
            f"<tr>{_td(_clock(e.time, data.t0))}{_td(e.state)}{_td(e.site)}"
            f"{_td(e.detail or '', cls='msg')}</tr>"
            for e in r.site_events
        ]
        more = (
            f'<p class="lead">the first {len(r.site_events)} of {r.site_events_total}</p>'
            if r.site_events_total > len(r.site_events)
            else ""
        )
        parts.append(
            "<h3>site events</h3>" + more + _table(["time", "event", "site", "detail"], rows)
        )
    return _section("retries", lead, "".join(parts))


def _control_html(data: ReportData) -> str:
    lead = "Control actions (orch cancel, drain, undrain, halt), who asked and what they did."
    if not data.control:
        return _section("control", lead, _none(data, "control", "no control action"))
    shown = data.control[-MAX_ROWS:]
    rows = [
        f"<tr>{_td(_clock(c.time, data.t0))}{_td(c.action)}{_td(c.target or '', cls='mono')}"
        f"{_td(c.user or '')}{_td(c.outcome or '', cls='msg')}</tr>"
        for c in shown
    ]
    more = (
        f'<p class="lead">the last {len(shown)} of {len(data.control)}</p>'
        if len(data.control) > len(shown)
        else ""
    )
    body = (
        f'<div class="cards">{_card("actions", len(data.control), "control.total")}</div>'
        + more
        + _table(["time", "action", "target", "user", "outcome"], rows)
    )
    return _section("control", lead, body)


def _models_html(data: ReportData, svgs: dict[str, str]) -> str:
    lead = (
        "Registered model versions in the run's MLflow store, oldest first, with the training "
        "task that made each, what it was trained on and how many tasks it steered."
    )
    m = data.models
    if m is None or not m.versions:
        return _section("models", lead, _none(data, "models", "this campaign versioned no models"))
    metrics = sorted({k for v in m.versions for k in v.metrics})[:6]
    rows = []
    previous: dict[str, int] = {}
    for v in m.versions:
        lineage = []
        if v.model in previous:
            lineage.append(f"after v{previous[v.model]}")
        previous[v.model] = v.version
        if v.task_id:
            site = v.tags.get("orch.site")
            lineage.append(f"trained by task {v.task_id}" + (f" on {site}" if site else ""))
        if "n_train" in v.params:
            lineage.append(f"on {v.params['n_train']} results")
        key = f"models.{v.model}.{v.version}"
        cells = [
            _td(v.model),
            _td(f"v{v.version}", f"{key}.version"),
            _td(", ".join(f"@{a}" for a in v.aliases)),
            _td(_clock(v.created, None)),
        ]
        cells += [
            _td(f"{v.metrics[k]:.4g}" if k in v.metrics else "–", f"{key}.{k}", "num")
            for k in metrics
        ]
        steered = v.steered
        cells.append(_td(steered if steered is not None else "–", f"{key}.steered", "num"))
        cells.append(_td("; ".join(lineage), cls="msg"))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = ["model", "version", "aliases", "registered", *metrics, "steered", "lineage"]
    numeric = range(4, 5 + len(metrics))
    body = (
        f'<div class="cards">{_card("versions", len(m.versions), "models.versions")}</div>'
        + _figure_html(svgs, "models", "The main metric of each version.")
        + _table(head, rows, numeric)
        + f'<p class="lead">store: <span class="mono">{_e(m.store)}</span></p>'
    )
    return _section("models", lead, body)


def _objective_html(data: ReportData, svgs: dict[str, str]) -> str:
    o = data.objective
    if o is None:
        return _section("objective", "", _none(data, "objective", "no objective"))
    lead = f"{_e(o.name)}, {'higher' if o.goal == 'max' else 'lower'} is better."
    if not o.count:
        return _section("objective", lead, _none(data, "objective", "no value yet"))
    best = f"{o.best:.6g}" if o.best is not None else "–"
    cards = (
        _card(f"best {o.name}", best, "objective.best", "ok")
        + _card("values", o.count, "objective.count")
        + _card("best at value #", o.best_index or "–", "objective.best_index")
    )
    task = (
        f'<p>best value from task <span class="mono" data-key="objective.best_task">'
        f"{_e(o.best_task)}</span></p>"
        if o.best_task
        else ""
    )
    body = (
        f'<div class="cards">{cards}</div>'
        + _figure_html(
            svgs, "objective", "Best so far against simulations (left) and against time (right)."
        )
        + task
    )
    return _section("objective", lead, body)


def write_report(run_dir: Path, output: Path | None = None) -> Path:
    """Write the run's HTML report (``RUN_DIR/report.html`` by default).

    Args:
        run_dir: The campaign's run directory.
        output: Where to write the page instead.

    Returns:
        The path written.

    Raises:
        ConfigError: ``run_dir`` holds no readable journal.
    """
    run_dir = Path(run_dir)
    data = collect(run_dir)
    page = render_html(data, plot_svgs(data))
    target = Path(output) if output is not None else run_dir / REPORT_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_text(page, encoding="utf-8")
    partial.replace(target)
    return target
