"""Colmena's result models (``colmena.models.results``), mapped onto orch's."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from orchestrator.models import ColmenaTimestamps as Timestamps
from orchestrator.models import FailureInfo as FailureInformation
from orchestrator.models import Result, TimeSpans, WorkerInformation

__all__ = [
    "FailureInformation",
    "ResourceRequirements",
    "Result",
    "SerializationMethod",
    "TimeSpans",
    "Timestamps",
    "WorkerInformation",
]


class SerializationMethod(StrEnum):
    """Colmena's serialization choice (kept to be read back; orch's sites pick their own)."""

    JSON = "json"
    PICKLE = "pickle"


class ResourceRequirements(BaseModel):
    """Colmena's per-task resource request, RADICAL-Pilot names.

    ``send_inputs(resources=ResourceRequirements(...))`` is read as orch's
    :class:`~orchestrator.resources.Resources` (``node_count`` -> ``nodes``, ``cpu_processes``
    -> ``ranks_per_node``, ``cpu_threads`` -> ``threads_per_rank``): placement counts it and the
    wrappers start that many ranks; ``result.resources.node_count`` reads it back.
    """

    node_count: int = Field(default=1, ge=1, description="Nodes the task uses")
    cpu_processes: int = Field(default=1, ge=1, description="MPI ranks per node")
    cpu_threads: int = Field(default=1, ge=1, description="Threads per rank")

    @property
    def total_ranks(self) -> int:
        """MPI ranks over every node."""
        return self.node_count * self.cpu_processes
