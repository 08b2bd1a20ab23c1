"""Live per-site progress table (rich) for a running campaign."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from orchestrator.runner import Session


def site_table(session: Session) -> Table:
    """Per site: kind, waiting in orch, queued, slots in use, done, failed, moved away, state.

    ``waiting`` counts tasks held in orch; ``queued`` and ``in use`` count slots (nodes on an
    ``mpi:`` site, cores elsewhere): those of tasks sent and waiting at the site for workers,
    and those busy, out of the site's capacity. ``moved`` counts attempts that failed at the
    site and were retried (on another site when one had room); a down site shows why.
    """
    table = Table(title=f"orch: {session.run_dir}", expand=False)
    columns = ("site", "kind", "waiting", "queued", "in use", "done", "failed", "moved", "state")
    for column in columns:
        table.add_column(column, justify="left" if column in ("site", "kind", "state") else "right")
    dispatcher = session.dispatcher
    for name, stats in dispatcher.stats.items():
        if stats.down:
            state = f"[red]down[/red] {escape(stats.down)}"
        else:
            state = "[yellow]drained[/yellow]" if stats.drained else "[green]up[/green]"
        table.add_row(
            name,
            stats.kind,
            str(dispatcher.waiting(stats.kind)),
            str(stats.queued),
            f"{stats.running}/{stats.capacity}",
            str(stats.done),
            str(stats.failed),
            str(stats.moved),
            state,
        )
    return table


@contextlib.contextmanager
def live_progress(session: Session, console: Console | None = None) -> Iterator[None]:
    """Show the site table, refreshed four times a second, while the block runs."""
    console = console or Console(stderr=True)

    class _Renderable:
        def __rich__(self) -> Table:
            return site_table(session)

    with Live(_Renderable(), console=console, refresh_per_second=4, transient=False):
        yield
