"""orch vs Colmena 0.7.2: the same thinker, workloads and engine, run side by side.

One invocation measures both, on the same machine, in alternating rounds, and prints orch,
Colmena and the ratio for each measure:

* **tasks/s at 1 and at 16 in flight**: ``--tasks`` no-op tasks per round, kept in flight by
  the thinker pattern Colmena users write (below), from the first ``send_inputs`` to the last
  result taken by the result processor;
* **round trip** (median, at 1 in flight): ``send_inputs`` called -> the result processor took
  the result;
* **decision latency** (median and p99, at 1 in flight): the result processor took a result
  (and released its slot) -> the task submitter, woken by that release, returned from
  ``send_inputs`` for the next task. At 1 in flight the k-th release wakes the (k+1)-th send,
  so pairing them in order is exact;
* **start to first result** (median of ``--starts`` fresh processes per side): from launching
  a new Python process (taken by this driver just before it starts the process) until that
  process's thinker has its first no-op result (the moment its result processor takes it,
  written out by the child): imports, store, engine, workers, all included;
* **10 MiB round trip** (median, at 1 in flight): a task that takes a fresh 10 MiB ``bytes``
  and returns a new 10 MiB ``bytes`` (the input reversed); from ``send_inputs`` to the
  returned bytes in the thinker's hands, each side with its own data plane: orch's (site
  ``data: file``, threshold 1 MB, as ``data_movement.py``); Colmena's ProxyStore path, as its
  users set it up (``proxystore_name``/``proxystore_threshold`` on the queues, a ProxyStore
  ``Store`` over a ``FileConnector``, threshold 1 MB).

The thinker (:func:`thinker_class`) is one piece of code, built on each side's own
``BaseThinker``, ``task_submitter``, ``result_processor`` and ``ResourceCounter``: a
``@task_submitter(task_type="work", n_slots=1)`` that calls ``send_inputs``, and a
``@result_processor`` that takes the result and calls ``self.rec.release("work", 1)``; N in
flight is N slots. The task functions (:func:`noop`, :func:`reverse_bytes`) are the same
functions too (Colmena's workers import them from this module).

Why it is fair:

* **Same engine**: Parsl's HighThroughputExecutor on this machine with 2 workers on both
  sides, the same Parsl release (orch drives HTEX through Globus Compute's engine, as its
  ``local`` sites do; Colmena through its ``ParslTaskServer`` with ``max_workers_per_node=2``,
  a ``LocalProvider`` with one block, on 127.0.0.1). Where a setting is free, Colmena gets the
  faster choice: HTEX unencrypted (as orch runs it; Parsl's default is encrypted), ProxyStore
  only on the 10 MiB topic (no store look-up per no-op task), the queues Colmena ships for one
  machine (``PipeQueues``, pickle), its default ``keep_inputs``.
* **orch as a campaign runs it**: ``open_session`` with the journal ON (every state change and
  result recorded in SQLite), the site's data plane on for every task (orch checks each
  task's arguments against the threshold), the site's default ``max_in_flight``.
* **Same clock, same machine, same time**: rounds alternate orch/Colmena and which of them
  goes first, so drift (other load, thermal, page cache) hits both alike; both engines stay
  up for the whole throughput phase (each side's engine is started once), idle while the
  other side runs. The start-up runs come first, with no engine of either side up.
* Colmena lives in its own virtual environment (``.bench/colmena``, made by this script,
  ``colmena==0.7.2`` and what it pulls in), so the project does not depend on it; its half
  runs in ``colmena_side.py``, a process this driver talks to by JSON lines.

Targets (issue 17): >= 2x Colmena's tasks/s at 16 in flight; 10 MiB round trip <= 60 ms.

Everything started is cleaned up on success, error and Ctrl-C: orch's session (engine and
workers, by its lifeline), Colmena's task server (its kill signal, then Parsl's cleanup), the
ProxyStore directories and the temporary run directories; as a last resort, processes this
driver started (and their descendants, by PID and start time) are ended.

    .venv/bin/python benchmarks/vs_colmena.py [--tasks 1000] [--rounds 5] [--starts 3]
                                              [--big-tasks 10] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Only the standard library at module level: Colmena's workers and ``colmena_side.py`` (in
# Colmena's virtual environment, without orch) import this module for the task functions and
# the thinker.

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
MODULE = Path(__file__).stem
COLMENA_SIDE = BENCH_DIR / "colmena_side.py"
COLMENA_VENV = REPO / ".bench" / "colmena"
COLMENA_REQUIREMENTS = ["colmena==0.7.2"]
"""What the Colmena environment gets (ProxyStore, Parsl and pydantic come with it)."""
STAMP = COLMENA_VENV / ".bench-stamp"

WORKERS = 2
"""HTEX workers on each side."""
THRESHOLD = 1_000_000
"""Bytes from which each side's data plane moves an object by reference (both sides)."""
BIG_BYTES = 10 * 2**20
"""Size of the large input and of the large result."""
POOL = "work"
"""The ResourceCounter pool the task submitter draws its slots from."""
NOOP_TOPIC = "noop"
BIG_TOPIC = "big"
MARK = "@@bench "
"""Prefix of the JSON lines the child processes send back (any other line is just output)."""

