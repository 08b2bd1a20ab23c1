"""Moving large task arguments and results by ProxyStore reference (control side).

Worker-side counterparts live in :mod:`orchestrator.apps.proxies`. Only :class:`DataConfig`
is imported eagerly (site configs need it); the rest loads ProxyStore and Redis on first use,
so commands that only read configuration start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orchestrator.data.config import DataConfig, GlobusCollection, MultiMember

if TYPE_CHECKING:
    from orchestrator.apps.proxies import DataMovementError, ProxyPutFailed, ProxyResolveFailed
    from orchestrator.data.proxying import DataPlane
    from orchestrator.data.stores import DataStoreError, ManagedStore

_LAZY = {
    "DataMovementError": "orchestrator.apps.proxies",
    "ProxyPutFailed": "orchestrator.apps.proxies",
    "ProxyResolveFailed": "orchestrator.apps.proxies",
    "DataPlane": "orchestrator.data.proxying",
    "DataStoreError": "orchestrator.data.stores",
    "ManagedStore": "orchestrator.data.stores",
}

__all__ = [
    "DataConfig",
    "DataMovementError",
    "DataPlane",
    "DataStoreError",
    "GlobusCollection",
    "ManagedStore",
    "MultiMember",
    "ProxyPutFailed",
    "ProxyResolveFailed",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
