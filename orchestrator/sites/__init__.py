"""Site backends: where tasks run. Each returns futures; the dispatcher never cares which."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.config.sites import SiteConfig
from orchestrator.sites.base import Outcome, Site

__all__ = ["Outcome", "Site", "make_site"]


def make_site(
    config: SiteConfig,
    run_dir: Path,
    worker_paths: Sequence[str] = (),
    context: Mapping[str, Any] | None = None,
) -> Site:
    """Build the backend object for one site config (imported lazily per backend).

    Args:
        config: The site's description.
        run_dir: Campaign directory (default parent of the site's working directory).
        worker_paths: Folders local workers need on PYTHONPATH to import campaign code;
            remote sites must have that code installed in their image instead.
        context: Extra task context every task at the site sees (e.g. its result store).
    """
    if config.backend == "local":
        from orchestrator.sites.local import LocalSite

        return LocalSite(config, run_dir, context, extra_paths=list(worker_paths))
    from orchestrator.sites.globus import GlobusSite

    return GlobusSite(config, run_dir, context)
