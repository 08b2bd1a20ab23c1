"""Placement of tasks on sites, retries, and the record of every task state change."""

from orchestrator.dispatch.dispatcher import Dispatcher, SiteStats
from orchestrator.dispatch.methods import Method, MethodRegistry

__all__ = ["Dispatcher", "Method", "MethodRegistry", "SiteStats"]
