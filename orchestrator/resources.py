"""Per-task resources: how many nodes, MPI ranks, threads and GPUs a task asks for.

A method declares its default (``Method(fn, resources=Resources(ranks=2))``) and a call may
give its own (``send_inputs(..., resources={"nodes": 2, "ranks_per_node": 1})``). Colmena's
``ResourceRequirements`` names (``node_count``, ``cpu_processes``, ``cpu_threads``) are read as
``nodes``, ``ranks_per_node`` and ``threads_per_rank``.

What a task occupies at a site (its *slots*) depends on the site: on a site with ``mpi:`` its
capacity counts nodes and a task takes ``nodes`` slots; on any other site capacity counts
cores (workers) and a task takes ``ranks x threads_per_rank`` of them (it must fit on one
node).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

COLMENA_NAMES = {
    "node_count": "nodes",
    "cpu_processes": "ranks_per_node",
    "cpu_threads": "threads_per_rank",
}
"""Colmena's ``ResourceRequirements`` field names and the ``Resources`` field each maps to."""


class ResourcesError(ValueError):
    """A resource request that cannot be read; the message names the field and the fix."""


class Resources(BaseModel):
    """What one task asks for.

    Give ``ranks`` (total), or ``ranks_per_node``, or both (then ``ranks`` must equal
    ``nodes x ranks_per_node``). With only ``ranks``, ranks are spread over the nodes as evenly
    as possible (``ranks_per_node`` is the rounded-up share); with neither, one rank per node.

    Attributes:
        nodes: Nodes the task spans (more than one needs a site with ``mpi:``).
        ranks_per_node: MPI ranks on each node.
        ranks: MPI ranks in all.
        threads_per_rank: OpenMP threads (cores) per rank; ``OMP_NUM_THREADS`` is set to it.
        gpus_per_rank: GPUs per rank (0: none).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    nodes: int = Field(default=1, ge=1, description="Nodes the task spans")
    ranks_per_node: int | None = Field(default=None, ge=1, description="MPI ranks per node")
    ranks: int | None = Field(default=None, ge=1, description="MPI ranks in all")
    threads_per_rank: int = Field(default=1, ge=1, description="Threads per rank")
    gpus_per_rank: int = Field(default=0, ge=0, description="GPUs per rank")

    @model_validator(mode="after")
    def _consistent(self) -> Resources:
        if self.ranks is not None and self.ranks_per_node is not None:
            if self.ranks != self.nodes * self.ranks_per_node:
                raise ValueError(
                    f"ranks: {self.ranks} is not nodes x ranks_per_node "
                    f"({self.nodes} x {self.ranks_per_node}); give one of ranks or "
                    "ranks_per_node, or make them agree"
                )
        if self.ranks is not None and self.ranks < self.nodes:
            raise ValueError(
                f"ranks: {self.ranks} rank(s) cannot span {self.nodes} nodes; ask for at least "
                f"{self.nodes} ranks, or fewer nodes"
            )
        return self

    # -- derived counts --------------------------------------------------------------------

    @property
    def total_ranks(self) -> int:
        """MPI ranks over every node."""
        if self.ranks is not None:
            return self.ranks
        return self.nodes * (self.ranks_per_node or 1)

    @property
    def per_node(self) -> int:
        """Ranks on the busiest node."""
        if self.ranks_per_node is not None:
            return self.ranks_per_node
        return math.ceil(self.total_ranks / self.nodes)

    @property
    def cores_per_node(self) -> int:
        """Cores the task uses on its busiest node (ranks x threads)."""
        return self.per_node * self.threads_per_rank

    @property
    def is_default(self) -> bool:
        """One rank, one thread, one node, no GPU: what a task gets when it asks nothing."""
        return self == Resources()

    def slots(self, mpi: bool) -> int:
        """Slots the task occupies at a site: nodes on an ``mpi:`` site, else cores."""
        return self.nodes if mpi else self.total_ranks * self.threads_per_rank

    # -- Colmena's names (read-only) -------------------------------------------------------

    @property
    def node_count(self) -> int:
        """Colmena's name for :attr:`nodes`."""
        return self.nodes

    @property
    def cpu_processes(self) -> int:
        """Colmena's name for the ranks per node."""
        return self.per_node

    @property
    def cpu_threads(self) -> int:
        """Colmena's name for :attr:`threads_per_rank`."""
        return self.threads_per_rank

    # -- what goes to a site -----------------------------------------------------------------

    def worker_view(self) -> dict[str, int]:
        """Plain numbers for the worker (``task_context()["resources"]``)."""
        return {
            "nodes": self.nodes,
            "ranks_per_node": self.per_node,
            "ranks": self.total_ranks,
            "threads_per_rank": self.threads_per_rank,
            "gpus_per_rank": self.gpus_per_rank,
        }

    def resource_specification(self, launcher_options: str = "") -> dict[str, Any]:
        """The ``resource_specification`` a ``GlobusMPIEngine`` reads for this task."""
        spec: dict[str, Any] = {
            "num_nodes": self.nodes,
            "ranks_per_node": self.per_node,
            "num_ranks": self.total_ranks,
        }
        if launcher_options:
            spec["launcher_options"] = launcher_options
        return spec

    # -- reading what users give ---------------------------------------------------------------

    @classmethod
    def parse(cls, value: Any, where: str = "resources") -> Resources:
        """Read a request: ``None``, a ``Resources``, a mapping, or Colmena's model.

        Args:
            value: What the user gave.
            where: Named in the error (e.g. ``method simulate: resources``).

        Raises:
            ResourcesError: one line naming the field and the fix.
        """
        if value is None:
            return cls()
        if isinstance(value, Resources):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if not isinstance(value, Mapping):
            raise ResourcesError(
                f"{where}: {type(value).__name__} is not a resource request; give a mapping "
                "such as {'nodes': 2, 'ranks_per_node': 4} or a Resources"
            )
        fields = {COLMENA_NAMES.get(str(k), str(k)): v for k, v in value.items()}
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise ResourcesError(f"{where}: {_one_line(exc)}") from None

    def describe(self) -> str:
        """Short text such as ``2 nodes x 4 ranks x 1 thread``."""
        parts = [f"{self.nodes} node{'s' if self.nodes != 1 else ''}"]
        parts.append(f"{self.total_ranks} rank{'s' if self.total_ranks != 1 else ''}")
        if self.threads_per_rank != 1:
            parts.append(f"{self.threads_per_rank} threads/rank")
        if self.gpus_per_rank:
            parts.append(f"{self.gpus_per_rank} GPU/rank")
        return ", ".join(parts)


