"""Configuration: pydantic models and loaders for sites/*.yaml and campaign options."""

from orchestrator.config.sites import SiteConfig, load_sites

__all__ = ["SiteConfig", "load_sites"]
