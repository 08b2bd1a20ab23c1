"""Colmena's queues (``colmena.queue.base.ColmenaQueues``), served by orch's :class:`Queues`.

orch's queues live in the thinker's process and hand tasks straight to the dispatcher, so
every Colmena flavour (pipes, Redis) is the same object here; the options that chose a
transport or a serializer are accepted and have nothing to do.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from enum import StrEnum
from typing import Any

from orchestrator.queues import Queues

__all__ = ["ColmenaQueues", "QueueRole"]

logger = logging.getLogger(__name__)


class QueueRole(StrEnum):
    """Which end of the queues a process uses (Colmena's roles; orch serves both ends)."""

    ANY = "any"
    SERVER = "server"
    CLIENT = "client"


class ColmenaQueues(Queues):
    """Colmena's queues: topics, ``keep_inputs`` and the client calls, in orch.

    Args:
        topics: Topics results may be sent to; ``default`` is always included.
        serialization_method: Accepted for Colmena's scripts; orch's sites serialize tasks
            with their engine's serializer.
        keep_inputs: Default for whether results carry their task's inputs.
        proxystore_name: Not used: in orch, which values move by proxy is set per site
            (``data:`` in its YAML) and per method (``proxy_threshold``). A value given is
            logged as a warning.
        proxystore_threshold: Not used, as ``proxystore_name``.
    """

    def __init__(
        self,
        topics: Collection[str] = (),
        serialization_method: Any = "pickle",
        keep_inputs: bool = True,
        proxystore_name: Any = None,
        proxystore_threshold: Any = None,
    ) -> None:
        super().__init__(topics, keep_inputs=keep_inputs)
        self.serialization_method = serialization_method
        if proxystore_name is not None or proxystore_threshold is not None:
            logger.warning(
                "proxystore_name/proxystore_threshold are not used by orch: set `data:` "
                "(connector and threshold_bytes) in the site's YAML instead"
            )
