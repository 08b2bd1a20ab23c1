"""What orch reads of a running Globus Compute engine's Parsl HTEX executor, in one place.

The engine's public API does not say whether its interchange is alive, which worker pools are
connected, or whether it still tracks a task; the HTEX executor underneath does, through
attributes that are public but undocumented (``interchange_proc``, ``command_client``,
``tasks``, ``provider.resources``). Every such reach lives here, and
``tests/test_reliability.py::test_htex_attributes_orch_reads_are_there`` (with
``test_engines_launch_through_the_endpoint_cli_which_orch_bypasses``) fails when an upgrade
of Parsl or Globus Compute removes one.

It also changes one thing: :func:`launch_directly` starts the interchange and worker pool
with ``python -m`` instead of through the endpoint's CLI (seconds saved per engine start).
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import psutil
from globus_compute_endpoint.engines import GlobusComputeEngine
from parsl.executors.high_throughput.errors import CommandClientTimeoutError

COMMAND_TIMEOUT_S = 5.0
"""Seconds a question to the interchange may take before the interchange counts as stuck."""


ENDPOINT_EXEC = ("globus-compute-endpoint", "python-exec")
"""How ``GlobusComputeEngine`` launches its interchange and worker pool: the endpoint CLI's
``python-exec MODULE``, which only execs ``python -m MODULE`` once it has imported the
whole CLI (about 2.7 s of CPU on the 2-core machine, twice per engine start)."""


def launch_directly(engine: GlobusComputeEngine, python: str = sys.executable) -> bool:
    """Make ``engine`` start its interchange and worker pool as ``python -m MODULE``.

    The processes are the same as after the CLI's ``exec`` (same interpreter, module and
    arguments); only the CLI's import is skipped. Call it before ``engine.start()``, and only
    where the workers run this ``python`` (not inside a container image, whose Python the
    CLI finds on the image's PATH).

    Returns:
        Whether both commands had the expected form and were changed (False: left as they
        were, still correct, only slower).
    """
    executor = engine.executor
    interchange = list(executor.interchange_launch_cmd)
    pool = str(executor.launch_cmd or "")
    prefix = " ".join(ENDPOINT_EXEC) + " "
    if tuple(interchange[:2]) != ENDPOINT_EXEC or not pool.startswith(prefix):
        return False
    executor.interchange_launch_cmd = [python, "-m", *interchange[2:]]
    executor.launch_cmd = f"{shlex.quote(python)} -m {pool[len(prefix) :]}"
    return True


class InterchangeStuck(Exception):
    """The interchange did not answer a command in time (its command channel is now unusable)."""


def interchange_pid(engine: GlobusComputeEngine) -> int | None:
    """The interchange process's id, or None before it started."""
    proc = engine.executor.interchange_proc
    return None if proc is None else int(proc.pid)


def interchange_exit_code(engine: GlobusComputeEngine) -> int | None:
    """The interchange's exit status once it has exited, else None (running or not started)."""
    proc = engine.executor.interchange_proc
    return None if proc is None else proc.poll()


def connected_managers(
    engine: GlobusComputeEngine, timeout: float = COMMAND_TIMEOUT_S
) -> list[dict[str, Any]]:
    """The worker pools (managers) the interchange hears from now.

    A pool that misses heartbeats for the engine's ``heartbeat_threshold`` is dropped from
    this list by the interchange itself, which also fails the tasks it held.

    Raises:
        InterchangeStuck: no answer within ``timeout`` seconds.
    """
    return list(_command(engine, "MANAGERS", timeout))


def connected_blocks(engine: GlobusComputeEngine, timeout: float = COMMAND_TIMEOUT_S) -> list[str]:
    """The blocks whose worker pool ever connected to the interchange."""
    return list(_command(engine, "CONNECTED_BLOCKS", timeout))


def _command(engine: GlobusComputeEngine, command: str, timeout: float) -> Any:
    try:
        return engine.executor.command_client.run(command, timeout_s=timeout)
    except CommandClientTimeoutError as exc:
        raise InterchangeStuck(
            f"the interchange did not answer {command} in {timeout:g} s"
        ) from exc


def tracks(engine: GlobusComputeEngine, executor_task_id: Any) -> bool:
    """Whether the executor still waits for a result of the task with this executor id."""
    return executor_task_id in engine.executor.tasks


def pool_processes(engine: GlobusComputeEngine) -> list[psutil.Process]:
    """The worker pool processes (``process_worker_pool``) of the engine's running blocks."""
    pools: list[psutil.Process] = []
    for job in list(engine.executor.provider.resources.values()):
        pid = job.get("remote_pid")
        if not isinstance(pid, int):
            continue
        try:
            launched = psutil.Process(pid)
            family = [launched, *launched.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in family:
            try:
                if any("process_worker_pool" in part for part in proc.cmdline()):
                    pools.append(proc)
            except psutil.Error:
                continue
    return pools


def worker_processes(engine: GlobusComputeEngine) -> list[psutil.Process]:
    """The worker processes of the engine's worker pools.

    A pool's ``multiprocessing`` children are its resource tracker, the server of its
    ``Manager`` (started first) and then its workers; all but the tracker run ``spawn_main``.
    """
    workers: list[psutil.Process] = []
    for pool in pool_processes(engine):
        try:
            spawned = [
                child
                for child in pool.children()
                if "multiprocessing.spawn" in " ".join(child.cmdline())
            ]
            spawned.sort(key=lambda child: child.create_time())
        except psutil.Error:
            continue
        workers.extend(spawned[1:])  # the oldest is the Manager's server
    return workers
