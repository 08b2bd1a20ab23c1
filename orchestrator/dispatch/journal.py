"""The campaign journal: every task state change and every final result, in SQLite (WAL).

The dispatcher appends to the journal *before* it acts on a change (sends a task, delivers a
result), so a campaign killed at any point (SIGKILL included) leaves a journal that says what
was completed. ``orch launch --resume RUN_DIR`` reads it back: a task whose method and inputs
match a completed entry gets the journaled result at once instead of running again (like
Parsl's checkpointing); everything else runs again.

A final result is written *before* it is handed to the thinker, as one record appended to
``journal.results.log`` beside the database (one ``write``: a few microseconds, where a SQLite
commit of its rows costs a hundred or more). A background thread then puts the results and every
other state change (created, waiting, sent, retried...) into the database, in one transaction
every :data:`EVENT_BATCH_SECONDS`, and the log is emptied once all it holds is in the database.
When a campaign dies, the records not yet in the database are read back into it the next time
the journal is opened (``--resume``; a record cut short by the crash is dropped, and its task
runs again). Losing the last state changes cannot lose a result: a task without a journaled
result runs again on resume. Both files survive the process being killed (the data is in the
operating system's cache: ``synchronous=NORMAL`` for the database, no ``fsync`` for the log); an
operating-system crash may lose the last writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import queue
import sqlite3
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from orchestrator.apps.failures import summary_line
from orchestrator.exceptions import ConfigError
from orchestrator.models import SITE_FAILURE, Result

logger = logging.getLogger(__name__)

JOURNAL_NAME = "journal.sqlite"
"""File name of the journal inside a run directory."""

RESULT_LOG_NAME = "journal.results.log"
"""The append-only log of final results not yet in the database (beside it)."""

_LOG_ROTATE_BYTES = 16 << 20
"""The log is emptied when it is past this size and all it holds is in the database."""

_FRAME = struct.Struct("<II")
"""A log record's header: its length and CRC-32."""

EVENT_BATCH_SECONDS = 0.05
"""How often the background thread commits the state changes queued meanwhile."""

_STOP = object()

_EVENT = "INSERT INTO events (time, task_id, state, site, detail) VALUES (?, ?, ?, ?, ?)"
"""Every state change is this one statement, so a batch writes them with one executemany."""


@dataclass(slots=True)
class _Logged:
    """A final result in the log, waiting for the writer to put its rows in the database."""

    rows: list[tuple[str, tuple[Any, ...]]]


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
    digest = _Digest()
    try:  # streamed: pickle hands large buffers to write() without copying them first
        pickle.Pickler(digest, protocol=5).dump((method, tuple(args), sorted(kwargs.items())))
    except Exception:  # noqa: BLE001 - e.g. a lock or a generator among the inputs
        return None
    return digest.hash.hexdigest()


