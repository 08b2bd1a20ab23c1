"""Functions the loopback tests run on the endpoint's workers and on local workers.

They are imported by module name (``loopback.tasks``): the endpoint's ``user_environment.yaml``
puts ``tests/`` on the workers' ``PYTHONPATH``, and orch's local sites add it through
``worker_paths``.
"""

from __future__ import annotations

import os
import socket
import time

ENDPOINT_MARK = "ORCH_LOOPBACK_ENDPOINT"
"""Set in the loopback endpoint's worker environment (its value names the endpoint)."""


def square(x: float) -> float:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def where(x: int, pause: float = 0.0) -> dict[str, object]:
    """``x * x`` plus where it ran: pid, host and the loopback endpoint's mark (or None)."""
    if pause:
        time.sleep(pause)
    return {
        "x": x,
        "square": x * x,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "endpoint": os.environ.get(ENDPOINT_MARK),
    }
