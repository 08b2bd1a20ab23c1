"""Local mock site: a real Globus Compute endpoint engine (Parsl HTEX workers) on this machine.

Tasks are packed exactly as the Globus Compute SDK packs them for a real endpoint and handed
to ``GlobusComputeEngine.submit``, so the worker runs the same ``execute_task`` path.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from globus_compute_common import messagepack
from globus_compute_common.messagepack.message_types import Result as PackedResult
from globus_compute_common.messagepack.message_types import Task as PackedTask
from globus_compute_endpoint.engines import GlobusComputeEngine
from globus_compute_endpoint.engines.base import GCFuture
from globus_compute_sdk.serialize import ComputeSerializer
from parsl.providers import LocalProvider

from orchestrator.apps.runtime import TaskWrapper
from orchestrator.config.sites import SiteConfig
from orchestrator.containers.plan import plan_for
from orchestrator.exceptions import SiteUnavailableError
from orchestrator.sites.base import Outcome, Site

logger = logging.getLogger(__name__)

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
        self._packed: dict[tuple[Callable[..., Any], float | None], str] = {}
        self._endpoint_id = uuid.uuid5(uuid.NAMESPACE_URL, f"orch-local-site:{config.name}")
        self._life = threading.RLock()  # a restart and a shutdown never overlap
        self._closed = False
        self.container_plan = plan_for(
            config, run_dir.resolve(), self.working_dir, self._extra_paths
        )
        """How the site's tasks run in its image (None: no ``container:``)."""
        if self.container_plan is not None and self.container_plan.mode == "exec":
            self.task_context["container"] = self.container_plan.exec_spec()

    def _worker_init(self) -> str:
        lines = []
        paths = [p for p in self._extra_paths if p]
        if paths:
            joined = os.pathsep.join(paths)
            lines.append(f'export PYTHONPATH="{joined}${{PYTHONPATH:+:$PYTHONPATH}}"')
        if self.config.worker_init:
            lines.append(self.config.worker_init)
        return "\n".join(lines)

    def start(self) -> None:
        """Start the engine: interchange plus one block of ``capacity`` workers."""
        bin_dir = os.path.dirname(sys.executable)
        path = os.environ.get("PATH", "")
        if not path.startswith(bin_dir + os.pathsep):
            os.environ["PATH"] = bin_dir + os.pathsep + path
        self.working_dir.mkdir(parents=True, exist_ok=True)
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
        engine = GlobusComputeEngine(
            **container,
            label=f"orch-{self.name}",
            address="127.0.0.1",
            max_workers_per_node=self.capacity,
            available_accelerators=accelerators or [],
            encrypted=False,
            heartbeat_period=5,
            heartbeat_threshold=30,
            provider=LocalProvider(
                init_blocks=0,  # launched below: the status poller would wait one period (5 s)
                min_blocks=0,
                max_blocks=1,
                nodes_per_block=1,
                worker_init=self._worker_init(),
            ),
            job_status_kwargs={"strategy": "none", "max_idletime": 0},
        )
        self._engine = engine
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
    ) -> Future[Any]:
        """Pack the call and hand it to the engine; the future completes with packed bytes."""
        engine = self._engine
        if engine is None or self.is_down:
            raise SiteUnavailableError(self.down_reason or f"site '{self.name}' is not started")
        task_id = uuid.uuid4()
        packed_function = self._packed.get((fn, walltime))
        if packed_function is None:  # once per method: only arguments are serialized per task
            context = self.task_context
            if walltime is not None:
                context = {**context, "walltime": walltime}
            packed_function = _SERIALIZER.serialize(TaskWrapper(fn, context))
            self._packed[(fn, walltime)] = packed_function
        packed = pack_call(task_id, fn, args, kwargs, packed_function)
        future = GCFuture(task_id)
        future.input_size = len(packed)
        engine.submit(future, packed, {})
        return future

    def outcome(self, future: Future[Any]) -> Outcome:
        """Decode the engine's packed result (never raises).

        A failure that left the engine unusable (its worker pool died, so Parsl set its
        "bad state") marks the site down: every later task would fail the same way.
        """
        input_size = getattr(future, "input_size", None)
        try:
            outcome = unpack_outcome(future.result(), input_size)
        except Exception as exc:  # noqa: BLE001 - a bad reply is a site failure, not a crash
            outcome = Outcome.site_failure(type(exc).__name__, str(exc), input_size=input_size)
        if not outcome.ok and outcome.failure and outcome.failure.get("where") == "site":
            engine = self._engine
            if engine is not None and engine.executor.bad_state_is_set:
                self.mark_down(
                    f"site '{self.name}': its workers were lost ("
                    f"{str(outcome.failure.get('message', ''))[:200]}); orch restarts them"
                )
        return outcome

    def try_revive(self) -> bool:
        """Replace a dead engine by a fresh one (new interchange and workers)."""
        with self._life:
            if self._closed or not self.is_down:
                return not self.is_down and not self._closed
            logger.info("site %s: restarting its engine", self.name)
            old, self._engine = self._engine, None
            if old is not None:
                try:
                    old.shutdown()
                except Exception:  # noqa: BLE001 - the old engine is being replaced anyway
                    logger.debug("site %s: old engine: stop failed", self.name, exc_info=True)
            self._packed.clear()
            try:
                self.start()
            except Exception:  # noqa: BLE001 - stays down; the dispatcher tries again later
                logger.warning("site %s: engine restart failed", self.name, exc_info=True)
                return False
            self.mark_up()
            return True

    def shutdown(self) -> None:
        """Stop the interchange and workers (idempotent)."""
        with self._life:
            self._closed = True
        self._stop_engine()

    def _stop_engine(self) -> None:
        engine, self._engine = self._engine, None
        if engine is None:
            return
        try:
            engine.shutdown()
        except Exception:  # noqa: BLE001 - shutting down must not mask the original error
            logger.exception("site %s: error while shutting the engine down", self.name)
        logger.info("site %s: local engine stopped", self.name)