def lenient(value: Any) -> Resources:
    """Read resources recorded earlier (a journal, a results file): unknown keys are dropped.

    Results written before resources were typed may hold any mapping; they load with the
    fields that are understood, and defaults for the rest.
    """
    if isinstance(value, Resources):
        return value
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, Mapping):
        return Resources()
    known = set(Resources.model_fields)
    fields = {COLMENA_NAMES.get(str(k), str(k)): v for k, v in value.items()}
    try:
        return Resources.model_validate({k: v for k, v in fields.items() if k in known})
    except ValidationError:
        return Resources()


def _one_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        known = ", ".join([*Resources.model_fields, *COLMENA_NAMES])
        return f"{field}: not a resource field; use some of: {known}"
    if field:
        if error["type"] in ("greater_than_equal", "int_parsing", "int_type", "int_from_float"):
            return f"{field}: {message} (got {error.get('input')!r}); give a whole number"
        return f"{field}: {message}"
    return message


class Granted(BaseModel):
    """What a task got on its site, as its worker saw it (``Result.granted``).

    Attributes:
        nodes: Nodes the task ran on.
        ranks: MPI ranks it was started with.
        threads_per_rank: OpenMP threads per rank.
        hosts: Host names of those nodes (an MPI engine's node list; else the worker's host).
    """

    model_config = ConfigDict(extra="ignore")

    nodes: int = 1
    ranks: int = 1
    threads_per_rank: int = 1
    hosts: list[str] = Field(default_factory=list)
