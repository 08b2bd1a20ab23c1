"""The wrapper every task runs inside on a worker: times the call and captures failures.

This module is shipped to workers (by reference), so it must import nothing from the
orchestrator's control side.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from typing import Any

TRACEBACK_TAIL = 4000
"""Characters of a failing task's traceback that are sent back."""


def run_task(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict:
    """Call ``fn(*args, **kwargs)`` and describe what happened.

    Returns:
        A dict with ``ok``, ``value`` (when ok), ``failure`` (exception type, message and
        traceback tail, when not ok), ``host``, ``pid``, ``started`` and ``finished``.
        Failures are returned, not raised, so the worker and its pool survive them.
    """
    started = time.time()
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - any task failure becomes a failed result
        kind = type(exc)
        return {
            "ok": False,
            "failure": {
                "exception_type": f"{kind.__module__}.{kind.__qualname__}",
                "message": str(exc),
                "traceback": traceback.format_exc()[-TRACEBACK_TAIL:],
            },
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": started,
            "finished": time.time(),
        }
    return {
        "ok": True,
        "value": value,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": started,
        "finished": time.time(),
    }


class TaskWrapper:
    """A callable that runs ``fn`` through :func:`run_task`.

    Sites serialize one wrapper per method once and reuse the bytes for every task, so only
    the arguments are serialized per task. It carries ``__name__`` because endpoint engines
    log the function's name.
    """

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        """Run the wrapped function on this worker and describe the outcome."""
        return run_task(self.fn, args, kwargs)
