"""The command lines orch gives Apptainer (or Singularity), as argument lists.

Everything here is pure: it builds argv lists from a site's ``container:`` section and the
paths the site needs, and never runs anything. Options orch always emits:

* ``--cleanenv``: the task sees only the variables passed with ``--env`` (and the image's own
  ``%environment``), never the login environment of the node;
* ``--env PYTHONNOUSERSITE=1``: ``~/.local`` packages (the home directory is bound by
  default) must not shadow the image's;
* ``--bind`` for the run directory, the site's working directory, the data store path and the
  site's own ``binds``;
* ``--nv`` where the site uses GPUs.

Exec mode hands :func:`exec_spec` to the workers, which add the per-run part (``--pwd``, the
run directory, the code's variables; see ``orchestrator.apps.containers``).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.config.containers import Bind, ContainerConfig

BASE_ENV: dict[str, str] = {"PYTHONNOUSERSITE": "1"}
"""Variables every containerized task gets (see the module docstring)."""

LAUNCH_PLACEHOLDER = "{EXECUTOR_LAUNCH_CMD}"
"""Where Globus Compute's ``custom`` container type puts the worker pool's launch command."""


def bind_args(binds: Iterable[Bind | str]) -> list[str]:
    """``--bind`` options, one per distinct bind, in order."""
    out: list[str] = []
    seen: set[str] = set()
    for bind in binds:
        spec = bind.spec() if isinstance(bind, Bind) else str(bind)
        if spec not in seen:
            seen.add(spec)
            out += ["--bind", spec]
    return out


def env_args(env: Mapping[str, str]) -> list[str]:
    """``--env K=V`` options, in order."""
    out: list[str] = []
    for key, value in env.items():
        out += ["--env", f"{key}={value}"]
    return out


def site_binds(container: ContainerConfig, paths: Sequence[Path | str]) -> list[Bind]:
    """The binds a site needs: ``paths`` orch uses there (existing ones), then the site's own.

    A path inside another one in the list is dropped: its parent's bind covers it.
    """
    wanted = list(dict.fromkeys(os.path.abspath(os.fspath(p)) for p in paths if p))

    def inside(path: str, other: str) -> bool:
        return path != other and path.startswith(other.rstrip("/") + "/")

    kept = [p for p in wanted if not any(inside(p, other) for other in wanted)]
    return [Bind(src=p, dst=p) for p in kept] + container.bind_list()


def runtime_options(
    container: ContainerConfig,
    kind: str,
    binds: Iterable[Bind | str],
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The options of ``apptainer exec`` that every containerized task of the site gets."""
    options = ["--cleanenv"]
    if container.uses_gpu(kind):
        options.append("--nv")
    options += bind_args(binds)
    options += env_args({**BASE_ENV, **container.env, **(env or {})})
    return options


def exec_prefix(
    container: ContainerConfig,
    kind: str,
    binds: Iterable[Bind | str],
    image: str,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """``[runtime, 'exec', options..., image]``: what goes before a program to run it inside."""
    return [container.runtime, "exec", *runtime_options(container, kind, binds, env), image]


def exec_spec(
    container: ContainerConfig,
    kind: str,
    binds: Iterable[Bind | str],
    image: str,
) -> dict[str, Any]:
    """What exec-mode workers need to start a code in the image (task context ``container``).

    ``argv`` is ``[runtime, 'exec', options...]`` without the image; the worker adds the
    run's own ``--bind``/``--pwd``/``--env`` options, then ``image``, then the code's argv.
    """
    return {
        "argv": [container.runtime, "exec", *runtime_options(container, kind, binds)],
        "image": image,
    }


def workers_launch_template(
    container: ContainerConfig,
    kind: str,
    binds: Iterable[Bind | str],
    image: str,
    env: Mapping[str, str] | None = None,
    workdir: Path | str | None = None,
) -> str:
    """The ``container_cmd_options`` of Globus Compute's ``custom`` container type.

    The worker pool's launch command replaces :data:`LAUNCH_PLACEHOLDER`. Globus Compute
    re-splits the template on whitespace (``" ".join(shlex.split(...))``), so no value may
    contain a space; the site config refuses such paths in workers mode.

    Raises:
        ValueError: a path or value contains whitespace.
    """
    argv = [container.runtime, "exec", *runtime_options(container, kind, binds, env)]
    if workdir is not None:
        argv += ["--pwd", os.fspath(workdir)]
    argv.append(image)
    spaced = [word for word in argv if any(c.isspace() for c in word)]
    if spaced:
        raise ValueError(
            f"{spaced[0]!r} contains whitespace, which the workers-mode launch command cannot "
            "carry; use paths without spaces or `mode: exec`"
        )
    return " ".join(shlex.quote(word) for word in argv) + " " + LAUNCH_PLACEHOLDER


def build_argv(runtime: str, image: str, recipe: Path | str) -> list[str]:
    """``apptainer build --fakeroot [--sandbox] IMAGE RECIPE``: a directory image is a sandbox."""
    sandbox = [] if image.endswith(".sif") else ["--sandbox"]
    return [runtime, "build", "--fakeroot", *sandbox, image, os.fspath(recipe)]


def pull_argv(runtime: str, image: str, uri: str) -> list[str]:
    """``apptainer pull IMAGE URI``."""
    return [runtime, "pull", image, uri]
