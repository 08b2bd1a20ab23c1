"""Apptainer definition files in ``containers/``: their ``%files`` and the sources they need.

A recipe's ``%files`` sources are relative to the folder the build runs in, the repository
root. :func:`pack_sources` puts the recipe and those sources in one gzipped tar, so a build can
run anywhere (on a site, through a deployment task) from a scratch folder.
"""

from __future__ import annotations

import io
import os
import shlex
import tarfile
from pathlib import Path

from orchestrator.config.containers import containers_dir
from orchestrator.exceptions import ConfigError

_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


def recipe_path(name: str) -> Path:
    """The definition file ``name`` in ``containers/``."""
    return containers_dir() / name


def build_root() -> Path:
    """The folder builds run in (``%files`` sources are relative to it)."""
    return containers_dir().parent


def files_sources(text: str) -> list[str]:
    """The source paths of a recipe's ``%files`` section, as written."""
    sources: list[str] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("%"):
            section = line.split()[0]
            continue
        if section == "%files" and line and not line.startswith("#"):
            sources.append(shlex.split(line)[0])
    return sources


def _keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    parts = Path(info.name).parts
    if any(p in _SKIP_DIRS for p in parts) or info.name.endswith(".pyc"):
        return None
    return info


def pack_sources(name: str) -> bytes:
    """A gzipped tar of ``containers/<name>`` and its ``%files`` sources, paths as in the repo.

    Raises:
        ConfigError: a ``%files`` source is missing.
    """
    recipe = recipe_path(name)
    root = build_root()
    text = recipe.read_text()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(recipe, arcname=os.path.relpath(recipe, root))
        for source in files_sources(text):
            path = root / source
            if not path.exists():
                raise ConfigError(
                    f"{recipe}: %files: {source} not found under {root}; build from a full "
                    "checkout of the repository"
                )
            tar.add(path, arcname=source, filter=_keep)
    return buffer.getvalue()
