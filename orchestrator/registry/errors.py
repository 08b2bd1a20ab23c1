"""Errors of the MLflow wiring (all are :class:`orchestrator.exceptions.OrchError`)."""

from orchestrator.exceptions import OrchError


class RegistryError(OrchError):
    """A model-registry operation failed (unknown version or alias, missing metric...)."""


class RegistryUnavailableError(RegistryError):
    """The MLflow tracking server cannot be reached (down, wrong URI, or not started)."""


class TrackingServerError(OrchError):
    """An embedded MLflow server could not be started."""