class _Digest:
    """A file-like sink that hashes what is written (the same digest as of the pickle)."""

    def __init__(self) -> None:
        self.hash = hashlib.blake2b(digest_size=20)

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


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
        self._hurry = threading.Event()
        self._writer: threading.Thread | None = None
        self._closed = False
        self._db_closed = False
        self._log_path = run_dir / RESULT_LOG_NAME
        self._log_lock = threading.Lock()
        self._log: BinaryIO | None = None
        """Opened at the first result handed over (a journal only read makes no log)."""
        self._log_pending = 0
        """Records appended to the log and not yet committed to the database."""
        self._commit_failed = False
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
            self._import_log()
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(
                f"journal {self.path}: cannot open ({exc}); check that the run directory is "
                f"writable and not a copy in progress"
            ) from None
        if resume:
            self._load_memo()

    def _import_log(self) -> None:
        """Put the results an earlier process logged but did not commit into the database."""
        try:
            data = self._log_path.read_bytes()
        except FileNotFoundError:
            return
        fresh: list[tuple[str, tuple[Any, ...]]] = []
        count = 0
        position = 0
        while position + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, position)
            record = data[position + _FRAME.size : position + _FRAME.size + length]
            if len(record) < length or zlib.crc32(record) != crc:
                break  # cut short by the crash: that task runs again on resume
            position += _FRAME.size + length
            task_id, rows = pickle.loads(record)
            known = "SELECT 1 FROM results WHERE task_id = ?"
            if self._db.execute(known, (task_id,)).fetchone() is None:  # not committed before
                fresh.extend(rows)
                count += 1
        if fresh and not self._commit(fresh):
            raise sqlite3.OperationalError(f"cannot write the results in {self._log_path.name}")
        if count:
            logger.info("journal: %d result(s) read back from %s", count, self._log_path.name)
        self._log_path.unlink()

    def _commit(self, statements: list[tuple[str, tuple[Any, ...]]]) -> bool:
        """Write statements in one transaction, one executemany per statement kind.

        Returns:
            Whether they were committed (a failure is logged and rolled back).
        """
        grouped: dict[str, list[tuple[Any, ...]]] = {}  # a kind's rows keep their order
        for sql, params in statements:
            grouped.setdefault(sql, []).append(params)
        with self._lock:
            try:
                self._db.execute("BEGIN")
                for sql, rows in grouped.items():
                    self._db.executemany(sql, rows)
                self._db.execute("COMMIT")
            except sqlite3.Error:
                logger.exception("journal: could not write %d events", len(statements))
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._commit_failed = True
                return False
        return True

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
            (_EVENT, (at, task_id, "created", None, None)),
        )

    def event(self, task_id: str, state: str, site: str | None = None, detail: str = "") -> None:
        """Journal one state change of a task (queued: committed within a batch period)."""
        self._queue((_EVENT, (time.time(), task_id, state, site, detail or None)))

    def _queue(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        self._start_writer()
        for statement in statements:
            self._events.put(statement)

    def _start_writer(self) -> None:
        if self._writer is None:
            with self._lock:
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_events, name="orch-journal", daemon=True
                    )
                    self._writer.start()

    def _write_events(self) -> None:
        while True:
            first = self._events.get()
            # Gather a batch for one commit; a flush cuts the wait short
            if self._hurry.wait(EVENT_BATCH_SECONDS):
                self._hurry.clear()
            batch = [first]
            while True:
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            stop = False
            flushed: list[threading.Event] = []
            statements: list[tuple[str, tuple[Any, ...]]] = []
            logged = 0
            for item in batch:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    flushed.append(item)
                elif isinstance(item, _Logged):
                    logged += 1
                    statements.extend(item.rows)
                else:
                    statements.append(item)  # type: ignore[arg-type]
            committed = self._commit(statements) if statements else True
            if logged and committed:  # else the log keeps them for the next open
                with self._log_lock:
                    self._log_pending -= logged
                    log = self._log
                    if (
                        self._log_pending == 0
                        and log is not None
                        and log.tell() > _LOG_ROTATE_BYTES
                    ):
                        log.truncate(0)
            for marker in flushed:
                marker.set()
            if stop:
                return
            del batch, statements, first  # not held while waiting for the next batch

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every state change queued so far is committed."""
        if self._writer is None or not self._writer.is_alive():
            return
        marker = threading.Event()
        self._events.put(marker)
        self._hurry.set()
        marker.wait(timeout)

    def finished(
        self, result: Result, key: str | None, then: Callable[[], None] | None = None
    ) -> None:
        """Journal a task's final result (value included, or the proxy that refers to it).

        Successes and failures of the task itself are kept for replay; failures of the site
        (it was down, unreachable) are not, so a resumed campaign tries those tasks again.

        Args:
            result: The final result.
            key: Its task's input key (``None``: not replayable).
            then: Called once the result is in the log (the dispatcher hands the result to
                the thinker there); the database has it within a batch period. Without it
                the result is committed to the database before this returns.
        """
        rows = self._result_rows(result, key)
        if then is None or self._closed:
            self._write_now(rows, result.task_id)
        else:
            record = pickle.dumps((result.task_id, rows), protocol=5)
            with self._log_lock:
                if self._log is None:
                    self._log = open(self._log_path, "ab", buffering=0)  # noqa: SIM115
                self._log.write(_FRAME.pack(len(record), zlib.crc32(record)) + record)
                self._log_pending += 1
            self._start_writer()
            self._events.put(_Logged(rows))
        if then is not None:
            then()

    def _write_now(self, rows: list[tuple[str, tuple[Any, ...]]], task_id: str) -> None:
        if self._db_closed:
            logger.warning("journal closed: result %s is not journaled", task_id)
            return
        self._commit(rows)

    def _result_rows(self, result: Result, key: str | None) -> list[tuple[str, tuple[Any, ...]]]:
        """The statements that journal a final result: its row and its final event."""
        info = result.failure_info
        memo = key is not None and (result.success or (info is not None and info.where == "task"))
        if info is not None and info.reason == SITE_FAILURE:
            memo = False
        # bulk inputs sent by proxy are left out: a replay re-attaches the new call's own
        blob = _dump_result(result.without_proxied_inputs()) if memo else None
        message = summary_line(info.message) or None if info is not None else None
        detail = (info.reason or info.exception_type) if info is not None else None
        now = time.time()
        return [
            (
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
                    now,
                    blob,
                    result.site,
                    detail,
                    message,
                    result.timestamps.started,
                    result.timestamps.finished,
                    result.retries,
                ),
            ),
            (
                _EVENT,
                (now, result.task_id, "done" if result.success else "failed", result.site, detail),
            ),
        ]

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
        self._closed = True
        if self._writer is not None and self._writer.is_alive():
            self._events.put(_STOP)
            self._hurry.set()
            self._writer.join()
        late: list[tuple[str, tuple[Any, ...]]] = []
        while True:  # results logged as the writer stopped
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Logged):
                late.extend(item.rows)
        committed = self._commit(late) if late else True
        with self._log_lock:
            if self._log is not None:
                self._log.close()
            if committed and not self._commit_failed:  # all it holds is in the database
                self._log_path.unlink(missing_ok=True)
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                logger.warning("journal checkpoint failed", exc_info=True)
            self._db.close()
            self._db_closed = True


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` holds a campaign journal."""
    return (path / JOURNAL_NAME).is_file()
