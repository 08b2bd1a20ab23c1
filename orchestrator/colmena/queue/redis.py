"""Colmena's Redis queues (``colmena.queue.redis.RedisQueues``), in orch's process.

orch needs no broker between the thinker and dispatch: ``RedisQueues`` takes Colmena's
arguments, ignores the connection ones, and behaves as :class:`PipeQueues`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from orchestrator.colmena.queue.base import ColmenaQueues

__all__ = ["RedisQueues"]


class RedisQueues(ColmenaQueues):
    """Colmena's Redis-backed queues; here the in-process queues (no Redis is used).

    Args:
        topics: Topics results may be sent to.
        hostname: Ignored (no broker is needed).
        port: Ignored.
        prefix: Ignored.
        **kwargs: :class:`ColmenaQueues`' other arguments.
    """

    def __init__(
        self,
        topics: Collection[str] = (),
        hostname: str = "127.0.0.1",
        port: int = 6379,
        prefix: str = "",
        **kwargs: Any,
    ) -> None:
        super().__init__(topics, **kwargs)
        self.hostname, self.port, self.prefix = hostname, port, prefix
