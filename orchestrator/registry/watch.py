"""Run a command and end its whole process group when the process that started it dies.

``python watch.py PARENT_PID FD -- COMMAND...``: the embedded MLflow server runs under this
watcher (see :mod:`orchestrator.registry.server`), so that ``kill -9`` of orch does not leave
the server (and its uvicorn child) running. ``FD`` is the read end of a pipe whose only write
end orch holds: it reads end-of-file the moment orch is gone, however it died. The parent's
pid is checked as well, once a second, in case a forked child of orch holds the write end.

Run by path (standard library only), as its own process group leader. Exits with the
command's exit code, or, when the parent died, after terminating the group (SIGTERM, then
SIGKILL after :data:`GRACE_S`).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys

GRACE_S = 10.0
"""Seconds the server gets to stop after SIGTERM before the group is killed."""

CHECK_S = 1.0
"""How often the parent's pid is checked while the pipe stays quiet."""


def _end_group(child: subprocess.Popen[bytes]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group signal below is not for us
    os.killpg(0, signal.SIGTERM)
    try:
        child.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(0, signal.SIGKILL)  # stragglers, and this process with them


def main(argv: list[str]) -> int:
    """Start the command, watch the parent, return the command's exit code."""
    if len(argv) < 4 or argv[2] != "--":
        print("usage: watch.py PARENT_PID FD -- COMMAND...", file=sys.stderr)
        return 2
    parent, fd, command = int(argv[0]), int(argv[1]), argv[3:]
    child = subprocess.Popen(command)  # same process group as this one
    while child.poll() is None:
        ready, _, _ = select.select([fd], [], [], CHECK_S)
        if ready and not os.read(fd, 1) or os.getppid() != parent:
            _end_group(child)
            return 1
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
