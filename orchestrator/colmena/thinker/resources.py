"""Colmena's slot accounting (``colmena.thinker.resources``), served by orch's."""

from orchestrator.thinker.resources import ReallocatorThread, ResourceCounter

__all__ = ["ReallocatorThread", "ResourceCounter"]
