"""The interface every site backend implements."""

from __future__ import annotations

import os
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.sites import SiteConfig
from orchestrator.models import (
    SITE_FAILURE,
    FailureReason,
    FailureRecord,
    failure_record,
    parse_reason,
)
from orchestrator.resources import Resources


@dataclass
class Outcome:
    """What came back from a worker for one task (the ``run_task`` dict, decoded).

    ``ok`` is False both when the task raised (``failure['where'] == 'task'``) and when the
    site could not run it (``'site'``: worker lost, result too large, serialization).
    ``failure`` is a :class:`~orchestrator.models.FailureRecord`, the shape ``FailureInfo``
    validates.
    """

    ok: bool
    value: Any = None
    failure: FailureRecord | None = None
    host: str | None = None
    pid: int | None = None
    started: float | None = None
    finished: float | None = None
    input_size: int | None = None
    value_size: int | None = None
    remote_id: str | None = None
    """The task's id at the site's service (a Globus Compute task id), when it has one."""
    granted: dict[str, Any] | None = None
    """What the task got on the worker (``run_task``'s ``granted``: nodes, ranks, hosts)."""

    @classmethod
    def from_worker(
        cls, record: dict[str, Any], input_size: int | None, value_size: int | None
    ) -> Outcome:
        """Decode the dict returned by ``orchestrator.apps.runtime.run_task``.

        The worker may run another orch version: its failure dict is rebuilt field by field
        (missing fields get their defaults, unknown ones are dropped, a retired reason name
        becomes the current one).
        """
        raw = record.get("failure")
        failure = None
        if raw is not None:
            details = raw.get("details")
            failure = failure_record(
                str(raw.get("exception_type") or "Exception"),
                str(raw.get("message", "")),
                where="task",
                reason=parse_reason(raw.get("reason")),
                traceback=str(raw.get("traceback") or ""),
                details=details if isinstance(details, dict) else None,
            )
        return cls(
            ok=record["ok"],
            value=record.get("value"),
            failure=failure,
            host=record.get("host"),
            pid=record.get("pid"),
            started=record.get("started"),
            finished=record.get("finished"),
            input_size=input_size,
            value_size=value_size,
            granted=granted if isinstance(granted := record.get("granted"), dict) else None,
        )

    @classmethod
    def site_failure(
        cls,
        exception_type: str,
        message: str,
        traceback: str = "",
        input_size: int | None = None,
        reason: FailureReason = SITE_FAILURE,
    ) -> Outcome:
        """An outcome for a task the site could not run or return (``where='site'``).

        Args:
            exception_type: Name of the error (an exception class, or the site's own word).
            message: One line saying what went wrong.
            traceback: Tail of a traceback, when there is one.
            input_size: Serialized size of the task's inputs, when known.
            reason: ``site_failure`` unless the caller knows better (``timeout`` for a task
                orch stopped waiting for, ``no_site``, ``cancelled``).
        """
        return cls(
            ok=False,
            failure=failure_record(
                exception_type, message, where="site", reason=reason, traceback=traceback
            ),
            input_size=input_size,
        )