FIRST_RESULT_TIMEOUT_S = 240.0
"""Longest a start-up run may take (start, first result and clean-up)."""
REQUEST_TIMEOUT_S = 600.0
"""Longest one request to Colmena's half may take."""


# --- the task functions (run on both sides' workers) -----------------------------------


def noop() -> None:
    """The no-op task."""
    return None


def reverse_bytes(data: bytes) -> bytes:
    """The large task: a new object of the same size (``bytes(data)`` would be ``data``)."""
    return data[::-1]


# --- the thinker, written once for both sides --------------------------------------------

_CLASSES: dict[tuple[int, str], type] = {}


def thinker_class(api: Any, topic: str) -> type:
    """The benchmark's thinker, built on one side's thinker API.

    Args:
        api: Namespace with ``BaseThinker``, ``ResourceCounter``, ``task_submitter`` and
            ``result_processor`` (``colmena.thinker`` or ``orchestrator.thinker``).
        topic: Topic of the tasks and of the result processor.

    Returns:
        A ``BaseThinker`` subclass; see :func:`run_workload` for its arguments.
    """
    key = (id(api.BaseThinker), topic)
    cls = _CLASSES.get(key)
    if cls is not None:
        return cls

    class BenchThinker(api.BaseThinker):  # type: ignore[misc,name-defined]
        """Keeps ``in_flight`` tasks of one method in flight until ``n_tasks`` results are in."""

        def __init__(
            self,
            queues: Any,
            method: str,
            n_tasks: int,
            in_flight: int,
            payloads: list[tuple[Any, ...]] | None,
            resolve: Callable[[Any], Any],
        ) -> None:
            super().__init__(queues, api.ResourceCounter(in_flight, [POOL]))
            self.rec.reallocate(None, POOL, in_flight)
            self.method = method
            self.n_tasks = n_tasks
            self.payloads = payloads
            self.resolve = resolve
            self.n_sent = 0
            self.n_done = 0
            self.sends: list[tuple[float, float]] = []  # send_inputs called, returned
            self.taken: list[float] = []  # the result processor took the result
            self.ready: list[float] = []  # ... and has its value in hand
            self.first_wall: float | None = None
            self.failure: str | None = None

        @api.task_submitter(task_type=POOL, n_slots=1)
        def submit(self) -> None:
            """Send the next task (once all are sent, keep the slot: the agent then waits)."""
            i = self.n_sent
            if i >= self.n_tasks:
                return
            args = self.payloads[i] if self.payloads is not None else ()
            began = time.perf_counter()
            self.queues.send_inputs(*args, method=self.method, topic=topic)
            self.sends.append((began, time.perf_counter()))
            self.n_sent = i + 1

        @api.result_processor(topic=topic)
        def take(self, result: Any) -> None:
            """Take the result (its value in hand), release its slot, stop after the last."""
            got = time.perf_counter()
            if self.first_wall is None:
                self.first_wall = time.time()
            if not result.success:
                self.failure = f"{self.method} failed: {result.failure_info}"
                self.done.set()
                self.rec.release(POOL, 1)
                return
            value = self.resolve(result.value) if self.payloads is not None else result.value
            ready = time.perf_counter()
            self.taken.append(got)
            self.ready.append(ready)
            if self.payloads is not None:  # checked outside the timing
                sent = self.payloads[self.n_done][0]
                if len(value) != len(sent) or value[:64] != sent[-64:][::-1]:
                    self.failure = f"{self.method} returned the wrong bytes"
            self.n_done += 1
            self.rec.release(POOL, 1)
            if self.n_done >= self.n_tasks or self.failure:
                self.done.set()

    BenchThinker.__name__ = BenchThinker.__qualname__ = f"Bench_{topic}"
    _CLASSES[key] = BenchThinker
    return BenchThinker


