"""MLflow wiring: the tracking server, logging trained models, the registry, loading by alias.

``orchestrator.registry.server`` needs no MLflow import (``orch ui`` starts fast);
:class:`ModelRegistry` and :class:`ModelVersionInfo` import MLflow and torch on first use.
An embedded server needs the run's secret (``<run_dir>/mlflow/credentials``, see
``orchestrator.registry.server``); a registry made from its :class:`TrackingServer` sends it.
Importing this package turns MLflow telemetry off for the process
(``MLFLOW_DISABLE_TELEMETRY=true``; MLflow reads it when it is imported).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

from orchestrator.registry.errors import (  # noqa: E402
    RegistryError,
    RegistryUnavailableError,
    TrackingServerError,
)
from orchestrator.registry.server import (  # noqa: E402
    Credentials,
    TrackingServer,
    live_server_url,
    read_credentials,
    store_paths,
    validate_tracking_uri,
)

if TYPE_CHECKING:
    from orchestrator.registry.models import ModelRegistry, ModelVersionInfo

__all__ = [
    "Credentials",
    "ModelRegistry",
    "ModelVersionInfo",
    "RegistryError",
    "RegistryUnavailableError",
    "TrackingServer",
    "TrackingServerError",
    "live_server_url",
    "read_credentials",
    "store_paths",
    "validate_tracking_uri",
]


def __getattr__(name: str) -> Any:
    if name in ("ModelRegistry", "ModelVersionInfo"):
        from orchestrator.registry import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
