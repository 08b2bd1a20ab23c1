"""Reading a run's journal from another process: read-only, leaving no file behind.

``orch status``, ``orch report`` and the dashboard read the journal a running (or ended)
campaign writes; SQLite's WAL lets them read while it writes, without blocking it.
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from pathlib import Path

from orchestrator.exceptions import ConfigError

JOURNAL_NAME = "journal.sqlite"  # the name orchestrator.dispatch.journal writes


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
