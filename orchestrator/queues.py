"""The thinker's face of dispatch: ``send_inputs`` and ``get_result`` by topic, in process.

There is no process hop between the thinker and the dispatcher: a site's future completes
into the topic's queue through a callback, and ``get_result`` takes it from there.

The client calls are Colmena's (``ColmenaQueues``): ``send_inputs``, ``get_result``,
``wait_until_done``, ``flush``, ``send_kill_signal``, ``active_count``, ``set_role``.
"""

from __future__ import annotations

import logging
import pickle
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from orchestrator.exceptions import TimeoutException, UnknownMethodError, UnknownTopicError
from orchestrator.models import CANCELLED, FailureInfo, Result, Task, Timestamps, is_proxy
from orchestrator.resources import Resources, ResourcesError

if TYPE_CHECKING:
    from orchestrator.dispatch.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

KILLED_MESSAGE = "the queues were closed by send_kill_signal(); no new task is accepted"


class Queues:
    """Topic queues between a thinker and the dispatcher (Colmena's ``ColmenaQueues`` API).

    Tasks sent before a dispatcher is attached wait in the queues and go out, in order, when
    it is (a Colmena main script may send before its task server has started).

    Args:
        topics: Topics results may be sent to; ``default`` is always included.
        keep_inputs: Default for whether results carry their task's inputs.
    """

    def __init__(self, topics: Iterable[str] = (), keep_inputs: bool = True):
        self.topics = set(topics) | {"default"}
        self.keep_inputs = keep_inputs
        self.role = "any"
        self._results: dict[str, queue.SimpleQueue[Result]] = {
            t: queue.SimpleQueue() for t in self.topics
        }
        self._dispatcher: Dispatcher | None = None
        # agents send and take from several threads; the dispatcher delivers from others
        self._count = threading.Condition()
        self._active: Counter[str] = Counter()  # tasks sent, result not taken yet, per topic
        self._held: list[tuple[Task, str | None, int | None]] = []  # sent before attach
        self._undelivered = 0  # tasks sent whose result has not reached a topic yet
        self._closed: tuple[str, str] | None = None  # (message, reason) for tasks refused
        self._killed = threading.Event()
        self.last_sent = time.monotonic()
        """``time.monotonic()`` of the last ``send_inputs`` (or of creation)."""

    # ------------------------------------------------------------------ wiring

    def attach(self, dispatcher: Dispatcher) -> None:
        """Connect the dispatcher that runs the tasks; tasks sent before go out now."""
        with self._count:
            self._dispatcher = dispatcher
            held, self._held = self._held, []
        for task, method, max_retries in held:
            try:
                self._submit(dispatcher, task, method, max_retries)
            except Exception as exc:  # noqa: BLE001 - the sender is gone: fail the task
                with self._count:
                    self._active[task.topic] += 1
                    self._undelivered += 1
                self._refuse(task, f"{type(exc).__name__}: {exc}", reason="bad_input")

    @property
    def killed(self) -> threading.Event:
        """Set once :meth:`send_kill_signal` was called."""
        return self._killed

    def set_role(self, role: str) -> None:
        """Record the role of these queues (Colmena's call; orch's queues serve both ends)."""
        self.role = str(getattr(role, "value", role))

    def _check_topic(self, topic: str) -> None:
        if topic not in self.topics:
            known = ", ".join(sorted(self.topics))
            raise UnknownTopicError(
                f"unknown topic {topic!r}; known topics: {known} (declare it in the "
                f"campaign's 'topics', a @result_processor, or PipeQueues(topics=[...]))"
            )

    # ------------------------------------------------------------------ client calls

    def send_inputs(
        self,
        *input_args: Any,
        method: str | None = None,
        topic: str = "default",
        keep_inputs: bool | None = None,
        resources: Any = None,
        max_retries: int | None = None,
        input_kwargs: dict[str, Any] | None = None,
        task_info: dict[str, Any] | None = None,
        model_version: str | None = None,
        task_walltime: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Submit a task: run ``method(*input_args, **kwargs)`` and send the result to ``topic``.

        The inputs are copied (serialized and read back) when sent, as Colmena does: changing
        a list after sending it changes neither the task nor ``result.args``.

        Args:
            *input_args: Positional arguments of the method.
            method: Name of a registered method; may be left out when only one is registered
                (Colmena's default).
            topic: Topic the result goes to.
            keep_inputs: Whether the result carries the inputs (default: the queues' setting).
            resources: What the task needs: a :class:`~orchestrator.resources.Resources`, a
                mapping of its fields (``{"nodes": 2, "ranks_per_node": 4}``) or Colmena's
                ``ResourceRequirements``; default: the method's. Placement counts it (nodes
                on an ``mpi:`` site, cores elsewhere) and the simulation wrappers start their
                code with that many ranks. A request that cannot be read, or that no site
                of the method's kind can give, gets a failed result with reason
                ``bad_input`` (the thinker goes on).
            max_retries: Retries after a failure (default: the method's ``max_retries``).
            input_kwargs: Keyword arguments (Colmena's spelling; merged with ``**kwargs``).
            task_info: Any information to carry through to the result.
            model_version: The model version that chose this task, or that the task uses
                (lineage: recorded on the result and in the results file).
            task_walltime: Seconds the task may run on its worker (default: the method's
                ``walltime``); past it the task is stopped and fails with reason ``timeout``.
                (``walltime=`` itself is passed to the method, like any keyword argument.)
            **kwargs: Keyword arguments of the method.

        Returns:
            The task id. After :meth:`send_kill_signal` the task is not run: its result, at
            once, is a failure with reason ``cancelled``.

        Raises:
            UnknownTopicError: ``topic`` was not declared.
            UnknownMethodError: ``method`` is not registered, or was left out while several
                methods are.
        """
        self._check_topic(topic)
        if input_kwargs:
            kwargs = {**input_kwargs, **kwargs}
        args, kwargs = _snapshot(input_args, kwargs)
        try:
            requested = Resources.parse(resources)
            bad_resources = None
        except ResourcesError as exc:
            requested, bad_resources = Resources(), str(exc)
        task = Task(
            method=method or "",
            topic=topic,
            args=args,
            kwargs=kwargs,
            keep_inputs=self.keep_inputs if keep_inputs is None else keep_inputs,
            resources=requested,
            resources_given=resources is not None,
            task_info=dict(task_info or {}),
            model_version=model_version,
            walltime=task_walltime,
        )
        with self._count:
            dispatcher = self._dispatcher
            if dispatcher is not None:
                task.method = _method_name(dispatcher, method)  # raises before counting
            self._active[topic] += 1
            self._undelivered += 1
            self.last_sent = time.monotonic()
            closed = self._closed
            if closed is None and dispatcher is None and bad_resources is None:
                self._held.append((task, method, max_retries))
        if closed is not None:
            self._refuse(task, *closed)
        elif bad_resources is not None:
            self._refuse(task, bad_resources, reason="bad_input")
        elif dispatcher is not None:
            self._submit(dispatcher, task, method, max_retries)
        return task.task_id

    def _submit(
        self, dispatcher: Dispatcher, task: Task, method: str | None, max_retries: int | None
    ) -> None:
        try:
            task.method = _method_name(dispatcher, method)
        except UnknownMethodError as exc:  # a held task whose method the server lacks
            self._refuse(task, str(exc), reason="bad_input")
            return
        spec = dispatcher.methods.get(task.method)
        task.max_retries = spec.max_retries if max_retries is None else max_retries
        try:
            dispatcher.submit(task)
        except BaseException:
            with self._count:  # not sent after all: nobody waits for its result
                self._active[task.topic] -= 1
                self._undelivered -= 1
                self._count.notify_all()
            raise

    def _refuse(self, task: Task, message: str = KILLED_MESSAGE, reason: str = CANCELLED) -> None:
        """Deliver a failed result for a task that was not run."""
        error = {CANCELLED: "TaskCancelled", "bad_input": "ValueError"}.get(
            reason, "SiteUnavailableError"
        )
        result = task.make_result(
            success=False,
            failure_info=FailureInfo(
                exception_type=f"orchestrator.{error}",
                message=message,
                where="site",
                reason=reason,
            ),
            timestamps=Timestamps(created=task.created, returned=time.time()),
        )
        self.put_result(result)

    def put_result(self, result: Result) -> None:
        """Deliver a finished result to its topic (called by the dispatcher)."""
        self._results[result.topic].put(result)
        with self._count:
            self._undelivered = max(0, self._undelivered - 1)
            self._count.notify_all()

    def wait_delivered(self, timeout: float | None = None) -> bool:
        """Wait until every task sent has its result in a topic (taken or not).

        Returns:
            Whether that happened within ``timeout`` seconds.
        """
        with self._count:
            return self._count.wait_for(lambda: self._undelivered == 0, timeout)

    def get_result(self, topic: str = "default", timeout: float | None = None) -> Result:
        """Wait for the next result on ``topic``.

        Raises:
            TimeoutException: nothing arrived within ``timeout`` seconds (a ``BaseException``,
                as in Colmena).
            UnknownTopicError: ``topic`` was not declared.
        """
        try:
            result = self._results[topic].get(timeout=timeout)
        except KeyError:
            self._check_topic(topic)
            raise
        except queue.Empty:
            raise TimeoutException(f"no result on topic {topic!r} within {timeout} s") from None
        self._taken(result)
        return result

    def _taken(self, result: Result) -> None:
        with self._count:
            if self._active[result.topic] > 0:
                self._active[result.topic] -= 1
            self._count.notify_all()
        if self._dispatcher is not None:
            self._dispatcher.received(result)

    @property
    def active_count(self) -> int:
        """Tasks sent whose results the thinker has not taken yet (every topic)."""
        with self._count:
            return sum(self._active.values())

    def active_in(self, topics: Iterable[str]) -> int:
        """Tasks sent to any of ``topics`` whose results the thinker has not taken yet."""
        with self._count:
            return sum(self._active[t] for t in topics)

    def wait_until_done(self, timeout: float | None = None) -> bool:
        """Wait until the result of every task sent has been taken (Colmena's call).

        Returns:
            Whether that happened within ``timeout`` seconds (``None``: wait for ever).
        """
        with self._count:
            return self._count.wait_for(lambda: sum(self._active.values()) == 0, timeout)

    def flush(self) -> int:
        """Throw away every result waiting in any topic (Colmena's call).

        The results count as taken (so :meth:`wait_until_done` does not wait for them) and
        are still written to the results files.

        Returns:
            How many results were thrown away.
        """
        flushed = self.drain()
        for result in flushed:
            self._taken(result)
        return len(flushed)

    def send_kill_signal(self) -> None:
        """Close the queues: tasks sent from now on are not run (Colmena's call).

        In Colmena this stops the task server. orch has none to stop: tasks already sent
        keep running and their results still arrive; a task sent afterwards gets, at once, a
        failed result with reason ``cancelled``. A Colmena task-server adapter watching
        :attr:`killed` ends the campaign's dispatching once the tasks in flight are back.
        """
        self.close(KILLED_MESSAGE, CANCELLED)
        self._killed.set()

    def close(self, message: str, reason: str = CANCELLED) -> None:
        """Refuse tasks from now on: each gets, at once, a failed result with ``message``.

        Tasks sent but held (no dispatcher attached yet) are refused too. The first close
        wins: a later one does not change the message.

        Args:
            message: Why the task was not run (its ``failure_info.message``).
            reason: Its ``failure_info.reason``, e.g. ``cancelled`` or ``site_failure``.
        """
        with self._count:
            if self._closed is None:
                self._closed = (message, reason)
            held, self._held = self._held, []
        for task, _, _ in held:
            self._refuse(task, message, reason)

    def drain(self) -> list[Result]:
        """Remove and return every result still waiting in any topic."""
        left: list[Result] = []
        for q in self._results.values():
            while True:
                try:
                    left.append(q.get_nowait())
                except queue.Empty:
                    break
        return left


def _method_name(dispatcher: Dispatcher, method: str | None) -> str:
    """The method a task runs: the one named, or the only one registered."""
    if method:
        dispatcher.methods.get(method)  # raises UnknownMethodError with the known names
        return method
    names = [m.name for m in dispatcher.methods]
    if len(names) == 1:
        return names[0]
    raise UnknownMethodError(
        f"send_inputs() without method= needs exactly one registered method, and there are "
        f"{len(names)}: {', '.join(names)}; pass method='NAME'"
    )


SNAPSHOT_LIMIT = 1 << 20
"""Largest serialized argument (bytes) copied when sent. A larger one is sent as it is: the
data plane puts a value shared by many tasks into its store once, by identity, and a copy per
task would defeat that. Do not change such a value after sending it."""


def _snapshot(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Copies of a task's inputs, taken by serializing them (as Colmena does when it sends).

    Each argument is copied on its own; one that pickle cannot copy (a lambda, an open
    handle), a ProxyStore proxy, or one over :data:`SNAPSHOT_LIMIT` serialized is kept as it
    is (the site's own serializer may still send it, or fails the task with the reason).
    """
    return tuple(_copy(a) for a in args), {k: _copy(v) for k, v in kwargs.items()}


_IMMUTABLE = frozenset({type(None), int, float, str, bytes, bool, complex})


def _copy(value: Any) -> Any:
    # A proxy first: isinstance() against other types would resolve it (and use up a
    # single-use result proxy).
    if is_proxy(value):
        return value
    if type(value) in _IMMUTABLE:
        return value  # nothing to copy
    try:
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - anything pickle refuses is left to the site
        return value
    if len(blob) > SNAPSHOT_LIMIT:
        return value
    return pickle.loads(blob)
