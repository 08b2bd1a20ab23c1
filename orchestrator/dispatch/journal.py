"""The campaign journal: every task state change and every final result, in SQLite (WAL).

The dispatcher appends to the journal *before* it acts on a change (sends a task, delivers a
result), so a campaign killed at any point (SIGKILL included) leaves a journal that says what
was completed. ``orch launch --resume RUN_DIR`` reads it back: a task whose method and inputs
match a completed entry gets the journaled result at once instead of running again (like
Parsl's checkpointing); everything else runs again.

A final result is written synchronously, in one statement, before the dispatcher hands it
to the thinker. The other state changes (created, waiting, sent, retried...) are written by a
background thread in one transaction every :data:`EVENT_BATCH_SECONDS`: losing the last few in a
crash cannot lose a result (a task without a journaled result runs again on resume), and it
keeps the journal off the dispatch hot path. ``synchronous=NORMAL``: durable when the process
dies (the data is in the WAL file); an operating-system crash may lose the last commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.apps.failures import summary_line
from orchestrator.exceptions import ConfigError
from orchestrator.models import SITE_FAILURE, Result

logger = logging.getLogger(__name__)

JOURNAL_NAME = "journal.sqlite"
"""File name of the journal inside a run directory."""

EVENT_BATCH_SECONDS = 0.05
"""How often the background thread commits the state changes queued meanwhile."""

_STOP = object()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    task_id TEXT NOT NULL,
    state TEXT NOT NULL,
    site TEXT,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    topic TEXT NOT NULL,
    input_key TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    task_id TEXT PRIMARY KEY,
    input_key TEXT,
    method TEXT NOT NULL,
    topic TEXT NOT NULL,
    success INTEGER NOT NULL,
    memo INTEGER NOT NULL,
    finished REAL NOT NULL,
    result BLOB
);
CREATE TABLE IF NOT EXISTS attempts (
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    method TEXT NOT NULL,
    site TEXT NOT NULL,
    host TEXT,
    pid INTEGER,
    sent REAL,
    started REAL,
    ended REAL,
    returned REAL,
    ok INTEGER NOT NULL,
    reason TEXT,
    message TEXT,
    PRIMARY KEY (task_id, attempt)
);
CREATE TABLE IF NOT EXISTS control (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    user TEXT,
    outcome TEXT
);
CREATE TABLE IF NOT EXISTS objective (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    task_id TEXT,
    value REAL NOT NULL
);
"""

_RESULT_COLUMNS = {
    "site": "TEXT",
    "reason": "TEXT",
    "message": "TEXT",
    "started": "REAL",
    "ended": "REAL",
    "retries": "INTEGER",
}
"""Columns of ``results`` that journals written before them lack (added on open)."""


