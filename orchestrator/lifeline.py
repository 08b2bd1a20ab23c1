"""Every process orch starts dies with it, ``kill -9`` of orch included.

While a campaign runs, orch's environment holds a campaign tag (:data:`TAG_ENV`), so every
process it starts inherits it: interchanges, worker pools and each of their
``multiprocessing`` workers, the MLflow server and its children, whatever a task starts.
Containerized workers whose runtime cleans the environment are found as descendants of a
tagged process.

Three things use the tag:

- a **watchdog** process (``python -m orchestrator.lifeline``), started in its own session
  when the campaign starts, waits for orch's process to end; if orch ends without cleaning
  up (``kill -9``, a crash), it ends every tagged process and exits;
- orch itself, on its way out, ends any tagged process still alive, then the watchdog;
- the run directory's ``processes.json`` keeps the tag and orch's process id, so that
  ``orch launch --resume`` (and any later ``orch launch`` in the same runs folder) ends the
  processes of an earlier run whose orch and watchdog both died.

Processes are ended by PID, after checking the tag in ``/proc/PID/environ``: a process of
another campaign, or of another user, is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

logger = logging.getLogger(__name__)

TAG_ENV = "ORCH_CAMPAIGN_TAG"
"""Environment variable holding the running campaign's tag."""

RECORD = "processes.json"
"""The run directory's record of the campaign's tag and orch's process."""

TERM_GRACE_S = 3.0
"""Seconds a process gets to exit after SIGTERM before it is sent SIGKILL."""

CLOCK_SLACK_S = 0.05
"""How much earlier than the campaign's start a recorded process's start time may read (the
kernel counts start times in clock ticks). Processes started before the campaign, e.g. a
server a test started just before, are not the campaign's and are left alone."""

_active: list[str] = []  # tags of the lifelines open in this process, outermost first


def tagged_processes(tag: str, *, exclude: set[int] | None = None) -> list[psutil.Process]:
    """Live processes carrying ``tag`` in their environment, and all their descendants.

    Args:
        tag: A campaign tag.
        exclude: Process ids left out (with their descendants they are still searched).
    """
    skip = set(exclude or ()) | {os.getpid()}
    uid = os.getuid()
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["uids", "status"]):
        try:
            if proc.info["uids"] is not None and proc.info["uids"].real != uid:
                continue
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TAG_ENV) != tag:
                continue
            found.setdefault(proc.pid, proc)
            for child in proc.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.Error:  # gone meanwhile, or not ours to read
            continue
    return [p for pid, p in found.items() if pid not in skip]


def end_processes(procs: list[psutil.Process], grace: float = TERM_GRACE_S) -> int:
    """SIGTERM ``procs``, SIGKILL those alive after ``grace`` s; returns how many were ended."""
    live = []
    for proc in procs:
        try:
            proc.terminate()
            live.append(proc)
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(live, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=grace)
    return len(live)


def reap(
    tag: str,
    *,
    exclude: set[int] | None = None,
    run_dir: Path | None = None,
    since: float = 0.0,
    renamed_only: bool = False,
) -> int:
    """End every process of the campaign ``tag``; returns how many there were.

    With ``run_dir``, the processes its :data:`PIDS` lists (started at ``since`` or later)
    are ended too; with ``renamed_only``, only orch's own children whose environment cannot
    show a tag (a ``setproctitle`` emptied it: an engine's interchange). While orch lives,
    other untagged processes are not the campaign's: a program that hosts a campaign (a test)
    starts its own servers, and their engines rename themselves too.
    """
    procs = tagged_processes(tag, exclude=exclude)
    if run_dir is not None:
        seen = {p.pid for p in procs} | set(exclude or ())
        recorded = [p for p in recorded_processes(run_dir, since) if p.pid not in seen]
        procs += [p for p in recorded if not renamed_only or _renamed_child(p)]
    if not procs:
        return 0
    logger.info(
        "ending %d process(es) of campaign %s: %s",
        len(procs),
        tag,
        ", ".join(str(p.pid) for p in procs),
    )
    return end_processes(procs)