def run_workload(
    api: Any,
    queues: Any,
    topic: str,
    n_tasks: int,
    in_flight: int,
    resolve: Callable[[Any], Any],
) -> dict[str, Any]:
    """Run one round of a workload through the thinker; its raw timings.

    Args:
        api: One side's thinker API (see :func:`thinker_class`).
        queues: That side's queues.
        topic: ``noop`` (:func:`noop`) or ``big`` (:func:`reverse_bytes` of fresh 10 MiB).
        n_tasks: Tasks in the round.
        in_flight: Slots of the task submitter's pool.
        resolve: Turns a result's value into the object (the side's proxy resolution).

    Returns:
        ``sends`` ([called, returned] per task), ``taken`` and ``ready`` (per result, in order,
        ``perf_counter`` seconds) and ``first_wall`` (``time.time()`` of the first result).

    Raises:
        RuntimeError: A task failed or returned the wrong value.
    """
    payloads = None
    method = "noop"
    if topic == BIG_TOPIC:
        method = "reverse_bytes"
        payloads = [(os.urandom(BIG_BYTES),) for _ in range(n_tasks)]
    thinker = thinker_class(api, topic)(queues, method, n_tasks, in_flight, payloads, resolve)
    try:
        thinker.run()
    except BaseException:
        thinker.done.set()  # Ctrl-C: let the agent threads wind down
        raise
    if thinker.failure:
        raise RuntimeError(thinker.failure)
    if thinker.n_done != n_tasks:
        raise RuntimeError(f"{thinker.n_done} of {n_tasks} results arrived")
    return {
        "sends": thinker.sends,
        "taken": thinker.taken,
        "ready": thinker.ready,
        "first_wall": thinker.first_wall,
    }


def emit(message: dict[str, Any]) -> None:
    """Send one JSON line back to the driver (the children's side of the protocol)."""
    sys.stdout.write(MARK + json.dumps(message) + "\n")
    sys.stdout.flush()


# --- processes: start, talk to, and clean up ---------------------------------------------


def child_env(venv: Path | None) -> dict[str, str]:
    """Environment for a child: this folder importable, no orch campaign tag inherited.

    Args:
        venv: The child's virtual environment, put first on ``PATH`` (Parsl starts its worker
            pools as ``process_worker_pool.py`` from ``PATH``); ``None``: orch's.
    """
    env = dict(os.environ)
    env.pop("ORCH_CAMPAIGN_TAG", None)  # orch's lifeline would end the child with its session
    env.pop("PYTHONHOME", None)
    env["PYTHONPATH"] = str(BENCH_DIR)
    env["PYTHONUNBUFFERED"] = "1"
    bin_dir = Path(venv or sys.prefix) / "bin"
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv or sys.prefix)
    return env


