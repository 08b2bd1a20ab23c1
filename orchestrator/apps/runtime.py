"""The wrapper every task runs inside on a worker: times the call and captures failures.

This module is shipped to workers (by reference), so it must import nothing from the
orchestrator's control side.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from orchestrator.apps.failures import FailureReason, failure_record, parse_reason
from orchestrator.apps.mpi import granted

TRACEBACK_TAIL = 4000
"""Characters of a failing task's traceback that are sent back."""

TASK_UUID_ENV = "GC_TASK_UUID"
"""Set by the Globus Compute engine's ``execute_task`` to the id of the task it runs: a local
site's control files are named by it (``context['control_dir']``)."""

CANCEL_SIGNAL = signal.SIGUSR2
"""The signal orch sends a worker to stop the task it runs (``orch cancel``)."""

_CONTEXT: ContextVar[Mapping[str, Any] | None] = ContextVar("orch_task_context", default=None)


def task_context() -> Mapping[str, Any]:
    """What the site running this task passed along (e.g. ``commands``: code → argv)."""
    return _CONTEXT.get() or {}


@contextmanager
def using_context(context: Mapping[str, Any] | None) -> Iterator[Mapping[str, Any]]:
    """Make ``context`` the :func:`task_context` of the code in the block (then restore it).

    What :func:`run_task` does around a task, for tests and for calling a wrapper directly
    as a site would run it: ``with using_context({"resources": {...}, "mpi": {...}}):``.
    """
    token = _CONTEXT.set(context or {})
    try:
        yield context or {}
    finally:
        _CONTEXT.reset(token)


class TaskTimeout(Exception):
    """The task ran past the wall time orch gave it (``FailureInfo.reason == 'timeout'``)."""

    reason = FailureReason.TIMEOUT

    def __init__(self, walltime: float):
        super().__init__(f"the task ran past its wall time of {walltime:g} s and was stopped")
        self.details = {"walltime": walltime}


class TaskCancelled(Exception):
    """The user cancelled the task (``orch cancel``) (``FailureInfo.reason == 'cancelled'``)."""

    reason = FailureReason.CANCELLED


def control_files(control_dir: str | Path, task_id: str) -> tuple[Path, Path]:
    """``(running, cancel)``: the file naming the worker that runs a task, and its cancel flag."""
    folder = Path(control_dir)
    return folder / f"{task_id}.running", folder / f"{task_id}.cancel"


_cancel_flag: Path | None = None  # the running task's cancel flag (this process)
_cancel_handler_installed = False


def _on_cancel_signal(signum: int, frame: Any) -> None:
    flag = _cancel_flag
    if flag is not None and flag.exists():
        raise TaskCancelled("cancelled by the user while running; its processes were ended")


@contextmanager
def _cancellable(task_id: str | None, control_dir: str | None) -> Iterator[None]:
    """Let orch stop this task: it writes the cancel flag, then sends :data:`CANCEL_SIGNAL`.

    While the task runs, ``<task>.running`` holds this worker's pid; the signal raises
    :class:`TaskCancelled` only when the running task's own flag is there, so a late signal
    cannot stop the next task (the handler stays installed between tasks: the default action
    would end the worker). A task whose flag is there before it starts does not run.
    """
    global _cancel_flag, _cancel_handler_installed
    if not task_id or not control_dir:
        yield
        return
    running, flag = control_files(control_dir, task_id)
    if flag.exists():
        raise TaskCancelled("cancelled before it started on a worker")
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only: orch's own deadline covers this task
        return
    if not _cancel_handler_installed:
        signal.signal(CANCEL_SIGNAL, _on_cancel_signal)
        _cancel_handler_installed = True
    _cancel_flag = flag
    try:
        running.write_text(str(os.getpid()))
    except FileNotFoundError:
        with contextlib.suppress(OSError):
            running.parent.mkdir(parents=True, exist_ok=True)
            running.write_text(str(os.getpid()))
    except OSError:  # no control folder here: the task runs, and cannot be stopped early
        pass
    try:
        yield
    finally:
        _cancel_flag = None
        with contextlib.suppress(OSError):
            running.unlink()


def _end_children() -> None:
    """End what a cancelled task started and left running (this worker's child processes)."""
    try:
        import psutil

        children = psutil.Process().children(recursive=True)
    except Exception:  # noqa: BLE001 - nothing to end, or psutil missing
        return
    for child in children:
        with contextlib.suppress(Exception):
            child.kill()
    with contextlib.suppress(Exception):
        psutil.wait_procs(children, timeout=5)


