"""Colmena's API on orch: run a Colmena application by changing ``colmena`` in its imports.

``from colmena.X import Y`` becomes ``from orchestrator.colmena.X import Y`` for every module a
Colmena application imports::

    from orchestrator.colmena.models import Result, ResourceRequirements
    from orchestrator.colmena.queue.python import PipeQueues
    from orchestrator.colmena.task_server import ParslTaskServer, LocalTaskServer
    from orchestrator.colmena.thinker import BaseThinker, agent, result_processor
    from orchestrator.colmena.thinker.resources import ResourceCounter

The thinker, queues and results are orch's own (Colmena's programming model is orch's); the
task servers are thin adapters that start orch sites for the methods and stop them after the
kill signal. The README's "Coming from Colmena" lists what maps to what and the few
deliberate differences.
"""

from orchestrator.colmena.exceptions import KillSignalException, TimeoutException
from orchestrator.colmena.models import ResourceRequirements, Result
from orchestrator.colmena.queue import ColmenaQueues, PipeQueues, RedisQueues
from orchestrator.colmena.task_server import (
    BaseTaskServer,
    GlobusComputeTaskServer,
    LocalTaskServer,
    ParslTaskServer,
)
from orchestrator.colmena.thinker import (
    BaseThinker,
    ReallocatorThread,
    ResourceCounter,
    agent,
    event_responder,
    result_processor,
    task_submitter,
)

__all__ = [
    "BaseTaskServer",
    "BaseThinker",
    "ColmenaQueues",
    "GlobusComputeTaskServer",
    "KillSignalException",
    "LocalTaskServer",
    "ParslTaskServer",
    "PipeQueues",
    "ReallocatorThread",
    "RedisQueues",
    "ResourceCounter",
    "ResourceRequirements",
    "Result",
    "TimeoutException",
    "agent",
    "event_responder",
    "result_processor",
    "task_submitter",
]
