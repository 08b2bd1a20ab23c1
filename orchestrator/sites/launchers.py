"""Parsl launchers for local sites: start the worker pool through a command prefix.

A local site's ``launcher`` (e.g. ``["ip", "netns", "exec", "far"]`` or ``["ssh", "node7"]``)
is put in front of the worker pool's command line, so that the pool runs in another network
namespace, on another host, or under any other wrapper, while the interchange stays beside
orch.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from parsl.launchers import SimpleLauncher, SingleNodeLauncher


def _prefixed(prefix: Sequence[str], command: str) -> str:
    """``command`` behind the shell-quoted words of ``prefix`` (unchanged without any)."""
    return f"{shlex.join(prefix)} {command}" if prefix else command


class _Prefixed:
    """Puts ``self.prefix`` before the command the Parsl launcher below it wraps."""

    prefix: list[str]

    def __call__(
        self, command: str, tasks_per_node: int, nodes_per_block: int, script_dir: str = ""
    ) -> str:
        """The base launcher's script, around ``<prefix> <command>``."""
        wrap = super().__call__  # type: ignore[misc]
        return str(
            wrap(_prefixed(self.prefix, command), tasks_per_node, nodes_per_block, script_dir)
        )


class PrefixLauncher(_Prefixed, SingleNodeLauncher):
    """Parsl's ``SingleNodeLauncher`` whose command runs behind an argv prefix.

    Each word of ``prefix`` is shell-quoted (``shlex.quote``), so a word with spaces or shell
    characters reaches the program as one argument; the worker pool's own command follows
    unchanged. With an empty prefix it behaves exactly as ``SingleNodeLauncher``.

    Args:
        prefix: The words put before the worker pool's command, e.g.
            ``["ip", "netns", "exec", "far"]``.
        debug: Passed to ``SingleNodeLauncher`` (echo what the launch script does).
        fail_on_any: Passed to ``SingleNodeLauncher``.
    """

    def __init__(self, prefix: Sequence[str], debug: bool = True, fail_on_any: bool = False):
        super().__init__(debug=debug, fail_on_any=fail_on_any)
        self.prefix = list(prefix)


class PrefixSimpleLauncher(_Prefixed, SimpleLauncher):
    """Parsl's ``SimpleLauncher`` (what MPI mode requires) behind an argv prefix.

    The MPI engine starts one worker pool per block, on the block's first node; its workers
    start each task's MPI program over the task's nodes. ``prefix`` works as in
    :class:`PrefixLauncher`.

    Args:
        prefix: The words put before the worker pool's command.
        debug: Passed to ``SimpleLauncher``.
    """

    def __init__(self, prefix: Sequence[str], debug: bool = True):
        super().__init__(debug=debug)
        self.prefix = list(prefix)
