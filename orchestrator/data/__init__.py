"""Moving large task arguments and results by ProxyStore reference (control side).

Worker-side counterparts live in :mod:`orchestrator.apps.proxies`.
"""

from orchestrator.apps.proxies import (
    DataMovementError,
    ProxyPutFailed,
    ProxyResolveFailed,
)
from orchestrator.data.config import DataConfig
from orchestrator.data.proxying import DataPlane
from orchestrator.data.stores import DataStoreError, ManagedStore

__all__ = [
    "DataConfig",
    "DataMovementError",
    "DataPlane",
    "DataStoreError",
    "ManagedStore",
    "ProxyPutFailed",
    "ProxyResolveFailed",
]
