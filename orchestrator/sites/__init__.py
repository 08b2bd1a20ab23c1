"""Site backends: where tasks run. Each returns futures; the dispatcher never cares which."""

from pathlib import Path

from orchestrator.config.sites import SiteConfig
from orchestrator.sites.base import Outcome, Site

__all__ = ["Outcome", "Site", "make_site"]


def make_site(config: SiteConfig, run_dir: Path) -> Site:
    """Build the backend object for one site config (imported lazily per backend)."""
    if config.backend == "local":
        from orchestrator.sites.local import LocalSite

        return LocalSite(config, run_dir)
    from orchestrator.sites.globus import GlobusSite

    return GlobusSite(config, run_dir)
