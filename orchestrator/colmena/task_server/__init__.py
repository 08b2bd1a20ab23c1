"""Colmena's task servers (``colmena.task_server``) as adapters onto orch's sites."""

from orchestrator.colmena.task_server.base import BaseTaskServer
from orchestrator.colmena.task_server.globus import GlobusComputeTaskServer
from orchestrator.colmena.task_server.local import LocalTaskServer
from orchestrator.colmena.task_server.parsl import ParslTaskServer

__all__ = ["BaseTaskServer", "GlobusComputeTaskServer", "LocalTaskServer", "ParslTaskServer"]
