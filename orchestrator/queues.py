"""The thinker's face of dispatch: ``send_inputs`` and ``get_result`` by topic, in process.

There is no process hop between the thinker and the dispatcher: a site's future completes
into the topic's queue through a callback, and ``get_result`` takes it from there.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from orchestrator.exceptions import TimeoutException, UnknownTopicError
from orchestrator.models import Result, Task

if TYPE_CHECKING:
    from orchestrator.dispatch.dispatcher import Dispatcher


class Queues:
    """Topic queues between a thinker and the dispatcher (Colmena's ``ColmenaQueues`` API).

    Args:
        topics: Topics results may be sent to; ``default`` is always included.
        keep_inputs: Default for whether results carry their task's inputs.
    """

    def __init__(self, topics: Iterable[str], keep_inputs: bool = True):
        self.topics = set(topics) | {"default"}
        self.keep_inputs = keep_inputs
        self._results: dict[str, queue.SimpleQueue[Result]] = {
            t: queue.SimpleQueue() for t in self.topics
        }
        self._dispatcher: Dispatcher | None = None
        self._count_lock = threading.Lock()  # agents send and take from several threads
        self._sent = 0
        self._returned = 0

    def attach(self, dispatcher: Dispatcher) -> None:
        """Connect the dispatcher that runs the tasks (done once by the campaign runner)."""
        self._dispatcher = dispatcher

    def _check_topic(self, topic: str) -> None:
        if topic not in self.topics:
            known = ", ".join(sorted(self.topics))
            raise UnknownTopicError(
                f"unknown topic {topic!r}; known topics: {known} (declare it in the "
                f"campaign's 'topics' or a @result_processor)"
            )

    def send_inputs(
        self,
        *input_args: Any,
        method: str,
        topic: str = "default",
        keep_inputs: bool | None = None,
        resources: dict[str, Any] | None = None,
        max_retries: int | None = None,
        input_kwargs: dict[str, Any] | None = None,
        task_info: dict[str, Any] | None = None,
        model_version: str | None = None,
        task_walltime: float | None = None,
        **kwargs: Any,
    ) -> str:
        """Submit a task: run ``method(*input_args, **kwargs)`` and send the result to ``topic``.

        Args:
            *input_args: Positional arguments of the method.
            method: Name of a registered method.
            topic: Topic the result goes to.
            keep_inputs: Whether the result carries the inputs (default: the queues' setting).
            resources: Free-form resource hints, recorded on the result.
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
            The task id.

        Raises:
            UnknownTopicError: ``topic`` was not declared.
            UnknownMethodError: ``method`` is not registered.
        """
        self._check_topic(topic)
        dispatcher = self._dispatcher
        if dispatcher is None:
            raise RuntimeError("these queues are not attached to a running campaign")
        spec = dispatcher.methods.get(method)
        if input_kwargs:
            kwargs = {**input_kwargs, **kwargs}
        task = Task(
            method=method,
            topic=topic,
            args=input_args,
            kwargs=kwargs,
            keep_inputs=self.keep_inputs if keep_inputs is None else keep_inputs,
            max_retries=spec.max_retries if max_retries is None else max_retries,
            resources=resources or {},
            task_info=task_info or {},
            model_version=model_version,
            walltime=task_walltime,
        )
        with self._count_lock:
            self._sent += 1
        dispatcher.submit(task)
        return task.task_id

    def put_result(self, result: Result) -> None:
        """Deliver a finished result to its topic (called by the dispatcher)."""
        self._results[result.topic].put(result)

    def get_result(self, topic: str = "default", timeout: float | None = None) -> Result:
        """Wait for the next result on ``topic``.

        Raises:
            TimeoutException: nothing arrived within ``timeout`` seconds.
            UnknownTopicError: ``topic`` was not declared.
        """
        try:
            result = self._results[topic].get(timeout=timeout)
        except KeyError:
            self._check_topic(topic)
            raise
        except queue.Empty:
            raise TimeoutException(f"no result on topic {topic!r} within {timeout} s") from None
        with self._count_lock:
            self._returned += 1
        if self._dispatcher is not None:
            self._dispatcher.received(result)
        return result

    @property
    def active_count(self) -> int:
        """Tasks sent whose results the thinker has not taken yet."""
        return self._sent - self._returned

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
