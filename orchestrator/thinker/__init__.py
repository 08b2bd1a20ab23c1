"""Thinkers: classes of agent threads that steer a campaign (Colmena's programming model).

Moving a Colmena thinker over means changing its imports::

    from orchestrator.thinker import BaseThinker, ResourceCounter, agent, result_processor
"""

from orchestrator.thinker.base import (
    AgentSpec,
    BaseThinker,
    ThinkerQueues,
    agent,
    agent_spec,
    event_responder,
    result_processor,
    task_submitter,
)
from orchestrator.thinker.resources import ReallocatorThread, ResourceCounter

__all__ = [
    "AgentSpec",
    "BaseThinker",
    "ReallocatorThread",
    "ResourceCounter",
    "ThinkerQueues",
    "agent",
    "agent_spec",
    "event_responder",
    "result_processor",
    "task_submitter",
]