class Tree:
    """Processes this driver started, and their descendants, to end if they outlive us.

    Args:
        proc: A child started with ``start_new_session=True``.
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.known: dict[int, float] = {}  # pid -> start time (so a reused pid is left alone)
        self.note()

    def note(self) -> None:
        """Remember the child's current descendants."""
        import psutil

        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.proc.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    self.known[p.pid] = p.create_time()

    def end(self, grace: float = 20.0) -> None:
        """Wait up to ``grace`` s for the child, then SIGTERM/SIGKILL it and every survivor."""
        import psutil

        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        if self.proc.poll() is None:
            self.note()
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        survivors = []
        for pid, started in self.known.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if abs(p.create_time() - started) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                    survivors.append(p)
        for p in survivors:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(survivors, timeout=3)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if survivors:
            print(f"(ended {len(survivors)} leftover process(es) of pid {self.proc.pid})")


def launch(cmd: list[str], venv: Path | None) -> subprocess.Popen[str]:
    """Start a child in its own session (a Ctrl-C reaches only the driver, which cleans up)."""
    return subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env=child_env(venv),
        start_new_session=True,
    )


class Lines:
    """Reads a child's output in a thread: protocol messages queued, other lines kept."""

    def __init__(self, proc: subprocess.Popen[str], label: str, echo: bool) -> None:
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.other: list[str] = []
        self._label = label
        self._echo = echo
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(MARK):
                self.messages.put(json.loads(line[len(MARK) :]))
            else:
                self.other.append(line.rstrip())
                del self.other[:-200]
                if self._echo:
                    print(f"  [{self._label}] {line.rstrip()}", file=sys.stderr)
        self.messages.put(None)

    def next(self, timeout: float) -> dict[str, Any]:
        """The next message.

        Raises:
            RuntimeError: The child ended or sent nothing within ``timeout`` seconds.
        """
        try:
            message = self.messages.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self._label}: no answer in {timeout:.0f} s") from None
        if message is None:
            tail = "\n".join(self.other[-30:])
            raise RuntimeError(f"{self._label}: the process ended; its last output:\n{tail}")
        if "error" in message:
            raise RuntimeError(f"{self._label}: {message['error']}")
        return message


class ColmenaSide:
    """Colmena's half: ``colmena_side.py serve`` in Colmena's venv, driven by JSON lines."""

    def __init__(self, root: Path, verbose: bool) -> None:
        python = str(COLMENA_VENV / "bin" / "python")
        cmd = [python, str(COLMENA_SIDE), "serve", "--root", str(root)]
        self.proc = launch(cmd, COLMENA_VENV)
        self.tree = Tree(self.proc)
        self.lines = Lines(self.proc, "colmena", verbose)
        self.info: dict[str, Any] = {}

    def wait_ready(self) -> None:
        """Wait until the child has started its task server."""
        self.info = self.lines.next(FIRST_RESULT_TIMEOUT_S)
        self.tree.note()

    def run(self, topic: str, n_tasks: int, in_flight: int) -> dict[str, Any]:
        """One round, run by Colmena's thinker in the child (see :func:`run_workload`)."""
        assert self.proc.stdin is not None
        request = {"op": "run", "topic": topic, "n": n_tasks, "in_flight": in_flight}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self.lines.next(REQUEST_TIMEOUT_S)
        self.tree.note()  # worker pools are up by now
        return answer["run"]

    def close(self) -> None:
        """Ask the child to stop its task server and clean up; end what is left after."""
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.stdin.close()
        self.tree.end(grace=60)