@contextmanager
def _walltime(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TaskTimeout` in this thread once ``seconds`` have passed.

    Uses ``SIGALRM``, so it works where tasks run on a process's main thread (HTEX and
    Globus Compute workers); elsewhere orch's own deadline reports the task instead.
    Simulation wrappers kill their process group when interrupted, so nothing keeps running.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise TaskTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_task(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: Mapping[str, Any] | None = None,
    task_id: str | None = None,
) -> dict:
    """Call ``fn(*args, **kwargs)`` and describe what happened.

    Args:
        fn: The task's function.
        args: Positional arguments.
        kwargs: Keyword arguments.
        context: Site-specific settings visible to ``fn`` through :func:`task_context`;
            ``walltime`` (seconds) there stops the call with :class:`TaskTimeout`;
            ``control_dir`` there (with ``task_id``) lets orch cancel it.
        task_id: The name of the task's control files (default: the engine's
            :data:`TASK_UUID_ENV`), for cancelling it.

    Returns:
        A dict with ``ok``, ``value`` (when ok), ``failure`` (when not ok: a
        :class:`~orchestrator.apps.failures.FailureRecord` with the exception type, message,
        traceback tail, ``where='task'``, and the exception's ``reason`` (as a plain string)
        and ``details`` attributes when it has them), ``host``, ``pid``, ``started``,
        ``finished`` and ``granted`` (what the task got: ``nodes``, ``ranks``,
        ``threads_per_rank``, ``hosts``; :func:`orchestrator.apps.mpi.granted`). Failures
        are returned, not raised, so the worker and its pool survive them. Everything in it
        is plain data, so an orch of another version can read it.
    """
    started = time.time()
    try:
        got: dict[str, Any] = granted(context)
    except Exception:  # noqa: BLE001 - a malformed context must not lose the task's result
        got = {"nodes": 1, "ranks": 1, "threads_per_rank": 1, "hosts": [socket.gethostname()]}
    token = _CONTEXT.set(context or {})
    try:
        if context and context.get("data"):
            from orchestrator.apps.proxies import store_from_context

            # Registered before anything resolves, so proxies nested in arguments find it;
            # a store that cannot open here is reported by the resolve or the result put
            with contextlib.suppress(Exception):
                store_from_context(context)
        if "proxystore" in sys.modules:  # unpickling a proxy argument imported it
            from orchestrator.apps.proxies import resolve_arguments

            args, kwargs = resolve_arguments(args, kwargs)
        control_dir = (context or {}).get("control_dir")
        if control_dir and task_id is None:
            task_id = os.environ.get(TASK_UUID_ENV)
        with (
            _cancellable(task_id, control_dir),
            _walltime((context or {}).get("walltime")),
        ):
            value = fn(*args, **kwargs)
        if context and context.get("data"):
            from orchestrator.apps.proxies import maybe_proxy_result

            value = maybe_proxy_result(value, context)
    except BaseException as exc:  # noqa: BLE001 - any task failure becomes a failed result
        if isinstance(exc, TaskCancelled):
            _end_children()
        if "proxystore" in sys.modules:
            from orchestrator.apps.proxies import is_resolve_error, resolve_failure

            if is_resolve_error(exc):  # ProxyStore's own error cannot be unpickled
                exc = resolve_failure(exc)
        kind = type(exc)
        details = getattr(exc, "details", None)
        # Only a string names a reason: some library exceptions (URLError) hold an object there
        reason = getattr(exc, "reason", None)
        return {
            "ok": False,
            "failure": failure_record(
                f"{kind.__module__}.{kind.__qualname__}",
                str(exc),
                where="task",
                reason=parse_reason(reason) if isinstance(reason, str) else None,
                traceback=traceback.format_exc()[-TRACEBACK_TAIL:],
                details=details if isinstance(details, dict) else None,
            ),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": started,
            "finished": time.time(),
            "granted": got,
        }
    finally:
        _CONTEXT.reset(token)
    return {
        "ok": True,
        "value": value,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": started,
        "finished": time.time(),
        "granted": got,
    }


class TaskWrapper:
    """A callable that runs ``fn`` through :func:`run_task`.

    Sites serialize one wrapper per method once and reuse the bytes for every task, so only
    the arguments are serialized per task. It carries ``__name__`` because endpoint engines
    log the function's name.
    """

    def __init__(self, fn: Callable[..., Any], context: Mapping[str, Any] | None = None):
        self.fn = fn
        self.context = dict(context or {})
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        """Run the wrapped function on this worker and describe the outcome."""
        return run_task(self.fn, args, kwargs, self.context)
