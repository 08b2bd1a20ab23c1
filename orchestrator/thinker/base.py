"""The thinker programming model: a class whose agent methods run as threads (Colmena-style).

A thinker subclasses :class:`BaseThinker` and marks methods with decorators:

- :func:`agent`: run the method once, in its own thread;
- :func:`result_processor`: call the method with every result that arrives on a topic;
- :func:`task_submitter`: call the method each time slots of a task type can be acquired;
- :func:`event_responder`: call the method each time an :class:`threading.Event` attribute of
  the thinker is set, optionally moving slots between pools while it runs.

:meth:`BaseThinker.run` starts every agent and returns once all have finished. When an agent
returns, ``done`` is set and the others wind down, except for agents marked
``@agent(startup=True)``, whose normal return does not end the campaign. An agent that raises
always sets ``done``; its error is logged and recorded in :attr:`BaseThinker.agent_errors`.

The thinker talks to the rest of orch only through its queues (:class:`ThinkerQueues`):
``send_inputs`` to submit a task by method name, ``get_result`` to take a result of a topic.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol, TypeVar, overload

from orchestrator.exceptions import TimeoutException
from orchestrator.thinker.resources import ReallocatorThread, ResourceCounter

if TYPE_CHECKING:
    from orchestrator.context import CampaignContext

__all__ = [
    "POLL_INTERVAL_S",
    "AgentKind",
    "AgentSpec",
    "BaseThinker",
    "EventRound",
    "ThinkerQueues",
    "agent",
    "agent_spec",
    "event_responder",
    "result_processor",
    "task_submitter",
]

POLL_INTERVAL_S: Final = 0.1
"""Longest an idle agent waits before re-checking ``done`` (result polls, event waits)."""

AgentKind = Literal["agent", "result_processor", "task_submitter", "event_responder"]

_SPEC_ATTR: Final = "_orch_agent"
_TOPIC_ATTR: Final = "_orch_topic"  # read by the campaign runner to declare topics

T = TypeVar("T", bound="BaseThinker")
F = TypeVar("F", bound=Callable[..., Any])


class ThinkerQueues(Protocol):
    """What a thinker needs from its queues: submit by method name, receive by topic."""

    def send_inputs(
        self,
        *input_args: Any,
        method: str | None = None,
        topic: str = "default",
        keep_inputs: bool = True,
        resources: Any = None,
        max_retries: int = 0,
        **input_kwargs: Any,
    ) -> str:
        """Submit ``method(*input_args, **input_kwargs)``; its result goes to ``topic``.

        Returns:
            The task id.

        """
        ...

    def get_result(self, topic: str = "default", timeout: float | None = None) -> Any:
        """Take the next result of ``topic``.

        Raises:
            TimeoutException: No result arrived within ``timeout`` seconds.

        """
        ...


@dataclass(frozen=True)
class AgentSpec:
    """How :meth:`BaseThinker.run` treats a decorated method.

    Attributes:
        kind: Which decorator made the agent.
        startup: Whether the agent returning normally leaves ``done`` unset.
        topic: Topic of a result processor.
        task_type: Pool of a task submitter.
        event_name: Event attribute of an event responder.

    """

    kind: AgentKind
    startup: bool = False
    topic: str | None = None
    task_type: str | None = None
    event_name: str | None = None


def agent_spec(func: object) -> AgentSpec | None:
    """Return the :class:`AgentSpec` of a decorated method, or ``None`` if it is no agent."""
    spec = getattr(func, _SPEC_ATTR, None)
    return spec if isinstance(spec, AgentSpec) else None


def _mark(func: Callable[..., Any], spec: AgentSpec) -> None:
    setattr(func, _SPEC_ATTR, spec)
    if spec.topic is not None:
        setattr(func, _TOPIC_ATTR, spec.topic)


def _resolve_count(thinker: BaseThinker, value: int | str, what: str, minimum: int) -> int:
    """Return ``value``, or the thinker attribute it names, checked to be an int >= minimum."""
    resolved: object = value
    if isinstance(value, str):
        if not hasattr(thinker, value):
            raise ValueError(f"{what}={value!r} names no attribute of {type(thinker).__name__}")
        resolved = getattr(thinker, value)
    if isinstance(resolved, bool) or not isinstance(resolved, int) or resolved < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {resolved!r}")
    return resolved


# ---------------------------------------------------------------------- decorators


@overload
def agent(func: F, /) -> F: ...


@overload
def agent(func: None = None, /, *, startup: bool = False) -> Callable[[F], F]: ...


def agent(func: F | None = None, /, *, startup: bool = False) -> F | Callable[[F], F]:
    """Mark a method as an agent: :meth:`BaseThinker.run` runs it once in its own thread.

    Use as ``@agent`` or ``@agent(startup=True)``.

    Args:
        func: The method (given when used without parentheses).
        startup: If true, the agent returning normally does not set ``done``: use it for
            set-up work that ends before the campaign does. Raising still sets ``done``.

    Returns:
        The method itself, marked as an agent.

    """

    def decorator(f: F) -> F:
        _mark(f, AgentSpec(kind="agent", startup=startup))
        return f

    return decorator if func is None else decorator(func)


ResultHandler = Callable[[T, Any], Any]
AgentRunner = Callable[[T], None]


@overload
def result_processor(func: ResultHandler[T], /) -> AgentRunner[T]: ...


@overload
def result_processor(
    func: None = None, /, *, topic: str = "default"
) -> Callable[[ResultHandler[T]], AgentRunner[T]]: ...


def result_processor(
    func: ResultHandler[T] | None = None, /, *, topic: str = "default"
) -> AgentRunner[T] | Callable[[ResultHandler[T]], AgentRunner[T]]:
    """Make an agent that calls the method with each result arriving on ``topic``.

    The agent polls ``queues.get_result(topic, timeout=POLL_INTERVAL_S)`` until ``done`` is
    set; a result is handed over as soon as ``get_result`` returns it. With
    :attr:`BaseThinker.drain_results`, it keeps going after ``done`` until the queues have no
    task left in flight. The method takes one argument, the result.

    Args:
        func: The method (given when used without parentheses).
        topic: Topic whose results the method receives.

    Returns:
        The agent.

    """

    def decorator(f: ResultHandler[T]) -> AgentRunner[T]:
        @functools.wraps(f)
        def run_result_processor(thinker: T) -> None:
            _process_results(thinker, f, topic)

        _mark(run_result_processor, AgentSpec(kind="result_processor", topic=topic))
        return run_result_processor

    return decorator if func is None else decorator(func)


@overload
def task_submitter(func: AgentRunner[T], /) -> AgentRunner[T]: ...


@overload
def task_submitter(
    func: None = None, /, *, task_type: str | None = None, n_slots: int | str = 1
) -> Callable[[AgentRunner[T]], AgentRunner[T]]: ...


def task_submitter(
    func: AgentRunner[T] | None = None,
    /,
    *,
    task_type: str | None = None,
    n_slots: int | str = 1,
) -> AgentRunner[T] | Callable[[AgentRunner[T]], AgentRunner[T]]:
    """Make an agent that calls the method each time slots of ``task_type`` are acquired.

    Until ``done`` is set, the agent acquires ``n_slots`` slots of ``task_type`` from the
    thinker's :class:`ResourceCounter` (waiting as long as needed; setting ``done`` cancels the
    wait), then calls the method, which should submit work that uses those slots. Whoever
    handles that work's results releases the slots.

    Args:
        func: The method (given when used without parentheses).
        task_type: Pool to acquire slots from (``None``: the unallocated pool).
        n_slots: Slots per call: an int, or the name of a thinker attribute holding one.

    Returns:
        The agent.

    Raises:
        ValueError: ``n_slots`` is an int smaller than 1.

    """
    if isinstance(n_slots, int) and n_slots < 1:
        raise ValueError(f"n_slots must be >= 1, got {n_slots}")

    def decorator(f: AgentRunner[T]) -> AgentRunner[T]:
        @functools.wraps(f)
        def run_task_submitter(thinker: T) -> None:
            _submit_tasks(thinker, f, task_type, n_slots)

        _mark(run_task_submitter, AgentSpec(kind="task_submitter", task_type=task_type))
        return run_task_submitter

    return decorator if func is None else decorator(func)


@dataclass(frozen=True)
class _Reallocation:
    gather_from: str | None
    gather_to: str | None
    disperse_to: str | None
    max_slots: int | str | None
    slot_step: int


def event_responder(
    event_name: str,
    *,
    reallocate_resources: bool = False,
    gather_from: str | None = None,
    gather_to: str | None = None,
    disperse_to: str | None = None,
    max_slots: int | str | None = None,
    slot_step: int = 1,
) -> Callable[[AgentRunner[T]], AgentRunner[T]]:
    """Make an agent that calls the method each time the thinker's event ``event_name`` is set.

    The thinker must have an attribute ``event_name`` holding a :class:`threading.Event`.
    Once it is set the method runs; when it returns, the agent waits for every other
    responder to the same event to finish too (responders that have stopped are not waited
    for). The last one to finish clears the event, before any of them can look at it again,
    so each set runs every responder once; an event set again while the responders run is
    absorbed by that round. The first to have arrived logs that all responses are complete.

    With ``reallocate_resources``, a :class:`ReallocatorThread` runs alongside the method: it
    moves slots from ``gather_from`` to ``gather_to`` (up to ``max_slots``, ``slot_step`` at a
    time) while the method runs, and afterwards moves every slot of ``gather_to`` to
    ``disperse_to``, waiting for them to be released. That last wait is abandoned if ``done``
    is set, so a campaign that ends does not hang on slots nobody will release.

    Args:
        event_name: Name of the thinker attribute holding the event.
        reallocate_resources: Whether to move slots while the method runs.
        gather_from: Pool to take slots from (``None``: the unallocated pool).
        gather_to: Pool to put them in.
        disperse_to: Pool that receives ``gather_to``'s slots afterwards.
        max_slots: Most slots ``gather_to`` should hold: an int, the name of a thinker
            attribute holding one, or ``None`` for no limit.
        slot_step: Slots moved per request.

    Returns:
        A decorator that makes the agent.

    Raises:
        ValueError: With ``reallocate_resources``, ``gather_from`` equals ``gather_to``, or
            ``slot_step`` is smaller than 1.

    """
    realloc: _Reallocation | None = None
    if reallocate_resources:
        if gather_from == gather_to:
            raise ValueError(
                f"gather_from and gather_to must be different pools (both {gather_to!r})"
            )
        if slot_step < 1:
            raise ValueError(f"slot_step must be >= 1, got {slot_step}")
        realloc = _Reallocation(gather_from, gather_to, disperse_to, max_slots, slot_step)

    def decorator(f: AgentRunner[T]) -> AgentRunner[T]:
        @functools.wraps(f)
        def run_event_responder(thinker: T) -> None:
            _respond_to_event(thinker, f, event_name, realloc)

        _mark(run_event_responder, AgentSpec(kind="event_responder", event_name=event_name))
        return run_event_responder

    return decorator


# ---------------------------------------------------------------------- agent loops


def _process_results(thinker: T, handler: ResultHandler[T], topic: str) -> None:
    while thinker._keep_processing_results():
        try:
            result = thinker.queues.get_result(topic=topic, timeout=POLL_INTERVAL_S)
        except TimeoutException:
            continue
        if result is None:  # queues that return None on timeout instead of raising
            continue
        thinker.logger.info("Processing a result of topic %r", topic)
        start = time.perf_counter()
        handler(thinker, result)
        thinker.logger.info(
            "Processed a result of topic %r. Runtime: %.4es", topic, time.perf_counter() - start
        )


def _submit_tasks(
    thinker: T, submit: AgentRunner[T], task_type: str | None, n_slots: int | str
) -> None:
    rec = thinker.rec
    if rec is None:
        raise RuntimeError(
            f"task_submitter needs a ResourceCounter: pass resource_counter= to "
            f"{type(thinker).__name__}"
        )
    n = _resolve_count(thinker, n_slots, "n_slots", minimum=1)
    while not thinker.done.is_set():
        if not rec.acquire(task_type, n, cancel_if=thinker.done):
            continue
        thinker.logger.info("Acquired %d slots of %r", n, task_type)
        start = time.perf_counter()
        submit(thinker)
        thinker.logger.info("Submitted work. Runtime: %.4es", time.perf_counter() - start)


def _respond_to_event(
    thinker: T, respond: AgentRunner[T], event_name: str, realloc: _Reallocation | None
) -> None:
    event = getattr(thinker, event_name, None)
    if not isinstance(event, threading.Event):
        raise ValueError(
            f"{type(thinker).__name__} has no threading.Event attribute named {event_name!r}"
        )
    barrier = thinker.barriers[event_name]
    max_slots: int | None = None
    if realloc is not None:
        if thinker.rec is None:
            raise RuntimeError(
                f"event_responder(reallocate_resources=True) needs a ResourceCounter: pass "
                f"resource_counter= to {type(thinker).__name__}"
            )
        if realloc.max_slots is not None:
            max_slots = _resolve_count(thinker, realloc.max_slots, "max_slots", minimum=0)

    thinker.logger.info("Waiting for event %r", event_name)
    while not thinker.done.is_set():
        if not event.wait(POLL_INTERVAL_S):
            continue
        thinker.logger.info("Event %r was set", event_name)
        start = time.perf_counter()
        reallocator: ReallocatorThread | None = None
        if realloc is not None and thinker.rec is not None:
            reallocator = ReallocatorThread(
                thinker.rec,
                gather_from=realloc.gather_from,
                gather_to=realloc.gather_to,
                disperse_to=realloc.disperse_to,
                max_slots=max_slots,
                slot_step=realloc.slot_step,
                logger_name=thinker.logger.name + ".allocate",
                abort_event=thinker.done,
            )
            reallocator.start()
        try:
            respond(thinker)
        except BaseException:
            if reallocator is not None:
                reallocator.stop_event.set()  # it gives up once the failure sets done
            raise
        thinker.logger.info(
            "Responded to event %r. Runtime: %.4es", event_name, time.perf_counter() - start
        )
        if reallocator is not None:
            reallocator.stop_event.set()
            reallocator.join()

        rank = barrier.wait()  # the last one to arrive clears the event (the round's action)
        if rank == 0:
            thinker.logger.info(
                "All responses to event %r complete. Time elapsed: %.4es",
                event_name,
                time.perf_counter() - start,
            )


class EventRound:
    """A barrier for the responders of one event, whose parties can leave.

    Like :class:`threading.Barrier`, :meth:`wait` blocks until every party has arrived, runs
    ``action`` in the last one to arrive, then lets them all go. Unlike it, a party that stops
    (its agent ended) calls :meth:`leave` instead of breaking the barrier: the round then
    waits for one party fewer, and those already released are unaffected, so the first
    arrival still learns it was first (rank 0) and logs that every response is complete.

    Args:
        parties: Number of responders.
        action: Called by the last arrival, before any party is released.
    """

    def __init__(self, parties: int, action: Callable[[], Any] | None = None) -> None:
        self._cond = threading.Condition()
        self._parties = parties
        self._arrived = 0
        self._generation = 0
        self._action = action

    @property
    def parties(self) -> int:
        """Responders still taking part."""
        with self._cond:
            return self._parties

    @property
    def n_waiting(self) -> int:
        """Responders waiting in the current round."""
        with self._cond:
            return self._arrived

    def wait(self) -> int:
        """Arrive and wait for the others; return the arrival rank (0: the first)."""
        with self._cond:
            rank = self._arrived
            self._arrived += 1
            generation = self._generation
            if self._arrived >= self._parties:
                self._release()
            else:
                self._cond.wait_for(lambda: self._generation != generation)
            return rank

    def leave(self) -> None:
        """Stop taking part; a round that waited only for this party completes."""
        with self._cond:
            self._parties = max(0, self._parties - 1)
            if self._arrived and self._arrived >= self._parties:
                self._release()

    def _release(self) -> None:
        try:
            if self._action is not None:
                self._action()
        finally:
            self._arrived = 0
            self._generation += 1
            self._cond.notify_all()


# ---------------------------------------------------------------------- the thinker


class _AgentLocal(threading.local):
    """Per-thread details: the running agent's name and logger."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.name: str | None = None


