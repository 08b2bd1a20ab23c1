"""Local mock site: a real Globus Compute endpoint engine (Parsl HTEX workers) on this machine.

Tasks are packed exactly as the Globus Compute SDK packs them for a real endpoint and handed
to ``GlobusComputeEngine.submit``, so the worker runs the same ``execute_task`` path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shlex
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any

import psutil
from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Result as PackedResult
from globus_compute_common.messagepack.message_types import Task as PackedTask
from globus_compute_endpoint.engines import GlobusComputeEngine, GlobusMPIEngine
from globus_compute_endpoint.engines.base import GCFuture
from globus_compute_sdk.serialize import ComputeSerializer
from parsl.executors.high_throughput.errors import ManagerLost
from parsl.providers import LocalProvider

from orchestrator.apps.runtime import CANCEL_SIGNAL, TaskWrapper, control_files
from orchestrator.config.sites import SiteConfig
from orchestrator.containers.plan import plan_for
from orchestrator.exceptions import SiteUnavailableError
from orchestrator.ids import new_uuid
from orchestrator.resources import Resources
from orchestrator.sites import htex
from orchestrator.sites.base import Outcome, Site
from orchestrator.sites.launchers import PrefixLauncher, PrefixSimpleLauncher

logger = logging.getLogger(__name__)

HEARTBEAT_PERIOD_S = 1
"""Seconds between heartbeats of a worker pool and its interchange (both ways)."""

HEARTBEAT_THRESHOLD_S = 3
"""Seconds without a heartbeat after which the interchange drops a worker pool (failing the
tasks it held, which orch re-places) and a worker pool gives its interchange up."""

POOL_START_S = 120.0
"""Seconds a site's worker pool may take to connect after the engine starts before the site
counts as down (a containerized pool starts its image first)."""

ENGINE_STOP_S = 30.0
"""Longest wait for an engine's own shutdown before orch ends its processes itself."""

REVIVE_CONNECT_S = 30.0
"""Seconds a restarted engine waits for its worker pool; without one the site stays down."""

CANCEL_KILL_S = 10.0
"""Seconds a cancelled task's worker has to stop it (on :data:`CANCEL_SIGNAL`) before orch
kills the worker and what it started (the pool starts a new worker)."""

_MANAGER_LOST = ManagerLost.__name__
"""Named in the message of a task whose worker pool the interchange dropped."""

FAULTS = ("kill_worker", "kill_pool", "kill_interchange", "stall_worker", "drop_result")
"""Faults :meth:`LocalSite.inject` can cause (``orch launch --inject-faults``)."""

_SERIALIZER = ComputeSerializer()
_PACKED_EMPTY = {(): _SERIALIZER.serialize(()), "{}": _SERIALIZER.serialize({})}


def pack_call(
    task_id: uuid.UUID,
    fn: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    packed_function: str | None = None,
) -> bytes:
    """Pack ``TaskWrapper(fn)(*args, **kwargs)`` as the SDK packs a task for an endpoint.

    Args:
        task_id: The task's id in the packed message.
        fn: The task's function.
        args: Positional arguments.
        kwargs: Keyword arguments.
        packed_function: ``serialize(TaskWrapper(fn, context))`` made earlier, to skip
            serializing the function for every task.

    Returns:
        The messagepack ``Task`` bytes an endpoint's engine receives.
    """
    buffer = _SERIALIZER.pack_buffers(
        [
            packed_function or _SERIALIZER.serialize(TaskWrapper(fn)),
            _SERIALIZER.serialize(args) if args else _PACKED_EMPTY[()],
            _SERIALIZER.serialize(kwargs) if kwargs else _PACKED_EMPTY["{}"],
        ]
    )
    return messagepack.pack(PackedTask(task_id=task_id, task_buffer=buffer))


def unpack_outcome(packed: bytes, input_size: int | None) -> Outcome:
    """Decode the packed ``Result`` an engine returns into an ``Outcome``."""
    result = messagepack.unpack(packed)
    if not isinstance(result, PackedResult):
        return Outcome.site_failure(
            "InvalidMessage", f"engine returned {type(result).__name__}", input_size=input_size
        )
    if result.is_error:
        details = result.error_details
        code = details.code if details is not None else "RemoteExecutionError"
        text = str(result.data)
        lines = [line.strip() for line in text.splitlines() if line.strip(" -\t")]
        last = lines[-1] if lines else code
        return Outcome.site_failure(code, last, traceback=text[-4000:], input_size=input_size)
    record = _SERIALIZER.deserialize(result.data)
    return Outcome.from_worker(record, input_size=input_size, value_size=len(result.data))


