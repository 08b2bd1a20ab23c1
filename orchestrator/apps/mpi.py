"""Worker side of per-task MPI: the launch line a task's program starts with, and what it got.

Every task carries its resources in its context (``task_context()["resources"]``: nodes, ranks
per node, ranks, threads per rank, GPUs per rank), and a site with ``mpi:`` adds its launcher
(``task_context()["mpi"]``: ``launcher``, ``options``, ``nodes``). :func:`launch_prefix` turns
them into the words put before a code's command::

    mpiexec  (MPICH, Cray PALS)  $PARSL_MPI_PREFIX, else mpiexec -n N -ppn R --hosts h1,h2 OPTS
    openmpi  (Open MPI)          mpiexec -n N --map-by ppr:R:node[:PE=T] --host h1:R,h2:R
                                         -x OMP_NUM_THREADS OPTS
    srun     (Slurm)             $PARSL_MPI_PREFIX, else srun --ntasks N --ntasks-per-node R
                                         --nodes n OPTS; --cpus-per-task T when T > 1
    aprun    (Cray ALPS)         $PARSL_MPI_PREFIX, else aprun -n N -N R OPTS; -d T when T > 1
    no mpi:, ranks > 1           mpiexec -n N   (one node; both MPIs accept it)
    no mpi:, one rank            nothing: the code runs as it is

``$PARSL_MPI_PREFIX`` and ``$PARSL_MPI_NODELIST`` are set by Parsl's MPI engine for each task
(the nodes allotted to it); Parsl never clears them between tasks, so they are read only on a
site with ``mpi:``. Open MPI's ``mpiexec`` rejects Parsl's MPICH-style prefix, so for
``openmpi`` only the node list is taken from Parsl. Repeated host names (a local site's nodes
are shares of one machine, ``localhost`` once per node) are merged and their slots summed
(``--host localhost:2``, ``ppr:2:node``); hosts left with unequal slots are filled in turn
(Open MPI ``--map-by slot``, Hydra ``--hosts h1:2,h2:1``).

:func:`plan_launch` decides for one run of a code: no prefix for a code that is not MPI (xtb)
or when the site's command already starts with a launcher (:data:`LAUNCHER_PROGRAMS`: the
site's fixed launcher wins); ``OMP_NUM_THREADS`` is the threads per rank, and as root an MPI
run gets :data:`ROOT_ENV`. :func:`granted` says what the task got, for its result record.

Standard library only, and nothing from the control side: this runs on workers.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAUNCHER_KINDS = ("mpiexec", "openmpi", "srun", "aprun")
"""The ``mpi.launcher`` values a site may declare."""

LAUNCHER_PROGRAMS = ("mpiexec", "mpirun", "srun", "aprun")
"""Programs that start MPI jobs: a site command beginning with one gets no extra prefix."""

ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
"""What Open MPI needs to start as root (variables, so the launch line stays neutral)."""

PARSL_PREFIX_ENV = "PARSL_MPI_PREFIX"
PARSL_NODELIST_ENV = "PARSL_MPI_NODELIST"


def task_resources(resources: Mapping[str, Any] | None) -> dict[str, int]:
    """A task's resources with every field filled in (old sites send none: one rank).

    Args:
        resources: ``task_context()["resources"]``, or ``None``.

    Returns:
        ``nodes``, ``ranks_per_node``, ``ranks``, ``threads_per_rank`` and ``gpus_per_rank``,
        each a whole number (at least 1, GPUs at least 0).
    """
    given = dict(resources or {})

    def number(key: str, default: int, least: int = 1) -> int:
        value = given.get(key)
        try:
            return max(least, int(value)) if value is not None else default
        except (TypeError, ValueError):
            return default

    nodes = number("nodes", 1)
    ranks_per_node = number("ranks_per_node", 0, least=0)
    ranks = number("ranks", 0, least=0)
    if not ranks_per_node:
        ranks_per_node = max(1, -(-ranks // nodes)) if ranks else 1
    if not ranks:
        ranks = nodes * ranks_per_node
    return {
        "nodes": nodes,
        "ranks_per_node": ranks_per_node,
        "ranks": ranks,
        "threads_per_rank": number("threads_per_rank", 1),
        "gpus_per_rank": number("gpus_per_rank", 0, least=0),
    }


def starts_with_launcher(command: Sequence[str]) -> bool:
    """Whether ``command`` begins with an MPI launcher (``mpiexec``, ``/opt/x/bin/srun``...).

    Names such as ``mpirun.openmpi`` or ``mpiexec.hydra`` count too.
    """
    if not command:
        return False
    name = Path(str(command[0])).name
    return any(name == p or name.startswith(p + ".") for p in LAUNCHER_PROGRAMS)


def task_hosts(
    resources: Mapping[str, Any] | None,
    mpi: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """The host names of the nodes a task was given, one per node (repeats kept).

    On a site with ``mpi:``: ``$PARSL_MPI_NODELIST`` (the MPI engine's allotment) when set,
    else the first ``nodes`` of the site's node list; ``[]`` when neither names them.
    Without ``mpi:``: ``[]`` (the task runs on the worker's own host).
    """
    if not mpi:
        return []
    environ = os.environ if environ is None else environ
    listed = environ.get(PARSL_NODELIST_ENV, "")
    if listed.strip():
        return [h.strip() for h in listed.split(",") if h.strip()]
    nodes = task_resources(resources)["nodes"]
    return [str(h) for h in (mpi.get("nodes") or [])][:nodes]


def merge_hosts(hosts: Sequence[str], slots: int) -> list[tuple[str, int]]:
    """``(host, slots)`` per distinct host, in first-seen order, ``slots`` per occurrence."""
    merged: dict[str, int] = {}
    for host in hosts:
        merged[host] = merged.get(host, 0) + slots
    return list(merged.items())


def _words(options: Any) -> list[str]:
    if not options:
        return []
    if isinstance(options, str):
        return shlex.split(options)
    return [str(word) for word in options]


def launch_prefix(
    resources: Mapping[str, Any] | None,
    mpi: Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """The words that start a task's program under MPI (``[]``: start it as it is).

    Args:
        resources: ``task_context()["resources"]`` (``None``: one node, one rank, one thread).
        mpi: ``task_context()["mpi"]``, or ``None`` on a site without ``mpi:``.
        environ: Where ``PARSL_MPI_PREFIX``/``PARSL_MPI_NODELIST`` are read (default
            ``os.environ``); read only when ``mpi`` is given.

    Returns:
        The prefix argv for the site's launcher kind (see the module's table).

    Raises:
        ValueError: ``mpi["launcher"]`` is not one of :data:`LAUNCHER_KINDS`.
    """
    res = task_resources(resources)
    ranks, per_node, nodes = res["ranks"], res["ranks_per_node"], res["nodes"]
    threads = res["threads_per_rank"]
    if not mpi:
        return [] if ranks == 1 else ["mpiexec", "-n", str(ranks)]
    environ = os.environ if environ is None else environ
    kind = mpi.get("launcher")
    options = _words(mpi.get("options"))
    parsl_prefix = shlex.split(environ.get(PARSL_PREFIX_ENV, ""))
    hosts = task_hosts(res, mpi, environ)
    if kind == "mpiexec":
        if parsl_prefix:
            return parsl_prefix
        argv = ["mpiexec", "-n", str(ranks)]
        merged = merge_hosts(hosts, per_node)
        counts = {count for _, count in merged}
        if len(counts) <= 1:
            argv += ["-ppn", str(counts.pop() if counts else per_node)]
            if merged:
                argv += ["--hosts", ",".join(host for host, _ in merged)]
        else:  # uneven after merging: Hydra's host:count form
            argv += ["--hosts", ",".join(f"{host}:{count}" for host, count in merged)]
        return argv + options
    if kind == "openmpi":
        if not hosts and nodes == 1:
            hosts = ["localhost"]
        merged = merge_hosts(hosts, per_node)
        counts = {count for _, count in merged}
        pe = f":PE={threads}" if threads > 1 else ""
        if len(counts) > 1:  # uneven after merging: fill each host's slots in turn
            mapping = f"slot{pe}"
        else:
            mapping = f"ppr:{counts.pop() if counts else per_node}:node{pe}"
        argv = ["mpiexec", "-n", str(ranks), "--map-by", mapping]
        if merged:  # none: multi-node with no names; Open MPI reads the batch allocation
            argv += ["--host", ",".join(f"{host}:{count}" for host, count in merged)]
        return argv + ["-x", "OMP_NUM_THREADS", *options]
    if kind == "srun":
        cpus = ["--cpus-per-task", str(threads)] if threads > 1 else []
        if parsl_prefix:  # Parsl's line has no threads: add them unless the options did
            given = any(w.startswith(("--cpus-per-task", "-c")) for w in parsl_prefix[1:])
            return parsl_prefix + ([] if given else cpus)
        argv = ["srun", "--ntasks", str(ranks), "--ntasks-per-node", str(per_node)]
        return argv + ["--nodes", str(nodes), *cpus, *options]
    if kind == "aprun":
        depth = ["-d", str(threads)] if threads > 1 else []
        if parsl_prefix:
            return parsl_prefix + ([] if "-d" in parsl_prefix[1:] else depth)
        return ["aprun", "-n", str(ranks), "-N", str(per_node), *depth, *options]
    raise ValueError(
        f"unknown MPI launcher {kind!r} in the task's context; one of {', '.join(LAUNCHER_KINDS)}"
    )


@dataclass(frozen=True)
class Launch:
    """How one run of a code starts: the prefix before its command and variables for it.

    Attributes:
        prefix: Launcher words before the code's command (``[]``: none).
        env: Variables the run needs: ``OMP_NUM_THREADS``, and as root with an MPI launcher
            :data:`ROOT_ENV`.
        threads: OpenMP threads per rank.
        ranks: MPI ranks asked for (1 for a code run without MPI).
    """

    prefix: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    threads: int = 1
    ranks: int = 1


def plan_launch(
    command: Sequence[str],
    context: Mapping[str, Any] | None,
    *,
    threads: int | None = None,
    parallel: bool = True,
    environ: Mapping[str, str] | None = None,
) -> Launch:
    """How to start ``command`` (the site's command for a code) for the task in ``context``.

    Args:
        command: The code's command (``resolve_command``'s answer).
        context: The task's context (``task_context()``).
        threads: OpenMP threads per rank, when the caller sets them; default the task's
            ``threads_per_rank``. Either way the launch line binds that many cores per rank.
        parallel: ``False`` for a code that is not MPI (xtb): never a prefix, threads only.
        environ: Where Parsl's per-task variables are read (default ``os.environ``).

    Returns:
        The prefix (none when ``command`` already starts with a launcher: the site's fixed
        launcher wins) and the variables for the run.
    """
    context = context or {}
    resources = task_resources(context.get("resources"))
    if threads is not None:
        resources["threads_per_rank"] = threads
    env = {"OMP_NUM_THREADS": str(resources["threads_per_rank"])}
    fixed = starts_with_launcher(command)
    prefix: list[str] = []
    if parallel and not fixed:
        prefix = launch_prefix(resources, context.get("mpi") or None, environ)
    if (prefix or fixed) and _is_root():
        env.update(ROOT_ENV)
    return Launch(
        prefix=prefix,
        env=env,
        threads=resources["threads_per_rank"],
        ranks=resources["ranks"] if parallel else 1,
    )


def granted(
    context: Mapping[str, Any] | None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What the task got, for its result record (``run_task``'s ``granted``).

    Cheap (no process is started): read from the task's resources and, on a site with
    ``mpi:``, the node list (Parsl's ``$PARSL_MPI_NODELIST``, else the site's).

    Returns:
        ``{"nodes": n, "ranks": N, "threads_per_rank": T, "hosts": [...]}``; ``hosts`` is the
        worker's host name when the task runs on it alone, ``[]`` when unknown.
    """
    context = context or {}
    resources = task_resources(context.get("resources"))
    mpi = context.get("mpi") or None
    hosts = task_hosts(resources, mpi, environ)
    nodes = resources["nodes"] if mpi else 1
    if not hosts and nodes == 1:
        hosts = [socket.gethostname()]
    return {
        "nodes": nodes,
        "ranks": resources["ranks"],
        "threads_per_rank": resources["threads_per_rank"],
        "hosts": hosts,
    }


def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0
