"""Reading a run's journal from another process: read-only, leaving no file behind.

``orch status``, ``orch report`` and the dashboard read the journal a running (or ended)
campaign writes; SQLite's WAL lets them read while it writes, without blocking it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any

from orchestrator.exceptions import ConfigError

JOURNAL_NAME = "journal.sqlite"  # the name orchestrator.dispatch.journal writes

STALE_S = 5.0
"""A "running" live snapshot older than this, from a process that is gone, means orch
stopped without a last word (it was killed)."""


def wal_path(path: Path) -> Path:
    """The write-ahead log file of the SQLite database ``path``."""
    return path.with_name(f"{path.name}-wal")


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to an SQLite file that leaves no file behind.

    A WAL-mode database with a write-ahead log (a writer has it open, or died with it open)
    is opened ``mode=ro``: readers share the log's index with the writer and never block it.
    Without a log no writer has the database open, and it is opened ``immutable``: a plain
    read-only open of a WAL database would create ``-wal`` and ``-shm`` files (and fail in a
    directory the reader cannot write). A caller that must not miss a writer starting
    meanwhile checks :func:`wal_path` again after reading (the report's ``collect`` reads
    again then).

    Raises:
        sqlite3.Error: the file cannot be opened as a database.
    """
    flags = "mode=ro" if wal_path(path).exists() else "mode=ro&immutable=1"
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?{flags}"
    db = sqlite3.connect(uri, uri=True, timeout=10, isolation_level=None)
    try:
        db.execute("SELECT 1 FROM sqlite_master LIMIT 1")
    except sqlite3.Error:
        db.close()
        raise
    return db


def connect(run_dir: Path) -> sqlite3.Connection:
    """A read-only connection to ``run_dir``'s journal (see :func:`open_readonly`).

    Raises:
        ConfigError: ``run_dir`` holds no readable journal (one line, with what to give).
    """
    path = run_dir / JOURNAL_NAME
    if not path.is_file():
        where = "no such directory" if not run_dir.is_dir() else f"no {JOURNAL_NAME} in it"
        raise ConfigError(
            f"{run_dir}: not a campaign run directory ({where}); give the 'run dir:' that "
            "`orch launch` printed"
        )
    try:
        return open_readonly(path)
    except sqlite3.Error as exc:
        raise ConfigError(
            f"{path}: cannot read the journal ({exc}); check that it is a campaign journal"
        ) from None


def read_meta(db: sqlite3.Connection) -> dict[str, Any]:
    """The journal's ``meta`` table (JSON values decoded; {} when it has none)."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
        return {}
    out: dict[str, Any] = {}
    for key, value in db.execute("SELECT key, value FROM meta"):
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def run_state(live: dict[str, Any]) -> str:
    """The run's state from its live snapshot (``meta['live']``).

    ``running``, ``ended``, ``halted``, ``interrupted``, ``failed`` as the campaign wrote it,
    ``stopped`` when a "running" snapshot is stale and its orch is gone, ``unknown`` without
    a snapshot (a journal older than the snapshots).
    """
    state = str(live.get("state") or "unknown")
    stamp = live.get("time")
    if state == "running" and isinstance(stamp, int | float):
        if time.time() - stamp > STALE_S and not _alive(live.get("pid")):
            return "stopped"
    return state
