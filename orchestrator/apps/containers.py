"""Worker side of exec mode: start a simulation code inside the site's image.

The site hands every task a ``container`` entry in its task context (built by
``orchestrator.containers.commands.exec_spec``): ``argv`` (``[runtime, 'exec', options...]``)
and ``image``. :func:`container_argv` puts the site's launcher (``mpiexec -n 4``, ``srun``)
outside the image and the code inside::

    mpiexec -n 4  apptainer exec --cleanenv ... --bind RUN --pwd RUN --env K=V IMAGE  lmp -in in.lmp

Standard library only: this runs on workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def split_launcher(command: Sequence[str], program: str) -> tuple[list[str], list[str]]:
    """Split a site's command into (launcher, code): the code starts at ``program``.

    The code starts at the first word whose base name is ``program`` or begins with
    ``program`` followed by ``_`` or ``.`` (``lmp_mpi``, ``cp2k.psmp``); with no such word
    the whole command is the code (no launcher).
    """
    stem = Path(program).name.split(".")[0]
    for index, word in enumerate(command):
        name = Path(word).name
        if name == Path(program).name or name == stem or name.startswith((stem + "_", stem + ".")):
            return list(command[:index]), list(command[index:])
    return [], list(command)


def container_argv(
    spec: Mapping[str, Any],
    command: Sequence[str],
    program: str,
    *,
    env: Mapping[str, str],
    workdir: Path,
) -> list[str]:
    """The full argv that runs ``command`` with its code inside the image.

    Args:
        spec: The task context's ``container`` entry (``argv`` and ``image``).
        command: The site's command for the code plus the code's arguments.
        program: The code's program name (where the launcher ends).
        env: Variables the run needs (threads, data paths); passed with ``--env``.
        workdir: The run's directory: bound and made the working directory.
    """
    launcher, code = split_launcher(command, program)
    run_env = dict(env)
    for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"):
        if name in os.environ and name not in run_env:
            run_env[name] = os.environ[name]
    options = ["--bind", str(workdir), "--pwd", str(workdir)]
    for key, value in run_env.items():
        options += ["--env", f"{key}={value}"]
    return [*launcher, *spec["argv"], *options, str(spec["image"]), *code]