class Site(ABC):
    """A place that runs tasks.

    Subclasses implement ``start``, ``submit``, ``outcome`` and ``shutdown``. ``submit`` returns
    a future; when it is done the dispatcher calls ``outcome(future)``, which never raises: a
    site-side problem becomes a failed ``Outcome`` with ``where='site'``. A site that can no
    longer take tasks marks itself down (``mark_down``) and ``submit`` then raises
    ``SiteUnavailableError``.
    """

    def __init__(self, config: SiteConfig, run_dir: Path, context: Mapping[str, Any] | None = None):
        self.config = config
        self.name = config.name
        self.kind = config.kind
        self.capacity = config.capacity
        self.working_dir = (config.working_dir or run_dir / "sites" / config.name).resolve()
        self.task_context: dict[str, Any] = dict(context or {})
        if config.commands:
            self.task_context["commands"] = config.command_argv()
        """What every task at this site sees through ``apps.runtime.task_context()``: the
        site's ``commands`` plus ``context`` (e.g. the data plane's store for results). Fixed at
        construction: sites serialize it with each method once."""
        if config.mpi is not None:
            self.task_context["mpi"] = self.mpi_context()
        self.image: str | None = None
        """The image the site's tasks run in (its ``container.image``), once verified."""
        self.image_digest: str | None = None
        """That image's ``sha256:`` digest (from the deployment record), recorded in results."""
        self.down_reason: str | None = None
        self._down_listeners: list[Callable[[Site, str], None]] = []
        self._lock = threading.Lock()

    @property
    def is_mpi(self) -> bool:
        """Whether the site runs tasks under MPI (``mpi:``): its capacity counts nodes."""
        return self.config.mpi is not None

    def mpi_context(self) -> dict[str, Any]:
        """``task_context()["mpi"]``: the launcher kind, its options and the node names.

        ``nodes`` is the site's own list (a local site; ``localhost`` once per node by
        default); an endpoint's nodes come from its batch job (``PARSL_MPI_NODELIST``).
        """
        mpi = self.config.mpi
        if mpi is None:
            return {}
        nodes = list(mpi.nodes)
        if not nodes and self.config.backend == "local":
            nodes = ["localhost"] * self.capacity
        return {"launcher": mpi.launcher, "options": mpi.options, "nodes": nodes}

    def slots_for(self, resources: Resources) -> int:
        """Slots a task with ``resources`` takes here (nodes on an MPI site, else cores)."""
        return resources.slots(self.is_mpi)

    def refusal(self, resources: Resources) -> str | None:
        """Why a task with ``resources`` can never run here (None: it can, once there is room)."""
        need = self.slots_for(resources)
        if self.is_mpi:
            mpi = self.config.mpi
            assert mpi is not None
            limit = mpi.ranks_per_node
            if limit is None and self.config.backend == "local":
                limit = os.cpu_count() or 1
            if limit is not None and resources.cores_per_node > limit:
                return (
                    f"site '{self.name}' has {limit} core(s) per node and the task asks for "
                    f"{resources.per_node} rank(s) x {resources.threads_per_rank} thread(s) "
                    "on one node"
                )
            if need > self.capacity:
                return f"site '{self.name}' has {self.capacity} node(s); the task asks for {need}"
            return None
        if resources.nodes > 1:
            return f"site '{self.name}' has no `mpi:` launcher, so a task there has one node"
        if need > self.capacity:
            return (
                f"site '{self.name}' has {self.capacity} slot(s) (cores); the task asks for "
                f"{need} ({resources.total_ranks} rank(s) x {resources.threads_per_rank} "
                "thread(s))"
            )
        return None

    @property
    def is_down(self) -> bool:
        """Whether the site has been declared unable to run tasks."""
        return self.down_reason is not None

    def on_down(self, listener: Callable[[Site, str], None]) -> None:
        """Call ``listener(site, reason)`` once when the site is declared down."""
        self._down_listeners.append(listener)

    def mark_down(self, reason: str) -> None:
        """Declare the site down (idempotent) and tell the listeners."""
        with self._lock:
            if self.down_reason is not None:
                return
            self.down_reason = reason
        for listener in self._down_listeners:
            listener(self, reason)

    def mark_up(self) -> None:
        """Declare the site able to take tasks again (after :meth:`try_revive` succeeded)."""
        with self._lock:
            self.down_reason = None

    def try_revive(self) -> bool:
        """Try to make a down site usable again; True (and the site up) when it answers.

        The dispatcher calls it from time to time while the site is down. The default cannot
        revive anything.
        """
        return False

    def health_check(self) -> str | None:
        """Look at the site while the campaign runs; mark it down when it cannot run tasks.

        The dispatcher calls it about every second for each site that is up. A site that
        finds itself unusable marks itself down, hands back the tasks it holds (their futures
        complete as site failures, so they are re-placed) and returns the reason. The default
        finds nothing.
        """
        return None

    def lost(self, futures: list[Future[Any]]) -> dict[Future[Any], str]:
        """Of these unfinished futures from :meth:`submit`, those whose result will never come.

        The dispatcher asks about every second; a future reported twice in a row is failed as
        a lost task (a site failure, retried within its budget). Maps each lost future to
        why. The default cannot tell, and reports none.
        """
        return {}

    def inject(self, fault: str, rng: random.Random, stall_s: float = 5.0) -> str | None:
        """Cause one fault at this site for chaos testing (``orch launch --inject-faults``).

        Returns what was done, or None when the site cannot cause it (the default: remote
        sites cannot kill processes on another machine).
        """
        return None

    def cancel(self, task_id: str) -> str:
        """Stop task ``task_id`` (sent with :meth:`submit`) at the site, if the site can.

        The dispatcher has already given up on the task's result and freed its slot; this
        only stops the work. Returns what was done, in words. The default (a remote service
        with no remote cancel, like Globus Compute) ignores the result when it comes.
        """
        return "the site has no remote cancel: its result will be ignored"

    def check(self) -> str | None:
        """Pre-flight: ``None`` when the site can take tasks, else the one-line reason.

        Runs before the thinker starts (``orch launch``); the default has nothing to check.
        """
        return None

    @abstractmethod
    def start(self) -> None:
        """Make the site ready (may be lazy for remote sites)."""

    @abstractmethod
    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        walltime: float | None = None,
        task_id: str | None = None,
        resources: Resources | None = None,
    ) -> Future[Any]:
        """Send one call of ``fn`` (wrapped by ``run_task``) to the site.

        ``walltime`` (seconds), when given, is enforced on the worker: the call is stopped
        and reported as a failure with reason ``timeout``. ``task_id`` is orch's id of the
        task, which :meth:`cancel` names it by. ``resources`` (default: one rank) reach the
        worker as ``task_context()["resources"]`` (``Resources.worker_view()``) and, on a site
        with ``mpi:``, ``task_context()["mpi"]`` (:meth:`mpi_context`); an MPI engine also
        gets them as the task's ``resource_specification``.
        """

    @abstractmethod
    def outcome(self, future: Future[Any]) -> Outcome:
        """Decode a done future from ``submit``; never raises."""

    @abstractmethod
    def shutdown(self) -> None:
        """Stop everything the site started (idempotent); every process it spawned is reaped."""