def input_key(method: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """A digest of a call's method and inputs, or ``None`` when the inputs cannot be pickled.

    Two calls with equal method name and equally pickled inputs (same values, same order of
    keyword arguments after sorting) get the same key.
    """
    try:
        data = pickle.dumps((method, tuple(args), sorted(kwargs.items())), protocol=5)
    except Exception:  # noqa: BLE001 - e.g. a lock or a generator among the inputs
        return None
    return hashlib.blake2b(data, digest_size=20).hexdigest()


def _dump_result(result: Result) -> bytes | None:
    try:
        return pickle.dumps(result, protocol=5)
    except Exception:  # noqa: BLE001 - a value pickle cannot hold: try cloudpickle
        try:
            import cloudpickle

            return bytes(cloudpickle.dumps(result))
        except Exception:  # noqa: BLE001 - then the result is journaled without its value
            return None


@dataclass
class JournalSummary:
    """What a journal holds, for ``--resume`` and reports."""

    results: int
    memoizable: int
    last_event: float | None
    meta: dict[str, str]


class Journal:
    """Appends task state changes and final results to ``run_dir/journal.sqlite``.

    Args:
        run_dir: The campaign directory.
        resume: Load the completed results of an earlier run of this directory so that
            :meth:`replay` can hand them back.

    Raises:
        ConfigError: the journal cannot be created or read (one line: path and cause).
    """

    def __init__(self, run_dir: Path, resume: bool = False):
        self.path = run_dir / JOURNAL_NAME
        self._lock = threading.Lock()
        self._memo: dict[str, deque[str]] = {}
        self.replayed = 0
        self._events: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            have = {row[1] for row in self._db.execute("PRAGMA table_info(results)")}
            for column, kind in _RESULT_COLUMNS.items():
                if column not in have:
                    self._db.execute(f"ALTER TABLE results ADD COLUMN {column} {kind}")
        except sqlite3.Error as exc:
            raise ConfigError(
                f"journal {self.path}: cannot open ({exc}); check that the run directory is "
                f"writable and not a copy in progress"
            ) from None
        if resume:
            self._load_memo()

    # -- writing ----------------------------------------------------------------------------

    def set_meta(self, values: Mapping[str, Any]) -> None:
        """Store run facts (campaign, options, sites directory) as JSON strings."""
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                [(k, json.dumps(v)) for k, v in values.items()],
            )

    def meta(self) -> dict[str, Any]:
        """The run facts stored with :meth:`set_meta`."""
        with self._lock:
            rows = self._db.execute("SELECT key, value FROM meta").fetchall()
        return {k: json.loads(v) for k, v in rows}

    def created(self, task_id: str, method: str, topic: str, key: str | None, at: float) -> None:
        """Journal a new task with its input key (queued: committed within a batch period)."""
        self._queue(
            (
                "INSERT OR IGNORE INTO tasks (task_id, method, topic, input_key, created) "
                "VALUES (?, ?, ?, ?, ?)",
                (task_id, method, topic, key, at),
            ),
            (
                "INSERT INTO events (time, task_id, state) VALUES (?, ?, 'created')",
                (at, task_id),
            ),
        )

    def event(self, task_id: str, state: str, site: str | None = None, detail: str = "") -> None:
        """Journal one state change of a task (queued: committed within a batch period)."""
        self._queue(
            (
                "INSERT INTO events (time, task_id, state, site, detail) VALUES (?, ?, ?, ?, ?)",
                (time.time(), task_id, state, site, detail or None),
            )
        )

    def _queue(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_events, name="orch-journal", daemon=True
                    )
                    self._writer.start()
        for statement in statements:
            self._events.put(statement)

    def _write_events(self) -> None:
        while True:
            first = self._events.get()
            time.sleep(EVENT_BATCH_SECONDS)  # gather a batch: one commit for all of it
            batch = [first]
            while True:
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            stop = False
            flushed: list[threading.Event] = []
            statements: list[tuple[str, tuple[Any, ...]]] = []
            for item in batch:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    flushed.append(item)
                else:
                    statements.append(item)  # type: ignore[arg-type]
            if statements:
                with self._lock:
                    try:
                        self._db.execute("BEGIN")
                        for sql, params in statements:
                            self._db.execute(sql, params)
                        self._db.execute("COMMIT")
                    except sqlite3.Error:
                        logger.exception("journal: could not write %d events", len(statements))
                        if self._db.in_transaction:
                            self._db.execute("ROLLBACK")
            for marker in flushed:
                marker.set()
            if stop:
                return

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every state change queued so far is committed."""
        if self._writer is None or not self._writer.is_alive():
            return
        marker = threading.Event()
        self._events.put(marker)
        marker.wait(timeout)

    def finished(self, result: Result, key: str | None) -> None:
        """Journal a task's final result (value included, or the proxy that refers to it).

        Successes and failures of the task itself are kept for replay; failures of the site
        (it was down, unreachable) are not, so a resumed campaign tries those tasks again.
        """
        info = result.failure_info
        memo = key is not None and (result.success or (info is not None and info.where == "task"))
        if info is not None and info.reason == SITE_FAILURE:
            memo = False
        blob = _dump_result(result) if memo else None
        state = "done" if result.success else "failed"
        message = summary_line(info.message) or None if info is not None else None
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO results (task_id, input_key, method, topic, success, "
                "memo, finished, result, site, reason, message, started, ended, retries) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    result.task_id,
                    key,
                    result.method,
                    result.topic,
                    int(bool(result.success)),
                    int(blob is not None),
                    time.time(),
                    blob,
                    result.site,
                    (info.reason or info.exception_type) if info is not None else None,
                    message,
                    result.timestamps.started,
                    result.timestamps.finished,
                    result.retries,
                ),
            )
        detail = (info.reason or info.exception_type) if info is not None else ""
        self.event(result.task_id, state, result.site, detail)

    def attempt(
        self,
        task_id: str,
        attempt: int,
        method: str,
        site: str,
        times: tuple[float | None, float | None, float | None, float | None],
        ok: bool,
        host: str | None = None,
        pid: int | None = None,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        """Journal one finished attempt of a task on a site (queued, like :meth:`event`).

        ``times`` are ``(sent, started, ended, returned)``: sent by orch, started and ended on
        the worker, returned to orch. The report draws the workers' timelines from these.
        """
        sent, started, ended, returned = times
        self._queue(
            (
                "INSERT OR REPLACE INTO attempts (task_id, attempt, method, site, host, pid, "
                "sent, started, ended, returned, ok, reason, message) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    task_id,
                    attempt,
                    method,
                    site,
                    host,
                    pid,
                    sent,
                    started,
                    ended,
                    returned,
                    int(ok),
                    reason,
                    message,
                ),
            )
        )

    def control(self, action: str, target: str, user: str, outcome: str) -> None:
        """Journal a control action (cancel, drain, undrain, halt) and what it did, now."""
        with self._lock:
            self._db.execute(
                "INSERT INTO control (time, action, target, user, outcome) VALUES (?, ?, ?, ?, ?)",
                (time.time(), action, target, user, outcome),
            )

    def objective(self, value: float, task_id: str | None) -> None:
        """Journal one value of the campaign's objective (queued, like :meth:`event`)."""
        self._queue(
            (
                "INSERT INTO objective (time, task_id, value) VALUES (?, ?, ?)",
                (time.time(), task_id, float(value)),
            )
        )

    def live(self, snapshot: Mapping[str, Any]) -> None:
        """Replace the live snapshot (``meta['live']``) that ``orch status`` reads (queued)."""
        self._queue(
            (
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('live', ?)",
                (json.dumps(snapshot, default=str),),
            )
        )

    # -- reading back -----------------------------------------------------------------------

    def _load_memo(self) -> None:
        rows = self._db.execute(
            "SELECT input_key, task_id FROM results WHERE memo = 1 ORDER BY finished"
        ).fetchall()
        for key, task_id in rows:
            self._memo.setdefault(key, deque()).append(task_id)

    def replay(self, key: str | None) -> Result | None:
        """Take the next unused journaled result for ``key`` (each is handed out once)."""
        if key is None or not self._memo:
            return None
        with self._lock:
            ids = self._memo.get(key)
            if not ids:
                return None
            task_id = ids.popleft()
            row = self._db.execute(
                "SELECT result FROM results WHERE task_id = ?", (task_id,)
            ).fetchone()
        try:
            result: Result = pickle.loads(row[0])
        except Exception:  # noqa: BLE001 - e.g. the class of a value no longer imports
            logger.warning("journaled result %s cannot be loaded; running it again", task_id)
            return None
        self.replayed += 1
        return result

    def completed_results(self, skip: set[str] | frozenset[str] = frozenset()) -> list[Result]:
        """Journaled final results that can be loaded (oldest first), except ``skip`` task ids.

        Only the results not skipped are unpickled (a resume skips those already in the
        results files, usually almost all of them).
        """
        with self._lock:
            ids = self._db.execute(
                "SELECT task_id FROM results WHERE memo = 1 ORDER BY finished"
            ).fetchall()
            wanted = [task_id for (task_id,) in ids if task_id not in skip]
            rows = [
                (
                    task_id,
                    self._db.execute(
                        "SELECT result FROM results WHERE task_id = ?", (task_id,)
                    ).fetchone()[0],
                )
                for task_id in wanted
            ]
        out = []
        for task_id, blob in rows:
            try:
                out.append(pickle.loads(blob))
            except Exception:  # noqa: BLE001 - reported, the rest still load
                logger.warning("journaled result %s cannot be loaded", task_id)
        return out

    def summary(self) -> JournalSummary:
        """Counts of what the journal holds."""
        self.flush()
        with self._lock:
            results, memo = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(memo), 0) FROM results"
            ).fetchone()
            (last,) = self._db.execute("SELECT MAX(time) FROM events").fetchone()
        meta = self.meta()
        return JournalSummary(results=results, memoizable=memo, last_event=last, meta=meta)

    def close(self) -> None:
        """Commit queued state changes, checkpoint the WAL into the database file, close it."""
        if self._writer is not None and self._writer.is_alive():
            self._events.put(_STOP)
            self._writer.join()
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                logger.warning("journal checkpoint failed", exc_info=True)
            self._db.close()


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a campaign journal."""
    return (path / JOURNAL_NAME).is_file()
