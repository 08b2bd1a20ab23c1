"""Colmena's pipe queues (``colmena.queue.python.PipeQueues``), in orch's process."""

from orchestrator.colmena.queue.base import ColmenaQueues

__all__ = ["PipeQueues"]


class PipeQueues(ColmenaQueues):
    """Queues between a thinker and a task server in one Python process (Colmena's default).

    Takes :class:`ColmenaQueues`' arguments.
    """
