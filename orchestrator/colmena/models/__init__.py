"""Colmena's data models (``colmena.models``), served by orch's own.

``Result`` is orch's :class:`~orchestrator.models.Result`, which reads Colmena's fields
(``inputs``, ``timestamp``, ``time``, ``message_sizes``, ``worker_info``, ``complete``,
``failure_info.exception``, ``json(exclude=...)``).
"""

from orchestrator.colmena.models.results import (
    FailureInformation,
    ResourceRequirements,
    Result,
    SerializationMethod,
    TimeSpans,
    Timestamps,
    WorkerInformation,
)

__all__ = [
    "FailureInformation",
    "ResourceRequirements",
    "Result",
    "SerializationMethod",
    "TimeSpans",
    "Timestamps",
    "WorkerInformation",
]
