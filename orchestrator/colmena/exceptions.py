"""Colmena's exception names (``colmena.exceptions``): both derive from ``BaseException``."""

from orchestrator.exceptions import KillSignalException, TimeoutException

__all__ = ["KillSignalException", "TimeoutException"]