class Logged(logging.Handler):
    """Collects what orch logs at WARNING and above in this process, reported once at the end.

    A problem orch logs per task (e.g. a result it cannot write to the results file) would
    otherwise print a traceback per task in the middle of the progress lines.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}
        logger = logging.getLogger("orchestrator")
        logger.addHandler(self)
        logger.propagate = False

    def emit(self, record: logging.LogRecord) -> None:
        """Count the record by its message template (and its exception's first line)."""
        message = record.msg if isinstance(record.msg, str) else record.getMessage()
        text = f"{record.name}: {message.split('%')[0].strip() or message}"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            first_line = re.sub(r"(?<=\s)\d+", "N", (str(error).splitlines() or [""])[0])
            text += f": {type(error).__name__}: {first_line}"
        self.counts[text] = self.counts.get(text, 0) + 1

    def report(self) -> None:
        """Print what orch logged, once per distinct message, with its count."""
        if self.counts:
            print("\norch logged (WARNING and above, in this process):")
            for text, n in self.counts.items():
                print(f"  {n} x {text}")


def task_module() -> Any:
    """This module imported by its name (not ``__main__``), as orch's workers import it."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(MODULE)


@contextlib.contextmanager
def orch_side(root: Path) -> Iterator[tuple[Any, Any]]:
    """orch as a campaign runs it: a local site, the data plane and the journal.

    Args:
        root: Empty folder for the run directory and the site's file store.

    Yields:
        orch's thinker API and the session's queues.
    """
    from orchestrator import thinker as api
    from orchestrator.config.sites import SiteConfig
    from orchestrator.data import DataConfig
    from orchestrator.dispatch import Method, MethodRegistry
    from orchestrator.dispatch.journal import Journal
    from orchestrator.runner import open_session

    mod = task_module()
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    data = DataConfig(connector="file", path=root / "orch-store", threshold_bytes=THRESHOLD)
    site = SiteConfig(name="bench", kind="cpu", backend="local", capacity=WORKERS, data=data)
    methods = MethodRegistry([Method(mod.noop), Method(mod.reverse_bytes)])
    journal = Journal(run_dir)  # on, as in a campaign: every state change and result
    topics = {NOOP_TOPIC, BIG_TOPIC}
    with open_session([site], methods, topics, run_dir, [str(BENCH_DIR)], journal=journal) as s:
        yield api, s.queues


def orch_resolve(value: Any) -> Any:
    """orch's way for a thinker to turn a result into the object (resolves a proxy)."""
    from orchestrator.data.proxying import DataPlane

    return DataPlane.resolve(value)


def first_result_child(root: Path) -> None:
    """The orch process of a start-up run: imports, session, one no-op result, report."""
    from orchestrator import thinker  # noqa: F401 - the imports a campaign script makes
    from orchestrator.runner import open_session  # noqa: F401

    imported = time.time()
    with orch_side(root) as (api, queues):
        opened = time.time()  # the session is open: the site's workers are connected
        run = run_workload(api, queues, NOOP_TOPIC, 1, 1, orch_resolve)
        emit({"first": run["first_wall"], "imported": imported, "opened": opened})


# --- the Colmena environment ------------------------------------------------------------


def ensure_colmena_venv() -> None:
    """Make ``.bench/colmena`` with Colmena installed, unless its stamp says it is done.

    Raises:
        SystemExit: The environment could not be made.
    """
    wanted = json.dumps({"requirements": COLMENA_REQUIREMENTS, "python": "3.11"})
    python = COLMENA_VENV / "bin" / "python"
    if python.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return
    base = shutil.which("python3.11") or sys.executable
    print(f"making Colmena's environment in {COLMENA_VENV} (once) ...", flush=True)
    STAMP.unlink(missing_ok=True)
    steps = [
        [base, "-m", "venv", "--clear", str(COLMENA_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", *COLMENA_REQUIREMENTS],
        [str(python), "-c", "import colmena.thinker, colmena.task_server, parsl, proxystore"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, cwd="/")
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().splitlines()
            raise SystemExit(f"{' '.join(step)} failed:\n" + "\n".join(output[-30:]))
    STAMP.write_text(wanted)


# --- measures ----------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rate(run: dict[str, Any]) -> float:
    """Tasks/s: first ``send_inputs`` called -> last result taken."""
    return len(run["taken"]) / (run["taken"][-1] - run["sends"][0][0])


def round_trips(run: dict[str, Any]) -> list[float]:
    """Per task (1 in flight): ``send_inputs`` called -> the value in the thinker's hands."""
    return [ready - sent[0] for sent, ready in zip(run["sends"], run["ready"], strict=True)]


def decisions(run: dict[str, Any]) -> list[float]:
    """Per result but the last (1 in flight): result taken -> next ``send_inputs`` returned."""
    return [sent[1] - got for got, sent in zip(run["taken"], run["sends"][1:], strict=False)]


def one_start(side: str, root: Path) -> dict[str, float]:
    """A start-up run: a fresh process of one side until its first no-op result.

    Returns:
        Seconds from launching the process to: ``first`` (its thinker took the first
        result), ``imported`` (its imports done) and, for orch, ``opened`` (its session open).
    """
    if side == "orch":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--first-result-child", str(root)]
        venv = None
    else:
        cmd = [str(COLMENA_VENV / "bin" / "python"), str(COLMENA_SIDE), "first"]
        cmd += ["--root", str(root)]
        venv = COLMENA_VENV
    t0 = time.time()
    proc = launch(cmd, venv)
    tree = Tree(proc)
    lines = Lines(proc, f"{side} start-up", echo=False)
    try:
        message = lines.next(FIRST_RESULT_TIMEOUT_S)
        tree.note()
    finally:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        tree.end(grace=60)
    return {k: message[k] - t0 for k in ("first", "imported", "opened") if k in message}


def main() -> None:
    """Parse options, run both sides alternately, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="no-op tasks per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per side")
    parser.add_argument("--starts", type=int, default=3, help="start-up runs per side")
    parser.add_argument("--big-tasks", type=int, default=10, help="10 MiB tasks per round")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--verbose", action="store_true", help="show Colmena's own output")
    parser.add_argument("--first-result-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_result_child is not None:
        first_result_child(args.first_result_child)
        return
    if args.quick:
        args.tasks, args.rounds, args.starts, args.big_tasks = 100, 1, 1, 3
    if args.tasks < 2 or min(args.rounds, args.starts, args.big_tasks) < 1:
        parser.error("--tasks must be >= 2, --rounds, --starts and --big-tasks >= 1")
    warm = min(200, args.tasks)

    began = time.monotonic()
    load_before = os.getloadavg()[0]
    logged = Logged()
    ensure_colmena_venv()
    root = Path(tempfile.mkdtemp(prefix="orch-vs-colmena-"))
    sides = ("orch", "colmena")
    starts: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    colmena: ColmenaSide | None = None
    try:
        print(f"start to first result: {args.starts} fresh process(es) per side", flush=True)
        for i in range(args.starts):
            for side in sides if i % 2 == 0 else sides[::-1]:
                starts[side].append(one_start(side, root / f"start-{side}-{i}"))
                moments = starts[side][-1]
                detail = f"imports done at {moments['imported']:.2f} s"
                if "opened" in moments:
                    detail += f", session open at {moments['opened']:.2f} s"
                print(f"  {side}: {moments['first']:.2f} s ({detail})", flush=True)

        print("starting both engines ...", flush=True)
        colmena = ColmenaSide(root / "colmena", args.verbose)
        colmena.wait_ready()
        with orch_side(root / "orch") as (api, queues):
            run_on = {
                "orch": lambda t, n, k: run_workload(api, queues, t, n, k, orch_resolve),
                "colmena": colmena.run,
            }
            for side in sides:  # warm up: workers, imports on the workers, code paths
                run_on[side](NOOP_TOPIC, warm, 8)
                run_on[side](BIG_TOPIC, 2, 1)
            measures = [("1", NOOP_TOPIC, args.tasks, 1), ("16", NOOP_TOPIC, args.tasks, 16)]
            measures.append(("big", BIG_TOPIC, args.big_tasks, 1))
            for i in range(args.rounds):
                order = sides if i % 2 == 0 else sides[::-1]
                report = []
                for name, topic, n, k in measures:
                    for side in order:
                        run = run_on[side](topic, n, k)
                        runs.setdefault((side, name), []).append(run)
                        if topic == NOOP_TOPIC:
                            report.append(f"{side} {k} in flight {rate(run):.0f}/s")
                        else:
                            ms = statistics.median(round_trips(run)) * 1e3
                            report.append(f"{side} 10 MiB {ms:.0f} ms")
                print(f"round {i + 1}/{args.rounds}: " + ", ".join(report), flush=True)
    except BaseException:
        logged.report()
        raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        if colmena is not None:
            colmena.close()
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    table(args, starts, runs, colmena.info if colmena else {}, time.monotonic() - began)
    print(
        f"load average (1 min) before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f} "
        f"({os.cpu_count()} CPUs; other work on the machine skews both sides)"
    )
    logged.report()


def table(
    args: argparse.Namespace,
    starts: dict[str, list[dict[str, float]]],
    runs: dict[tuple[str, str], list[dict[str, Any]]],
    colmena_info: dict[str, Any],
    elapsed: float,
) -> None:
    """Print the results: one row per measure, and the targets."""
    from importlib.metadata import version

    def pooled(side: str, name: str, f: Callable[[dict[str, Any]], list[float]]) -> list[float]:
        return [x for run in runs[(side, name)] for x in f(run)]

    values: dict[str, dict[str, float]] = {}
    for side in ("orch", "colmena"):
        rtt = pooled(side, "1", round_trips)
        dec = pooled(side, "1", decisions)
        values[side] = {
            "rate1": statistics.median(rate(r) for r in runs[(side, "1")]),
            "rate16": statistics.median(rate(r) for r in runs[(side, "16")]),
            "rtt": statistics.median(rtt) * 1e3,
            "dec50": statistics.median(dec) * 1e3,
            "dec99": percentile(dec, 99) * 1e3,
            "first": statistics.median(s["first"] for s in starts[side]),
            "big": statistics.median(pooled(side, "big", round_trips)) * 1e3,
        }
    rows = [
        ("tasks/s, 1 in flight", "rate1", "{:.0f}", True),
        ("tasks/s, 16 in flight", "rate16", "{:.0f}", True),
        ("round trip, ms (median)", "rtt", "{:.2f}", False),
        ("decision latency, ms (median)", "dec50", "{:.3f}", False),
        ("decision latency, ms (p99)", "dec99", "{:.3f}", False),
        ("start to first result, s", "first", "{:.2f}", False),
        ("10 MiB round trip, ms (median)", "big", "{:.1f}", False),
    ]
    versions = colmena_info.get("versions", {})
    print(
        f"\norch vs Colmena {versions.get('colmena', '?')}: local HTEX, {WORKERS} workers each; "
        f"{args.tasks} no-op tasks x {args.rounds} rounds, {args.big_tasks} x 10 MiB per "
        f"round, {args.starts} start-up run(s) per side (medians)"
    )
    print(
        f"orch: parsl {version('parsl')}, proxystore {version('proxystore')}, journal on, "
        f"data: file; Colmena: parsl {versions.get('parsl', '?')}, proxystore "
        f"{versions.get('proxystore', '?')}, PipeQueues, ProxyStore FileConnector\n"
    )
    header = f"{'measure':<31} | {'orch':>9} | {'Colmena':>9} | {'orch better by':>14}"
    print(header)
    print("-" * len(header))
    for label, key, fmt, higher_is_better in rows:
        o, c = values["orch"][key], values["colmena"][key]
        factor = o / c if higher_is_better else c / o
        print(f"{label:<31} | {fmt.format(o):>9} | {fmt.format(c):>9} | {factor:>13.2f}x")
    print(
        "\norch better by: orch/Colmena for tasks/s, Colmena/orch for times (> 1: orch is better)."
    )
    imports = {s: statistics.median(x["imported"] for x in starts[s]) for s in starts}
    print(
        f"start-up: process launched -> imports done: orch {imports['orch']:.2f} s, "
        f"Colmena {imports['colmena']:.2f} s"
    )
    speedup = values["orch"]["rate16"] / values["colmena"]["rate16"]
    big = values["orch"]["big"]
    print(
        f"targets: tasks/s at 16 in flight >= 2x Colmena: {speedup:.2f}x "
        f"{'met' if speedup >= 2 else 'NOT met'}; 10 MiB round trip <= 60 ms: {big:.1f} ms "
        f"{'met' if big <= 60 else 'NOT met'}"
    )
    print(f"(whole run: {elapsed:.0f} s)")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted; everything this run started was stopped", file=sys.stderr)
        sys.exit(130)