def _renamed_child(proc: psutil.Process) -> bool:
    """Whether ``proc`` is an interchange of this process's engines.

    That is a child of this process that renamed itself ``parsl: ...`` (which leaves its
    environ empty). Other renamed children (a Globus Compute endpoint a test started, say)
    are not the campaign's.
    """
    try:
        title = " ".join(proc.cmdline())
        return proc.ppid() == os.getpid() and title.startswith("parsl:") and not proc.environ()
    except psutil.Error:
        return False


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """A run directory's ``processes.json``, or None when there is none (or it is unreadable)."""
    try:
        record = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _alive(pid: int, create_time: float | None) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE and (
            create_time is None or abs(proc.create_time() - create_time) < 0.01
        )
    except psutil.Error:
        return False


def owner_alive(record: dict[str, Any]) -> bool:
    """Whether the orch process a record names is still running (the same process)."""
    pid = record.get("pid")
    return isinstance(pid, int) and _alive(pid, record.get("create_time"))


def reap_stale(run_dir: Path, *, siblings: bool = True) -> int:
    """End the processes of earlier runs whose orch died without ending them.

    Looks at ``run_dir`` and, with ``siblings``, at the other run directories beside it.

    Returns:
        How many processes were ended.
    """
    dirs = [run_dir]
    if siblings and run_dir.parent.is_dir():
        with contextlib.suppress(OSError):
            dirs += [d for d in run_dir.parent.iterdir() if d != run_dir and (d / RECORD).is_file()]
    ended = 0
    for folder in dirs:
        record = read_record(folder)
        if not record or record.get("ended") or owner_alive(record):
            continue
        tag = record.get("tag")
        if isinstance(tag, str) and tag:
            started = record.get("started")
            count = reap(tag, run_dir=folder, since=started if isinstance(started, float) else 0.0)
            if count:
                logger.warning(
                    "ended %d process(es) left running by an earlier orch (pid %s) of %s",
                    count,
                    record.get("pid"),
                    folder,
                )
            ended += count
        _write(folder, {**record, "ended": time.time()})
    return ended


def _write(run_dir: Path, record: dict[str, Any]) -> None:
    path = run_dir / RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)


@contextlib.contextmanager
def lifeline(run_dir: Path) -> Iterator[str]:
    """Tag everything started inside the block; end all of it on exit, or on orch's death.

    A lifeline opened inside another one of this process is the outer one (its tag).

    Args:
        run_dir: The campaign directory (gets ``processes.json``).

    Yields:
        The campaign's tag.
    """
    if _active and os.environ.get(TAG_ENV) == _active[-1]:
        yield _active[-1]
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    reap_stale(run_dir)
    tag = uuid.uuid4().hex
    me = psutil.Process()
    record = {"tag": tag, "pid": me.pid, "create_time": me.create_time(), "started": time.time()}
    _write(run_dir, record)
    previous = os.environ.get(TAG_ENV)
    watchdog = _start_watchdog(me.pid, record["create_time"], tag, run_dir)
    os.environ[TAG_ENV] = tag
    _active.append(tag)
    try:
        yield tag
    finally:
        _active.remove(tag)
        if previous is None:
            os.environ.pop(TAG_ENV, None)
        else:
            os.environ[TAG_ENV] = previous
        left = reap(
            tag,
            exclude={watchdog.pid} if watchdog else None,
            run_dir=run_dir,
            since=record["started"],
            renamed_only=True,
        )
        with contextlib.suppress(OSError):
            (run_dir / PIDS).unlink()
        if left:
            logger.warning("ended %d process(es) still running at the campaign's end", left)
        if watchdog is not None:
            with contextlib.suppress(OSError):
                watchdog.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(TERM_GRACE_S)
            if watchdog.poll() is None:
                watchdog.kill()
                watchdog.wait()
        _write(run_dir, {**record, "ended": time.time()})


