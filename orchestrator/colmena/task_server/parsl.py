"""Colmena's ``ParslTaskServer`` (``colmena.task_server.parsl``) on orch local sites.

Each executor of the Parsl ``Config`` becomes an orch local site with as many workers as the
executor would start on one node. orch places tasks by kind (``cpu`` / ``gpu``), not by
executor label: an executor with ``available_accelerators`` is a ``gpu`` site, any other a
``cpu`` site, and a method pinned to executors runs on sites of their kind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from orchestrator.colmena.task_server.base import BaseTaskServer, SitesSpec, as_method, local_site
from orchestrator.config.sites import SiteConfig
from orchestrator.dispatch import Method
from orchestrator.exceptions import ConfigError
from orchestrator.queues import Queues

__all__ = ["ParslTaskServer", "sites_from_parsl"]

MethodSpec = Callable[..., Any] | Method | tuple[Callable[..., Any], dict[str, Any]]


def _executor_workers(executor: Any) -> int:
    """Workers an executor runs on one node (HTEX ``max_workers_per_node``, threads...)."""
    for attr in ("max_workers_per_node", "max_workers", "max_threads", "workers_per_node"):
        value = getattr(executor, attr, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
            if value != float("inf"):
                return int(value)
    return min(8, os.cpu_count() or 1)


def _executor_kind(executor: Any) -> str:
    accelerators = getattr(executor, "available_accelerators", None)
    return "gpu" if accelerators else "cpu"


def _site_name(label: str) -> str:
    name = re.sub(r"[^a-z0-9_-]", "-", label.lower()).strip("-_") or "parsl"
    return name if name[0].isalnum() else f"x{name}"


def sites_from_parsl(config: Any) -> list[SiteConfig]:
    """Local sites for the executors of a Parsl ``Config`` (one per executor)."""
    executors = list(getattr(config, "executors", None) or [])
    if not executors:
        return [local_site("local", min(8, os.cpu_count() or 1))]
    sites: list[SiteConfig] = []
    for executor in executors:
        label = str(getattr(executor, "label", "") or f"executor{len(sites)}")
        sites.append(
            local_site(_site_name(label), _executor_workers(executor), _executor_kind(executor))
        )
    return sites


class ParslTaskServer(BaseTaskServer):
    """Colmena's Parsl task server: the methods run on orch local sites made from ``config``.

    Args:
        methods: Functions, ``(function, {"executors": [labels]})`` pairs, or orch ``Method``
            objects.
        queues: The thinker's queues.
        config: A Parsl ``Config`` (its executors become local sites), or ``None``.
        timeout: Seconds without a new task after which the server stops by itself.
        default_executors: Executors of methods that name none (``"all"``: any).
        sites: Run on these sites instead (a sites folder or site configs).
        **kwargs: :class:`BaseTaskServer`'s ``run_dir`` and ``grace``.

    Raises:
        ConfigError: A method names an executor the config lacks.
    """

    def __init__(
        self,
        methods: Sequence[MethodSpec],
        queues: Queues,
        config: Any = None,
        timeout: float | None = None,
        default_executors: str | Sequence[str] = "all",
        *,
        sites: SitesSpec = None,
        **kwargs: Any,
    ) -> None:
        self.config = config
        made = sites_from_parsl(config)
        kinds = {
            str(getattr(e, "label", "")): _executor_kind(e)
            for e in getattr(config, "executors", None) or []
        }
        converted: list[Method] = []
        for spec in methods:
            function: Any = spec
            options: dict[str, Any] = {}
            if isinstance(spec, tuple):
                function, options = spec
            labels = options.get("executors", default_executors)
            kind = "cpu" if not kinds or "cpu" in kinds.values() else "gpu"
            if labels != "all" and kinds:
                labels = [labels] if isinstance(labels, str) else list(labels)
                unknown = [label for label in labels if label not in kinds]
                if unknown:
                    raise ConfigError(
                        f"method {getattr(function, '__name__', function)!r}: executors "
                        f"{', '.join(unknown)} are not in the Parsl config (it has "
                        f"{', '.join(kinds)}); name one of those"
                    )
                kind = "gpu" if all(kinds[label] == "gpu" for label in labels) else "cpu"
            converted.append(as_method(function, kind=kind))
        super().__init__(
            queues, converted, sites=sites, default_sites=made, timeout=timeout, **kwargs
        )
