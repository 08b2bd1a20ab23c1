"""Colmena's half of ``vs_colmena.py``: run by the driver with Colmena's venv's Python.

Sets Colmena 0.7.2 up as its users do on one machine: a ProxyStore ``Store`` over a
``FileConnector`` registered first, ``PipeQueues`` (pickle) that send the ``big`` topic's
objects of 1 MB or more through that store (``proxystore_name``/``proxystore_threshold``), and a
``ParslTaskServer`` serving :func:`vs_colmena.noop` and :func:`vs_colmena.reverse_bytes` on
Parsl's HighThroughputExecutor (2 workers, a ``LocalProvider`` with one block, 127.0.0.1,
unencrypted as orch runs HTEX). The thinker is the driver's :func:`vs_colmena.thinker_class`
built on ``colmena.thinker``.

Two modes:

* ``serve``: start the task server once, say so, then answer requests read from stdin, one
  JSON line each (``{"op": "run", "topic": ..., "n": ..., "in_flight": ...}`` runs one round and
  answers its raw timings; ``{"op": "quit"}`` or end of input stops);
* ``first``: a start-up run: everything from the imports on, until the thinker has its first
  no-op result; answers that moment (``time.time()``).

Answers are lines starting with ``vs_colmena.MARK``. On the way out, in either mode and on
SIGTERM, the task server gets Colmena's kill signal (Parsl then stops its interchange and
worker pool), the store is cleared, and any process it started that is still alive is ended by
PID.

    .bench/colmena/bin/python benchmarks/colmena_side.py serve|first --root DIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# The driver's module, for the task functions, the thinker and the protocol: standard
# library only at its top level (it puts this folder on PYTHONPATH for the workers too).
sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_colmena as shared  # noqa: E402

SERVER_STOP_S = 60.0
"""Longest wait for the task server (and Parsl's cleanup) after the kill signal."""


def _stop(signum: int, _frame: object) -> None:
    """SIGTERM: leave through the ``finally`` blocks (they stop the task server)."""
    raise SystemExit(128 + signum)


def _descendants() -> dict[int, float]:
    """This process's descendants now: pid -> start time."""
    import psutil

    found: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):
        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                found[p.pid] = p.create_time()
    return found


def _end(known: dict[int, float]) -> None:
    """End the processes in ``known`` still alive (same pid and start time)."""
    import psutil

    alive = []
    for pid, started in known.items():
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            if abs(p.create_time() - started) < 0.01 and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, left = psutil.wait_procs(alive, timeout=3)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()


@contextlib.contextmanager
def colmena_side(root: Path) -> Iterator[tuple[Any, Any, dict[str, float]]]:
    """Colmena's store, queues and task server, stopped on the way out.

    Args:
        root: Folder for the store and Parsl's run directory (removed on the way out).

    Yields:
        ``colmena.thinker`` (the thinker API), the queues, and the processes started so far
        (pid -> start time; the caller adds to it once the workers are up).
    """
    from colmena import thinker as api
    from colmena.queue.python import PipeQueues
    from colmena.task_server import ParslTaskServer
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider
    from proxystore.connectors.file import FileConnector
    from proxystore.store import Store

    pool = shutil.which("process_worker_pool.py") or ""
    if not pool.startswith(sys.prefix):  # the worker pool must run Colmena's environment
        raise RuntimeError(f"process_worker_pool.py on PATH is {pool!r}, not {sys.prefix}'s")
    root.mkdir(parents=True, exist_ok=True)
    store = Store(
        f"colmena-bench-{os.getpid()}",
        FileConnector(str(root / "store")),
        register=True,
    )
    queues = PipeQueues(
        topics=[shared.NOOP_TOPIC, shared.BIG_TOPIC],
        proxystore_name={shared.BIG_TOPIC: store.name},
        proxystore_threshold={shared.BIG_TOPIC: shared.THRESHOLD},
    )
    config = Config(
        executors=[
            HighThroughputExecutor(
                label="htex",
                address="127.0.0.1",
                max_workers_per_node=shared.WORKERS,
                encrypted=False,
                provider=LocalProvider(init_blocks=1, min_blocks=0, max_blocks=1),
            )
        ],
        run_dir=str(root / "runinfo"),
    )
    server = ParslTaskServer([shared.noop, shared.reverse_bytes], queues, config)
    known: dict[int, float] = {}
    try:
        server.start()
        known.update(_descendants())
        yield api, queues, known
    finally:
        known.update(_descendants())
        if server.pid is not None:
            with contextlib.suppress(Exception):
                queues.send_kill_signal()
            server.join(SERVER_STOP_S)
            if server.is_alive():
                server.terminate()
                server.join(5)
        _end(known)
        store.close(clear=True)
        shutil.rmtree(root, ignore_errors=True)


def resolve(value: Any) -> Any:
    """Colmena's result value in hand: a proxied result is resolved by ProxyStore."""
    from proxystore.proxy import Proxy, extract

    return extract(value) if isinstance(value, Proxy) else value


def serve(root: Path) -> None:
    """Start the task server once, then run the rounds the driver asks for."""
    from importlib.metadata import version

    with colmena_side(root) as (api, queues, known):
        versions = {p: version(p) for p in ("colmena", "parsl", "proxystore")}
        shared.emit({"ready": True, "versions": versions, "pid": os.getpid()})
        for line in sys.stdin:
            request = json.loads(line)
            if request.get("op") != "run":
                break
            try:
                run = shared.run_workload(
                    api, queues, request["topic"], request["n"], request["in_flight"], resolve
                )
            except Exception as exc:  # noqa: BLE001 - sent to the driver, which stops
                shared.emit({"error": f"{type(exc).__name__}: {exc}"})
                break
            known.update(_descendants())
            shared.emit({"run": run})


def first(root: Path, began: float) -> None:
    """A start-up run: the first no-op result's moment, then clean up."""
    import colmena.queue.python  # noqa: F401 - the imports a Colmena main script makes
    import colmena.task_server  # noqa: F401
    import colmena.thinker  # noqa: F401
    import parsl  # noqa: F401
    import proxystore.store  # noqa: F401

    imported = time.time()
    with colmena_side(root) as (api, queues, known):
        run = shared.run_workload(api, queues, shared.NOOP_TOPIC, 1, 1, resolve)
        known.update(_descendants())
        shared.emit({"first": run["first_wall"], "imported": imported, "began": began})


def main() -> None:
    """Parse the mode and run it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["serve", "first"])
    parser.add_argument("--root", type=Path, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    if args.mode == "serve":
        serve(args.root)
    else:
        first(args.root, time.time())


if __name__ == "__main__":
    main()
