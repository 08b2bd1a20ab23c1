"""Append-only results files: ``<run-dir>/results/<topic>.jsonl``, written off the hot path."""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path
from typing import IO

from orchestrator.models import Result

logger = logging.getLogger(__name__)

_STOP = object()


class ResultsWriter:
    """Writes each result as one JSON line to its topic's file, from a background thread.

    The thread wakes at most every ``interval`` seconds and writes what arrived meanwhile, so
    a busy campaign does not pay a thread wake-up per result on its hot path; ``flush`` and
    ``close`` write at once. A task id is written once: a result already in the files (from
    an earlier run of a resumed campaign) is not written again.
    """

    def __init__(self, directory: Path, interval: float = 0.05):
        self.directory = directory
        self.interval = interval
        self._wake = threading.Event()
        directory.mkdir(parents=True, exist_ok=True)
        self.written: set[str] = set()
        for path in sorted(directory.glob("*.jsonl")):
            self.written.update(_recover(path))
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._files: dict[str, IO[str]] = {}
        self._thread = threading.Thread(target=self._run, name="orch-results", daemon=True)
        self._thread.start()

    def write(self, result: Result) -> None:
        """Queue one result for writing."""
        self._queue.put(result)

    def _file(self, topic: str) -> IO[str]:
        handle = self._files.get(topic)
        if handle is None:
            handle = open(self.directory / f"{topic}.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            self._files[topic] = handle
        return handle

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if self._wake.wait(self.interval):  # gather a batch unless asked to hurry
                self._wake.clear()
            batch = [item]
            while True:  # take whatever else is waiting, then flush once
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            touched = set()
            for entry in batch:
                if isinstance(entry, threading.Event):
                    for handle in self._files.values():
                        handle.flush()
                    entry.set()
                    continue
                if entry is _STOP:
                    for handle in self._files.values():
                        handle.flush()
                        handle.close()
                    self._files.clear()
                    return
                assert isinstance(entry, Result)
                if entry.task_id in self.written:
                    continue
                self.written.add(entry.task_id)
                try:
                    handle = self._file(entry.topic)
                    handle.write(entry.to_json() + "\n")
                    touched.add(entry.topic)
                except Exception:  # noqa: BLE001 - one unwritable result must not stop the rest
                    logger.exception("could not write result %s", entry.task_id)
            for topic in touched:
                self._files[topic].flush()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued so far is written; False if ``timeout`` passed."""
        if not self._thread.is_alive():
            return True
        marker = threading.Event()
        self._queue.put(marker)
        self._wake.set()
        return marker.wait(timeout)

    def close(self) -> None:
        """Write everything queued so far, then close the files."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._wake.set()
            self._thread.join()


def _recover(path: Path) -> list[str]:
    """Task ids in a results file; a last line cut short by a crash is removed first.

    Only the last line can be partial (the file is only appended to); any other line that
    does not parse is kept as it is and skipped.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    ids: list[str] = []
    for line in lines:
        try:
            ids.append(json.loads(line)["task_id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("%s: skipping a line that is not a result", path)
    if tail:
        logger.warning("%s: removing a partial last line (%d bytes)", path, len(tail))
        with open(path, "r+b") as handle:
            handle.truncate(len(data) - len(tail))
    return ids