class LocalSite(Site):
    """A site whose workers are Parsl HTEX workers started on this machine.

    The engine's interchange and worker pool are child processes; ``shutdown`` stops them
    all. The worker environment gets this interpreter's ``bin/`` first on PATH (the engine
    launches its processes through ``globus-compute-endpoint``) and the orchestrator's
    ``sys.path`` entries on PYTHONPATH, so campaign modules loaded from a file import there.
    """

    def __init__(
        self,
        config: SiteConfig,
        run_dir: Path,
        context: Mapping[str, Any] | None = None,
        *,
        extra_paths: list[str] | None = None,
    ):
        super().__init__(config, run_dir, context)
        self._extra_paths = list(extra_paths or [])
        self._engine: GlobusComputeEngine | None = None
        self._packed: dict[tuple[Callable[..., Any], float | None, Resources], str] = {}
        self._endpoint_id = uuid.uuid5(uuid.NAMESPACE_URL, f"orch-local-site:{config.name}")
        self._life = threading.RLock()  # a restart and a shutdown never overlap
        self._closed = False
        # what the dispatcher holds -> (the engine's own future, the engine it went to)
        self._pending: dict[Future[Any], tuple[GCFuture, GlobusComputeEngine]] = {}
        self._pending_lock = threading.Lock()
        self._started_at = 0.0
        self._pool_seen = False
        self._drops = 0  # results still to drop (fault injection)
        self._engine_ids: dict[str, str] = {}  # orch's task id -> the engine's (cancel)
        self.container_plan = plan_for(
            config, run_dir.resolve(), self.working_dir, self._extra_paths
        )
        """How the site's tasks run in its image (None: no ``container:``)."""
        if self.container_plan is not None and self.container_plan.mode == "exec":
            self.task_context["container"] = self.container_plan.exec_spec()
        self.control_dir = self.working_dir / "control"
        """Where workers name the task they run and orch flags tasks to cancel."""
        self.task_context["control_dir"] = str(self.control_dir)

    def _worker_init(self) -> str:
        lines = []
        paths = [p for p in self._extra_paths if p]
        if paths:
            joined = os.pathsep.join(paths)
            lines.append(f'export PYTHONPATH="{joined}${{PYTHONPATH:+:$PYTHONPATH}}"')
        if self.config.worker_init:
            lines.append(self.config.worker_init)
        return "\n".join(lines)

    def _node_list_init(self, worker_init: str) -> str:
        """``worker_init`` plus the node list Parsl's MPI mode reads (a PBS node file).

        The MPI engine allots nodes to tasks from the batch job's node list; here the "job"
        is this machine, and the list names the site's nodes (``mpi.nodes``; ``localhost``
        once per node by default).
        """
        node_file = self.working_dir / "nodefile"
        nodes = self.mpi_context()["nodes"]
        node_file.write_text("".join(f"{node}\n" for node in nodes))
        line = f"export PBS_NODEFILE={shlex.quote(str(node_file))}"
        return f"{worker_init}\n{line}" if worker_init else line

    def start(self) -> None:
        """Start the engine: interchange plus one block of ``capacity`` workers.

        A site with ``mpi:`` runs Globus Compute's MPI engine (Parsl's ``MPIExecutor``):
        one worker per node, each task given the nodes it asks for from the site's node list.
        """
        bin_dir = os.path.dirname(sys.executable)
        path = os.environ.get("PATH", "")
        if not path.startswith(bin_dir + os.pathsep):
            os.environ["PATH"] = bin_dir + os.pathsep + path
        self.working_dir.mkdir(parents=True, exist_ok=True)
        self.control_dir.mkdir(exist_ok=True)
        accelerators = list(self.config.accelerators)
        container: dict[str, Any] = {}
        plan = self.container_plan
        if plan is not None:
            for host_path in plan.host_paths():  # a bind's source must exist
                host_path.mkdir(parents=True, exist_ok=True)
            if plan.mode == "workers":  # the worker pool runs in the image, as on an endpoint
                container = {
                    "container_type": "custom",
                    "container_cmd_options": plan.launch_template(self.working_dir),
                }
        worker_init = self._worker_init()
        if self.config.mpi is not None:
            engine: GlobusComputeEngine = GlobusMPIEngine(
                **container,
                label=f"orch-{self.name}",
                address=self.config.address,
                max_workers_per_block=self.capacity,  # one task per node at most
                mpi_launcher="mpiexec",  # Parsl's word for both MPIs; wrappers build the line
                encrypted=False,
                heartbeat_period=HEARTBEAT_PERIOD_S,
                heartbeat_threshold=HEARTBEAT_THRESHOLD_S,
                provider=LocalProvider(
                    init_blocks=0,
                    min_blocks=0,
                    max_blocks=1,
                    nodes_per_block=1,
                    launcher=PrefixSimpleLauncher(self.config.launcher),
                    worker_init=self._node_list_init(worker_init),
                ),
                job_status_kwargs={"strategy": "none", "max_idletime": 0},
            )
        else:
            engine = GlobusComputeEngine(
                **container,
                label=f"orch-{self.name}",
                address=self.config.address,
                max_workers_per_node=self.capacity,
                available_accelerators=accelerators or [],
                encrypted=False,
                heartbeat_period=HEARTBEAT_PERIOD_S,
                heartbeat_threshold=HEARTBEAT_THRESHOLD_S,
                provider=LocalProvider(
                    init_blocks=0,  # launched below: the poller would wait one period (5 s)
                    min_blocks=0,
                    max_blocks=1,
                    nodes_per_block=1,
                    launcher=PrefixLauncher(self.config.launcher),
                    worker_init=worker_init,
                ),
                job_status_kwargs={"strategy": "none", "max_idletime": 0},
            )
        if plan is None or plan.mode != "workers":  # the pool runs this Python
            htex.launch_directly(engine)
        self._engine = engine
        self._started_at = time.monotonic()
        self._pool_seen = False
        try:
            engine.start(endpoint_id=self._endpoint_id, run_dir=str(self.working_dir))
            engine.scale_out(1)
        except BaseException:
            self._stop_engine()
            raise
        logger.info("site %s: local engine started in %s", self.name, self.working_dir)

    def submit(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        walltime: float | None = None,
        task_id: str | None = None,
        resources: Resources | None = None,
    ) -> Future[Any]:
        """Pack the call and hand it to the engine; the future completes with packed bytes.

        ``resources`` go in the task's context (once per method and shape of request); on an
        MPI site they are also the task's ``resource_specification``, from which the engine
        allots nodes (it holds a task until its nodes are free).

        ``task_id`` (orch's) is mapped to the engine's id of the task, which names its
        control files on the worker (``GC_TASK_UUID``), so that :meth:`cancel` can find and
        stop it there.

        The future returned is orch's own, completed from the engine's: when the engine loses
        the task, or the site goes down, orch completes it with the failure itself.
        """
        engine = self._engine
        if engine is None or self.is_down:
            raise SiteUnavailableError(self.down_reason or f"site '{self.name}' is not started")
        resources = resources or Resources()
        key = (fn, walltime, resources)
        packed_function = self._packed.get(key)
        if packed_function is None:  # once per method: only arguments are serialized per task
            context = {**self.task_context, "resources": resources.worker_view()}
            if walltime is not None:
                context["walltime"] = walltime
            packed_function = _SERIALIZER.serialize(TaskWrapper(fn, context))
            self._packed[key] = packed_function
        spec: dict[str, Any] = {}
        if self.config.mpi is not None:
            spec = resources.resource_specification(self.config.mpi.options)
        engine_task = new_uuid()
        packed = pack_call(engine_task, fn, args, kwargs, packed_function)
        engine_future = GCFuture(engine_task)
        if task_id is not None:
            self._engine_ids[task_id] = str(engine_task)
        future: Future[Any] = Future()
        future.input_size = len(packed)  # type: ignore[attr-defined]
        with self._pending_lock:
            self._pending[future] = (engine_future, engine)
            drop = self._drops > 0
            if drop:
                self._drops -= 1
        if not drop:
            engine_future.add_done_callback(lambda done: self._relay(done, future, task_id))
        engine.submit(engine_future, packed, spec)
        return future

    def _relay(self, done: Future[Any], future: Future[Any], task_id: str | None) -> None:
        with self._pending_lock:
            self._pending.pop(future, None)
        if task_id is not None:
            self._engine_ids.pop(task_id, None)
        try:
            value = done.result()
        except BaseException as exc:  # noqa: BLE001 - handed on as the task's failure
            _complete(future, exc=exc)
        else:
            _complete(future, value=value)

    def _fail_pending(self, engine: GlobusComputeEngine | None, reason: str) -> int:
        """Complete every unfinished task sent to ``engine`` (None: any) with a site failure."""
        with self._pending_lock:
            mine = [f for f, (_, e) in self._pending.items() if engine is None or e is engine]
            for future in mine:
                del self._pending[future]
        for future in mine:
            _complete(future, exc=SiteUnavailableError(reason))
        return len(mine)

    def outcome(self, future: Future[Any]) -> Outcome:
        """Decode the engine's packed result (never raises).

        A failure that left the engine unusable (its worker pool died, so Parsl set its
        "bad state") marks the site down: every later task would fail the same way. A task
        whose worker pool was dropped (``ManagerLost``) makes the site check its engine at
        once, before the task's retry is placed: if that was its only pool, the site is down
        and the retry waits for it rather than being sent to a site with no workers (where
        the next health check would fail it a second time).
        """
        input_size = getattr(future, "input_size", None)
        try:
            outcome = unpack_outcome(future.result(), input_size)
        except Exception as exc:  # noqa: BLE001 - a bad reply is a site failure, not a crash
            outcome = Outcome.site_failure(type(exc).__name__, str(exc), input_size=input_size)
        if not outcome.ok and outcome.failure and outcome.failure.get("where") == "site":
            engine = self._engine
            message = str(outcome.failure.get("message", ""))
            if engine is not None and engine.executor.bad_state_is_set:
                self.mark_down(
                    f"site '{self.name}': its workers were lost ({message[:200]}); "
                    "orch restarts them"
                )
            elif engine is not None and _MANAGER_LOST in message:
                # The interchange reports the loss before it forgets the pool, and answers
                # commands in order: the check below sees the pool gone.
                self.health_check()
        return outcome

    def health_check(self) -> str | None:
        """Mark the site down (handing its tasks back) when its engine cannot run them.

        Down when the interchange exited or does not answer, when the worker pool that had
        connected is gone (the interchange drops a pool it has not heard from for
        :data:`HEARTBEAT_THRESHOLD_S` s: the pool died, or the network between them is cut),
        or when no pool connected within :data:`POOL_START_S` s of the start.

        Returns:
            The reason the site was marked down, or None.
        """
        engine = self._engine
        if engine is None or self._closed or self.is_down:
            return None
        reason = self._engine_problem(engine)
        if reason is None or engine is not self._engine or self._closed:
            return None
        self.mark_down(reason)
        handed = self._fail_pending(engine, reason)
        logger.warning("%s (%d task(s) handed back)", reason, handed)
        return reason

    def _engine_problem(self, engine: GlobusComputeEngine) -> str | None:
        code = htex.interchange_exit_code(engine)
        if code is not None:
            return f"site '{self.name}': its interchange exited (code {code})"
        try:
            if htex.connected_managers(engine):
                self._pool_seen = True
                return None
            if self._pool_seen or htex.connected_blocks(engine):
                return (
                    f"site '{self.name}': its workers were lost (no heartbeat from its worker pool "
                    f"for {HEARTBEAT_THRESHOLD_S} s: the pool died or the network to it is cut)"
                )
        except htex.InterchangeStuck as exc:
            return f"site '{self.name}': {exc}"
        waited = time.monotonic() - self._started_at
        if waited > POOL_START_S:
            return (
                f"site '{self.name}': no worker pool connected {waited:.0f} s after the start; "
                f"see {self.working_dir} for the pool's logs"
            )
        return None

    def lost(self, futures: list[Future[Any]]) -> dict[Future[Any], str]:
        """Of ``futures`` (unfinished, from :meth:`submit`), those the engine has lost.

        A task is lost when its engine was replaced, when the engine finished it but its
        result never reached orch, or when the engine no longer tracks it.
        """
        current = self._engine
        found: dict[Future[Any], str] = {}
        for future in futures:
            if future.done():
                continue
            with self._pending_lock:
                entry = self._pending.get(future)
            if entry is None:
                found[future] = "orch holds no engine task for it"
                continue
            engine_future, engine = entry
            if engine is not current:
                found[future] = "the engine it was sent to was replaced"
            elif engine_future.done():
                found[future] = "the engine finished it but its result never reached orch"
            elif engine_future.executor_task_id is not None and not htex.tracks(
                engine, engine_future.executor_task_id
            ):
                found[future] = "the engine no longer tracks it"
        return found

    def inject(self, fault: str, rng: random.Random, stall_s: float = 5.0) -> str | None:
        """Cause one fault at this site (chaos testing); returns what was done, or None.

        Args:
            fault: One of :data:`FAULTS`.
            rng: Picks the worker to hit.
            stall_s: How long ``stall_worker`` stops a worker (SIGSTOP, then SIGCONT).
        """
        engine = self._engine
        if engine is None or self._closed or self.is_down:
            return None
        if fault == "drop_result":
            with self._pending_lock:
                self._drops += 1
            return "the next result will be dropped"
        if fault == "kill_interchange":
            pid = htex.interchange_pid(engine)
            return _signal(pid, signal.SIGKILL, "interchange") if pid else None
        if fault == "kill_pool":
            pools = htex.pool_processes(engine)
            if not pools:
                return None
            _end_pools(engine)  # the same end as a dead engine's pool gets
            return f"SIGKILL to the worker pool (pid {pools[0].pid}) and its workers"
        workers = htex.worker_processes(engine)
        if not workers:
            return None
        worker = rng.choice(workers)
        if fault == "kill_worker":
            return _signal(worker.pid, signal.SIGKILL, "worker")
        if fault == "stall_worker":
            done = _signal(worker.pid, signal.SIGSTOP, "worker")
            if done is not None:
                timer = threading.Timer(stall_s, _signal, (worker.pid, signal.SIGCONT, "worker"))
                timer.daemon = True
                timer.start()
                return f"{done} for {stall_s:g} s"
            return None
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")

    def cancel(self, task_id: str) -> str:
        """Stop ``task_id`` here: flag it, and signal the worker running it (if one is).

        A task not yet on a worker is skipped by the worker that takes it. A running one gets
        :data:`CANCEL_SIGNAL`, which stops it and ends the processes it started; a worker
        that has not stopped it within :data:`CANCEL_KILL_S` s is killed, with its children.
        """
        engine_id = self._engine_ids.get(task_id)
        if engine_id is None:
            return "the site holds no task of that id (its result may be on its way)"
        running, flag = control_files(self.control_dir, engine_id)
        try:
            flag.touch()
        except OSError as exc:
            return f"cannot flag it in {self.control_dir} ({exc.strerror})"
        pid = _running_pid(running)
        if pid is None:
            return "not started on a worker yet: the worker that takes it skips it"
        engine = self._engine
        workers = {w.pid for w in htex.worker_processes(engine)} if engine is not None else set()
        if pid not in workers:
            return f"its worker (pid {pid}) is not one of this site's workers now"
        if _signal(pid, CANCEL_SIGNAL, "worker") is None:
            return f"its worker (pid {pid}) had ended"
        timer = threading.Timer(CANCEL_KILL_S, self._kill_if_running, (running, pid))
        timer.daemon = True
        timer.start()
        return f"{CANCEL_SIGNAL.name} to its worker (pid {pid}): the task and its processes end"

    def _kill_if_running(self, running: Path, pid: int) -> None:
        if self._closed or _running_pid(running) != pid:
            return
        logger.warning(
            "site %s: worker %d did not stop its cancelled task; killing it", self.name, pid
        )
        with contextlib.suppress(psutil.Error):
            _kill_family(psutil.Process(pid), "worker")

    def try_revive(self) -> bool:
        """Replace a dead engine by a fresh one (new interchange and workers).

        True only once the new engine's worker pool has connected (within
        :data:`REVIVE_CONNECT_S` s); otherwise the new engine is stopped and the site stays
        down, e.g. while the network to its workers is still cut.
        """
        with self._life:
            if self._closed or not self.is_down:
                return not self.is_down and not self._closed
            logger.info("site %s: restarting its engine", self.name)
            old, self._engine = self._engine, None
            if old is not None:
                self._fail_pending(old, f"site '{self.name}': its engine was restarted")
                self._shutdown(old)
            self._packed.clear()
            try:
                self.start()
                connected = self._wait_for_pool(REVIVE_CONNECT_S)
            except Exception:  # noqa: BLE001 - stays down; the dispatcher tries again later
                logger.warning("site %s: engine restart failed", self.name, exc_info=True)
                connected = False
            if not connected:
                logger.warning(
                    "site %s: restarted engine has no worker pool; still down", self.name
                )
                self._stop_engine()
                return False
            self.mark_up()
            return True

    def _wait_for_pool(self, timeout: float) -> bool:
        engine = self._engine
        deadline = time.monotonic() + timeout
        while engine is not None and not self._closed:
            try:
                if htex.connected_managers(engine):
                    self._pool_seen = True
                    return True
            except htex.InterchangeStuck:
                return False
            if time.monotonic() >= deadline or htex.interchange_exit_code(engine) is not None:
                return False
            time.sleep(0.2)  # polling the interchange: it has no "pool connected" event
        return False

    def shutdown(self) -> None:
        """Stop the interchange and workers (idempotent)."""
        with self._life:
            self._closed = True
        self._stop_engine()
        self._fail_pending(None, f"site '{self.name}' was shut down")

    def _stop_engine(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            self._shutdown(engine)

    def _shutdown(self, engine: GlobusComputeEngine) -> None:
        """Stop ``engine``; never hangs, and its processes end even if its shutdown cannot.

        With its interchange dead, the engine's status poller blocks for ever on the command
        channel and ``engine.shutdown()`` waits for that poller: so the shutdown runs in a
        thread, bounded, after the worker pool was ended by PID.
        """
        dead = htex.interchange_exit_code(engine) is not None
        if dead:
            _end_pools(engine)
        errors: list[BaseException] = []

        def stop() -> None:
            try:
                engine.shutdown()
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        stopper = threading.Thread(target=stop, name=f"orch-stop-{self.name}", daemon=True)
        stopper.start()
        stopper.join(1.0 if dead else ENGINE_STOP_S)  # dead: its poller thread never returns
        if stopper.is_alive():
            if not dead:
                logger.warning(
                    "site %s: the engine did not stop within %g s; its processes were ended",
                    self.name,
                    ENGINE_STOP_S,
                )
            _end_pools(engine)
            pid = htex.interchange_pid(engine)
            if pid is not None and htex.interchange_exit_code(engine) is None:
                _signal(pid, signal.SIGKILL, "interchange")
        elif errors:
            logger.error("site %s: error while shutting the engine down: %s", self.name, errors[0])
        logger.info("site %s: local engine stopped", self.name)


def _complete(future: Future[Any], value: Any = None, exc: BaseException | None = None) -> None:
    """Complete ``future`` unless something completed it first."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
    except InvalidStateError:
        pass


def _running_pid(running: Path) -> int | None:
    """The worker pid a task's ``.running`` file names, or None (not running)."""
    try:
        return int(running.read_text().strip())
    except (OSError, ValueError):
        return None


def _signal(pid: int, signum: signal.Signals, what: str) -> str | None:
    """Send ``signum`` to ``pid``; what was done, or None when the process is gone."""
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return None
    return f"{signum.name} to the {what} (pid {pid})"


def _end_pools(engine: GlobusComputeEngine) -> None:
    """SIGKILL the engine's worker pools and everything they started."""
    for pool in htex.pool_processes(engine):
        _kill_family(pool, "worker pool")


def _kill_family(proc: psutil.Process, what: str) -> None:
    """SIGKILL ``proc`` and every process it started."""
    try:
        family = [*proc.children(recursive=True), proc]
    except psutil.Error:
        return
    for member in family:
        _signal(member.pid, signal.SIGKILL, what)