class BaseThinker(threading.Thread):
    """Base class of a thinker: a set of agent threads that steer a campaign.

    Subclass it and mark methods with :func:`agent`, :func:`result_processor`,
    :func:`task_submitter` or :func:`event_responder`. :meth:`run` (or :meth:`start` then
    :meth:`join`, as the thinker is a :class:`threading.Thread`) runs every agent in its own
    thread and returns when all have finished.

    Args:
        queue: The campaign's queues (``send_inputs`` / ``get_result``); Colmena's name.
            ``queues=`` is accepted as well.
        resource_counter: Slot accounting, needed by task submitters and reallocating event
            responders.
        daemon: Whether the thinker's own thread (with :meth:`start`) is a daemon.
        logger_name: Name of the thinker's logger (default: ``module.ClassName``); each agent
            logs to ``<logger_name>.<agent name>``.
        **thread_kwargs: Passed to :class:`threading.Thread` (e.g. ``name``).

    Attributes:
        queues: The campaign's queues.
        rec: The resource counter (Colmena's name); also :attr:`resource_counter`.
        done: Set to tell every agent to wind down.
        submitters_done: Set once every task submitter has finished.
        barriers: One :class:`EventRound` per event, shared by its responders (a barrier
            whose parties leave when they stop).
        agent_errors: ``(agent name, exception)`` for every agent that raised.
        drain_results: Class attribute, default true (Colmena's behaviour): after ``done``,
            result processors keep taking results until every task submitter has finished and
            no task whose topic has a result processor is still in flight (results waiting on
            a topic nobody processes do not keep the campaign alive). Never after an agent
            failed: a failed campaign stops at once. Set it false to have result processors
            stop as soon as ``done`` is set.

    """

    drain_results: ClassVar[bool] = True

    context: CampaignContext | None = None
    """The run's :class:`~orchestrator.context.CampaignContext` (run directory, options,
    registry, capacity per kind, progress and objective); set by ``orch launch`` before the
    agents start, and passed to the constructor too when it takes ``context=``."""

    def __init__(
        self,
        queue: ThinkerQueues | None = None,
        resource_counter: ResourceCounter | None = None,
        daemon: bool = True,
        logger_name: str | None = None,
        *,
        queues: ThinkerQueues | None = None,
        **thread_kwargs: Any,
    ) -> None:
        if queue is not None and queues is not None and queue is not queues:
            raise TypeError(f"{type(self).__name__}: give queue= or queues=, not both")
        chosen = queue if queue is not None else queues
        if chosen is None:
            raise TypeError(f"{type(self).__name__}: missing the queues (first argument)")
        super().__init__(daemon=daemon, **thread_kwargs)
        self.logger_name = logger_name
        self.queues: ThinkerQueues = chosen
        set_role = getattr(chosen, "set_role", None)
        if callable(set_role):
            set_role("client")
        self.rec = resource_counter
        self.done = threading.Event()
        self.submitters_done = threading.Event()
        self.barriers: dict[str, EventRound] = {}
        self._processed_topics: frozenset[str] = frozenset()
        self.agent_errors: list[tuple[str, BaseException]] = []
        self._agent_failed = threading.Event()
        self._bookkeeping = threading.Lock()
        self._active_submitters = 0
        self.local_details = _AgentLocal(self.make_logger())

    # ------------------------------------------------------------------ properties

    @property
    def resource_counter(self) -> ResourceCounter | None:
        """The resource counter (same object as :attr:`rec`)."""
        return self.rec

    @resource_counter.setter
    def resource_counter(self, value: ResourceCounter | None) -> None:
        self.rec = value

    @property
    def logger(self) -> logging.Logger:
        """Logger of the calling agent (``<thinker logger>.<agent>``), or the thinker's."""
        return self.local_details.logger

    @property
    def agent_name(self) -> str | None:
        """Name of the agent running in the calling thread (``None`` outside agents)."""
        return self.local_details.name

    # ------------------------------------------------------------------ hooks

    def make_logger(self, name: str | None = None) -> logging.Logger:
        """Return the thinker's logger, or the child logger of agent ``name``.

        Args:
            name: Agent name; ``None`` for the thinker's own logger.

        """
        base = self.logger_name or f"{type(self).__module__}.{type(self).__name__}"
        return logging.getLogger(base if name is None else f"{base}.{name}")

    def prepare_agent(self) -> None:
        """Run in each agent's thread before the agent starts; override to set up state.

        :attr:`agent_name` and :attr:`local_details` (thread-local) are available.
        """

    def tear_down_agent(self) -> None:
        """Run in each agent's thread after the agent finished; override to clean up."""

    # ------------------------------------------------------------------ running

    @classmethod
    def list_agents(cls) -> list[Callable[..., Any]]:
        """Return the methods of this class that are agents, each once, sorted by name."""
        agents: list[Callable[..., Any]] = []
        for attr in dir(cls):
            member = getattr(cls, attr, None)
            if callable(member) and agent_spec(member) is not None and member not in agents:
                agents.append(member)
        return agents

    def run(self) -> None:
        """Run every agent in its own thread and return once all have finished.

        An agent that raises is logged with its traceback and recorded in
        :attr:`agent_errors`; it sets ``done`` so the others wind down, and this method still
        returns normally. If the calling thread is interrupted while waiting (Ctrl-C),
        ``done`` is set before the interruption propagates.
        """
        agents = self.list_agents()
        self.logger.info(
            "%s started with %d agents. Process id: %d",
            type(self).__name__,
            len(agents),
            os.getpid(),
        )
        if not agents:
            self.logger.warning("%s has no agents; nothing to run", type(self).__name__)
            return

        specs = {a: agent_spec(a) for a in agents}
        responders = Counter(
            s.event_name for s in specs.values() if s is not None and s.kind == "event_responder"
        )
        self.barriers = {
            str(name): EventRound(n, action=functools.partial(self._clear_event, str(name)))
            for name, n in responders.items()
        }
        self._processed_topics = frozenset(
            s.topic for s in specs.values() if s is not None and s.topic is not None
        )
        self._active_submitters = sum(
            1 for s in specs.values() if s is not None and s.kind == "task_submitter"
        )
        if self._active_submitters == 0:
            self.submitters_done.set()

        threads = [
            threading.Thread(
                target=self._run_agent,
                args=(a,),
                name=f"{type(self).__name__}.{a.__name__}",
                daemon=True,
            )
            for a in agents
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except BaseException:
            self.done.set()
            raise
        self.logger.info(
            "%s completed (%d agent failures)", type(self).__name__, len(self.agent_errors)
        )

    def _run_agent(self, func: Callable[..., Any]) -> None:
        """Run one agent in the calling thread, then apply the rules for ``done``."""
        spec = agent_spec(func) or AgentSpec(kind="agent")
        name = func.__name__
        self.local_details.name = name
        self.local_details.logger = self.make_logger(name)
        failed = False
        try:
            self.prepare_agent()
            self.logger.info("%s started", name)
            func(self)
        except BaseException as exc:
            failed = True
            self._record_failure(name, exc)
        if failed or not spec.startup:
            self.done.set()
        try:
            self.tear_down_agent()
        except BaseException as exc:
            self._record_failure(name, exc)
            self.done.set()
        finally:
            if spec.kind == "event_responder" and spec.event_name in self.barriers:
                # Responders still waiting for this one must not wait for it any more.
                self.barriers[spec.event_name].leave()
            if spec.kind == "task_submitter":
                with self._bookkeeping:
                    self._active_submitters -= 1
                    if self._active_submitters == 0:
                        self.submitters_done.set()
            self.logger.info("%s %s", name, "failed" if failed else "completed")

    def _clear_event(self, event_name: str) -> None:
        """Clear an event once all its responders are done (before any of them moves on)."""
        event = getattr(self, event_name, None)
        if isinstance(event, threading.Event):
            event.clear()

    def _record_failure(self, name: str, exc: BaseException) -> None:
        self.logger.error("Agent %s raised %s: %s", name, type(exc).__name__, exc, exc_info=exc)
        with self._bookkeeping:
            self.agent_errors.append((name, exc))
        self._agent_failed.set()

    def _keep_processing_results(self) -> bool:
        """Whether result processors should keep taking results."""
        if not self.done.is_set():
            return True
        if not self.drain_results or self._agent_failed.is_set():
            return False
        if not self.submitters_done.is_set():
            return True
        active_in = getattr(self.queues, "active_in", None)
        if callable(active_in):
            active = active_in(self._processed_topics)
        else:  # queues that only count every task in flight, as Colmena's do
            active = getattr(self.queues, "active_count", 0)
        return isinstance(active, int) and active > 0
