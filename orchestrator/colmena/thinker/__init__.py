"""Colmena's thinker module (``colmena.thinker``), served by orch's thinker."""

from orchestrator.thinker import (
    BaseThinker,
    ReallocatorThread,
    ResourceCounter,
    agent,
    event_responder,
    result_processor,
    task_submitter,
)

__all__ = [
    "BaseThinker",
    "ReallocatorThread",
    "ResourceCounter",
    "agent",
    "event_responder",
    "result_processor",
    "task_submitter",
]
