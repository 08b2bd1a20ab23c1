"""Colmena's queue module (``colmena.queue``): the client calls, served by orch's queues."""

from orchestrator.colmena.queue.base import ColmenaQueues, QueueRole
from orchestrator.colmena.queue.python import PipeQueues
from orchestrator.colmena.queue.redis import RedisQueues

__all__ = ["ColmenaQueues", "PipeQueues", "QueueRole", "RedisQueues"]
