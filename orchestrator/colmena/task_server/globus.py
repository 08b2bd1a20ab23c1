"""Colmena's ``GlobusComputeTaskServer`` (``colmena.task_server.globus``) on orch sites.

Each endpoint the methods name becomes an orch ``globus`` site. orch places tasks by kind, not
by endpoint: methods run on any site of their kind, so a campaign whose methods must stay on
their own endpoints gives them different kinds through ``sites=`` (a sites folder with one
YAML per endpoint, ``kind: cpu`` or ``kind: gpu``) and ``Method(fn, kind=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.colmena.task_server.base import BaseTaskServer, SitesSpec, as_method
from orchestrator.config.sites import SiteConfig
from orchestrator.dispatch import Method
from orchestrator.queues import Queues

__all__ = ["GlobusComputeTaskServer", "sites_from_endpoints"]

DEFAULT_CAPACITY = 8
"""Slots a site made from a bare endpoint id offers (Colmena's servers do not say)."""


def sites_from_endpoints(
    endpoints: Mapping[Any, str], capacity: int = DEFAULT_CAPACITY
) -> list[SiteConfig]:
    """One ``globus`` site per distinct endpoint id, named ``endpoint-1``, ``endpoint-2``..."""
    sites: list[SiteConfig] = []
    seen: dict[str, str] = {}
    for endpoint in endpoints.values():
        if str(endpoint) in seen:
            continue
        name = f"endpoint-{len(seen) + 1}"
        seen[str(endpoint)] = name
        sites.append(
            SiteConfig.model_validate(
                {
                    "name": name,
                    "kind": "cpu",
                    "backend": "globus",
                    "capacity": capacity,
                    "endpoint_id": str(endpoint),
                }
            )
        )
    return sites


class GlobusComputeTaskServer(BaseTaskServer):
    """Colmena's Globus Compute task server: methods run on orch ``globus`` sites.

    Args:
        methods: ``{function: endpoint id}``.
        funcx_client: Accepted for Colmena's scripts (orch makes its own client from the
            credentials in the environment, as ``orch launch`` does).
        queues: The thinker's queues.
        timeout: Seconds without a new task after which the server stops by itself.
        batch_size: Accepted; orch batches submissions per site itself.
        sites: Run on these sites instead (a sites folder or site configs).
        capacity: Slots each endpoint's site offers.
        **kwargs: :class:`BaseTaskServer`'s ``run_dir`` and ``grace``.
    """

    def __init__(
        self,
        methods: Mapping[Callable[..., Any] | Method, str],
        funcx_client: Any = None,
        queues: Queues | None = None,
        timeout: float | None = None,
        batch_size: int = 128,
        *,
        sites: SitesSpec = None,
        capacity: int = DEFAULT_CAPACITY,
        **kwargs: Any,
    ) -> None:
        if queues is None:
            raise TypeError("GlobusComputeTaskServer: queues is required")
        self.client = funcx_client
        self.batch_size = batch_size
        super().__init__(
            queues,
            [as_method(m) for m in methods],
            sites=sites,
            default_sites=sites_from_endpoints(methods, capacity),
            timeout=timeout,
            **kwargs,
        )
