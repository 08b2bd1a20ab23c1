"""How one site runs its tasks in its image: the image path, the binds, the launch commands.

``plan_for(site_config, run_dir, working_dir)`` gathers what the command builders in
:mod:`orchestrator.containers.commands` need for a site: which paths orch uses there (the run
directory, the site's working directory, the data store directories, the folders campaign code
is imported from) and the site's own ``container:`` settings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config.containers import Bind, ContainerConfig
from orchestrator.config.sites import SiteConfig
from orchestrator.containers import commands


def data_paths(config: SiteConfig) -> list[Path]:
    """Directories of the site's file stores (a ``file`` connector or ``multi`` members)."""
    data = config.data
    if data is None:
        return []
    paths = [data.path] if data.path is not None else []
    paths += [m.path for m in data.connectors or [] if m.path is not None]
    return [Path(p) for p in paths]


@dataclass(frozen=True)
class ContainerPlan:
    """A site's container settings resolved against the paths of one campaign.

    Attributes:
        container: The site's ``container:`` section.
        kind: The site's kind (``--nv`` defaults on for ``gpu``).
        image: The image's path on the site.
        binds: Every bind: orch's paths first, then the site's own ``binds``.
        env: Variables set in the container besides the site's ``env``.
    """

    container: ContainerConfig
    kind: str
    image: str
    binds: list[Bind]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        """``workers`` or ``exec``."""
        return self.container.mode

    def exec_spec(self) -> dict[str, Any]:
        """The task context entry exec-mode workers use (see ``apps.containers``)."""
        return commands.exec_spec(self.container, self.kind, self.binds, self.image)

    def launch_template(self, workdir: Path | str) -> str:
        """Globus Compute's ``custom`` container template that runs the workers inside."""
        return commands.workers_launch_template(
            self.container, self.kind, self.binds, self.image, self.env, workdir
        )

    def exec_prefix(self) -> list[str]:
        """``[runtime, 'exec', options..., image]`` for running a program in the image."""
        return commands.exec_prefix(self.container, self.kind, self.binds, self.image, self.env)

    def host_paths(self) -> list[Path]:
        """The host side of every bind orch adds (created before the runtime starts)."""
        own = set(self.container.bind_list())
        return [Path(b.src) for b in self.binds if b not in own]


def plan_for(
    config: SiteConfig,
    run_dir: Path | None,
    working_dir: Path | None,
    extra_paths: Sequence[str] = (),
) -> ContainerPlan | None:
    """The container plan of a site, or ``None`` when it has no ``container:`` section.

    Args:
        config: The site.
        run_dir: The campaign directory, when orch's paths are the site's (local sites);
            ``None`` for a remote site, which binds only its own ``binds``.
        working_dir: The site's working directory (local sites).
        extra_paths: Folders workers import campaign code from (bound, and on PYTHONPATH in
            workers mode).
    """
    container = config.container
    if container is None:
        return None
    image = container.image_path(config.name)
    if run_dir is not None:  # a local site: `~` is this machine's; a remote site expands its own
        image = os.path.expanduser(image)
    env: dict[str, str] = {}
    paths: list[Path | str] = []
    if run_dir is not None:
        paths += [run_dir, *([working_dir] if working_dir else []), *data_paths(config)]
    if container.mode == "workers" and run_dir is not None:
        folders = [p for p in extra_paths if p]
        if folders:
            env["PYTHONPATH"] = os.pathsep.join(folders)
            paths += folders
        sim_root = os.environ.get("ORCH_SIM_ROOT")
        if sim_root:  # where the simulation wrappers put their runs (set for tests, say)
            env["ORCH_SIM_ROOT"] = sim_root
            paths.append(sim_root)
    binds = commands.site_binds(container, paths)
    return ContainerPlan(container=container, kind=config.kind, image=image, binds=binds, env=env)