def _start_watchdog(
    pid: int, create_time: float, tag: str, run_dir: Path
) -> subprocess.Popen[bytes] | None:
    env = {k: v for k, v in os.environ.items() if k != TAG_ENV}
    argv = [sys.executable, "-m", "orchestrator.lifeline"]
    argv += ["--pid", str(pid), "--create-time", repr(create_time), "--tag", tag]
    argv += ["--run-dir", str(run_dir)]
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(run_dir / "watchdog.log", "ab"),  # noqa: SIM115 - the child keeps it
            env=env,
            start_new_session=True,  # Ctrl-C in orch's terminal does not reach it
            close_fds=True,
        )
    except OSError as exc:
        logger.warning(
            "could not start the process watchdog (%s); orphans are ended on the next run", exc
        )
        return None


SNAPSHOT_S = 0.5
"""Seconds between two snapshots of orch's descendants taken by the watchdog."""

PIDS = "processes.pids"
"""The run directory's list of orch's descendants (``pid create_time`` lines), kept fresh by
the watchdog: processes that rename themselves (``setproctitle`` clobbers
``/proc/PID/environ``, as Parsl's interchange does) are found through it."""


def descendants(pid: int) -> dict[int, float]:
    """``{pid: create_time}`` of every live descendant of process ``pid``."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return {}
    found = {}
    for child in children:
        with contextlib.suppress(psutil.Error):
            found[child.pid] = child.create_time()
    return found


def recorded_processes(run_dir: Path, since: float = 0.0) -> list[psutil.Process]:
    """The live processes the run directory's :data:`PIDS` lists, started at ``since`` or later.

    (Processes orch had started before the campaign began are not the campaign's.)
    """
    try:
        lines = (run_dir / PIDS).read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            pid_text, created_text = line.split()
            pid, created = int(pid_text), float(created_text)
        except ValueError:
            continue
        if pid != os.getpid() and created >= since - CLOCK_SLACK_S and _alive(pid, created):
            with contextlib.suppress(psutil.Error):
                found.append(psutil.Process(pid))
    return found


def _wait_for_exit(pid: int, create_time: float, run_dir: Path) -> dict[int, float]:
    """Return once process ``pid`` has ended; meanwhile keep :data:`PIDS` up to date.

    Returns:
        The descendants seen (``{pid: create_time}``), also when the run directory is gone.
    """
    try:
        fd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    known: dict[int, float] = {}
    me = os.getpid()
    try:
        while _alive(pid, create_time):
            now = {p: c for p, c in descendants(pid).items() if p != me}
            if now.keys() - known.keys():
                known.update(now)
                known = {p: c for p, c in known.items() if _alive(p, c)}
                tmp = run_dir / (PIDS + ".tmp")
                with contextlib.suppress(OSError):  # the run directory may be deleted
                    tmp.write_text("".join(f"{p} {c!r}\n" for p, c in known.items()))
                    os.replace(tmp, run_dir / PIDS)
            if fd is not None:
                select.select([fd], [], [], SNAPSHOT_S)
            else:
                time.sleep(SNAPSHOT_S)
    finally:
        if fd is not None:
            os.close(fd)
    return known


def _watch(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.lifeline")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--create-time", type=float, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s watchdog: %(message)s")
    stop = False

    def on_term(signum: int, frame: object) -> None:  # orch ended normally and cleaned up
        nonlocal stop
        stop = True
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    known = _wait_for_exit(args.pid, args.create_time, args.run_dir)
    if stop:
        return 0
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish the cleanup once it has begun
    record = read_record(args.run_dir) or {}
    started = record.get("started") if record.get("tag") == args.tag else None
    since = started if isinstance(started, float) else 0.0
    ended = reap(args.tag, run_dir=args.run_dir, since=since)
    # What it saw itself, in case the run directory (and its list) was deleted meanwhile
    left = []
    for pid, created in known.items():
        if created >= since - CLOCK_SLACK_S and _alive(pid, created):
            with contextlib.suppress(psutil.Error):
                left.append(psutil.Process(pid))
    if left:
        ended += end_processes(left)
    logger.info("orch (pid %d) ended; ended %d process(es) it left", args.pid, ended)
    if record.get("tag") == args.tag:
        _write(args.run_dir, {**record, "ended": time.time()})
    return 0


if __name__ == "__main__":
    sys.exit(_watch())
