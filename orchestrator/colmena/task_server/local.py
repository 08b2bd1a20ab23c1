"""Colmena's ``LocalTaskServer`` (``colmena.task_server.local``) on an orch local site."""

from __future__ import annotations

import os
from collections.abc import Callable, Collection
from typing import Any

from orchestrator.colmena.task_server.base import BaseTaskServer, SitesSpec, as_method, local_site
from orchestrator.dispatch import Method
from orchestrator.queues import Queues

__all__ = ["LocalTaskServer"]


class LocalTaskServer(BaseTaskServer):
    """Run the methods on this machine: one orch local site of ``num_workers`` workers.

    Colmena runs them in a thread or process pool; orch runs them on an endpoint engine's
    worker processes (``threads`` is accepted and has no effect), so a method must be
    picklable: a module-level function, in the main script or an importable module.

    Args:
        queues: The thinker's queues.
        methods: Functions (or orch ``Method`` objects) to serve.
        threads: Accepted for Colmena's scripts; orch always uses worker processes.
        num_workers: Workers of the local site (default: the machine's CPU count, at most 8).
        sites: Run on these sites instead (a sites folder or site configs).
        **kwargs: :class:`BaseTaskServer`'s ``timeout``, ``run_dir`` and ``grace``.
    """

    def __init__(
        self,
        queues: Queues,
        methods: Collection[Callable[..., Any] | Method],
        threads: bool = True,
        num_workers: int | None = None,
        *,
        sites: SitesSpec = None,
        **kwargs: Any,
    ) -> None:
        workers = num_workers or min(8, os.cpu_count() or 1)
        self.threads = threads
        self.num_workers = workers
        super().__init__(
            queues,
            [as_method(m) for m in methods],
            sites=sites,
            default_sites=[local_site("local", workers)],
            **kwargs,
        )
