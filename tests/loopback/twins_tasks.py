"""Functions the loopback twins (``tests/test_loopback_twins.py``) run on the endpoint's workers.

Imported by module name (``loopback.twins_tasks``): the loopback endpoint puts ``tests/`` on
its workers' ``PYTHONPATH``.
"""

from __future__ import annotations

import os


def worker_env(names: list[str]) -> dict[str, object]:
    """The values of ``names`` in the worker's environment (``None`` when unset), and its pid."""
    return {"env": {name: os.environ.get(name) for name in names}, "pid": os.getpid()}


def blob(size: int) -> bytes:
    """``size`` bytes (a result as large as asked)."""
    return b"r" * size


def length(data: bytes) -> int:
    """How many bytes arrived."""
    return len(data)
