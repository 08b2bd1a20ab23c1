"""Live per-site progress table (rich) for a running campaign."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.runner import Session


def site_table(session: Session) -> Table:
    """Per site: kind, waiting in orch, queued at the site, running, done, failed, state."""
    table = Table(title=f"orch: {session.run_dir}", expand=False)
    for column in ("site", "kind", "waiting", "queued", "running", "done", "failed", "state"):
        table.add_column(column, justify="left" if column in ("site", "kind", "state") else "right")
    dispatcher = session.dispatcher
    for name, stats in dispatcher.stats.items():
        state = "[red]down[/red]" if stats.down else "[green]up[/green]"
        table.add_row(
            name,
            stats.kind,
            str(dispatcher.waiting(stats.kind)),
            str(stats.queued),
            str(stats.running),
            str(stats.done),
            str(stats.failed),
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
