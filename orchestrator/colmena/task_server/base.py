"""Colmena's task servers as thin adapters onto orch's sites (``colmena.task_server.base``).

A Colmena main script makes queues, a task server with its methods, and a thinker, then
``server.start()``, ``thinker.start()``, ``thinker.join()``, ``queues.send_kill_signal()``,
``server.join()``. Here the task server is a thread that starts orch's sites for the methods,
attaches the queues to orch's dispatcher, and, once the kill signal comes and every task sent
has its result, stops the sites again. Everything orch does for ``orch launch`` happens: the
run directory, its journal, results files, ``orch status RUN_DIR``, and no process outlives
the script (``kill -9`` included).
"""

from __future__ import annotations

import datetime as dt
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from orchestrator.config.sites import SiteConfig, load_sites
from orchestrator.dispatch import Method, MethodRegistry
from orchestrator.dispatch.journal import Journal
from orchestrator.models import SITE_FAILURE
from orchestrator.observe.live import LiveRecorder
from orchestrator.queues import Queues
from orchestrator.runner import open_session, site_facts

__all__ = ["BaseTaskServer", "SitesSpec", "as_method", "default_run_dir", "local_site"]

logger = logging.getLogger(__name__)

SitesSpec = str | os.PathLike[str] | Sequence[SiteConfig] | None
"""Where the methods run: a sites folder (``sites/*.yaml``), site configs, or ``None`` for
the server's own local sites."""

POLL_S = 0.2
"""How often the server looks for the kill signal, its ``timeout`` and ``terminate``."""


def default_run_dir(name: str = "colmena") -> Path:
    """``runs/<name>-<YYYYmmdd-HHMMSS>``, as ``orch launch`` names its run directories."""
    return Path("runs") / f"{name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def local_site(name: str, workers: int, kind: str = "cpu") -> SiteConfig:
    """A local site (an endpoint engine on this machine) with ``workers`` workers."""
    return SiteConfig.model_validate(
        {"name": name, "kind": kind, "backend": "local", "capacity": max(1, int(workers))}
    )


def as_method(function: Callable[..., Any] | Method, kind: str = "cpu") -> Method:
    """An orch :class:`Method` for one of Colmena's methods (a function, or already one).

    Colmena does not retry a task unless told to: a plain function gets ``max_retries=0``.
    orch's own retry of tasks whose site failed is asked for by passing a ``Method``.
    """
    if isinstance(function, Method):
        return function
    wrapped = getattr(function, "function", None)  # Colmena's PythonMethod-like wrappers
    if not inspect.isfunction(function) and callable(wrapped):
        name = str(getattr(function, "name", "") or getattr(wrapped, "__name__", ""))
        return Method(wrapped, name=name, kind=kind, max_retries=0)  # type: ignore[arg-type]
    return Method(function, kind=kind, max_retries=0)  # type: ignore[arg-type]


def _worker_paths(methods: Iterable[Method]) -> list[str]:
    """Folders workers need on ``PYTHONPATH`` to import the methods' modules."""
    paths: list[str] = []
    for method in methods:
        module = sys.modules.get(getattr(method.function, "__module__", "") or "")
        file = getattr(module, "__file__", None)
        if file and module is not None and module.__name__ != "__main__":
            root = Path(file).resolve().parent
            for _ in range(module.__name__.count(".")):  # a package's root, not its folder
                root = root.parent
            if str(root) not in paths:
                paths.append(str(root))
    return paths


class BaseTaskServer(threading.Thread):
    """A Colmena task server: runs the queues' tasks on orch's sites until the kill signal.

    Colmena runs its task server as a process; this one is a thread of the script, so
    ``start``, ``join``, ``is_alive``, ``terminate``, ``kill`` and ``exitcode`` behave as the
    process's do.

    Args:
        queues: The queues the thinker sends to (``PipeQueues``, ``ColmenaQueues``...).
        methods: orch methods to serve.
        sites: Where they run: a sites folder, site configs, or ``None`` for ``default_sites``.
        default_sites: The sites used when ``sites`` is ``None`` (each adapter's own).
        timeout: Seconds without a new task after which the server stops by itself, once
            every result is back (Colmena's ``timeout``); ``None``: only the kill signal.
        run_dir: The run directory (default ``runs/colmena-<time>``).
        grace: On ``terminate()``, seconds running tasks get before they are interrupted.
    """

    def __init__(
        self,
        queues: Queues,
        methods: Sequence[Method],
        sites: SitesSpec = None,
        default_sites: Sequence[SiteConfig] = (),
        timeout: float | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        grace: float = 0.0,
    ) -> None:
        super().__init__(name=f"orch-{type(self).__name__}", daemon=True)
        if not isinstance(queues, Queues):
            raise TypeError(
                f"{type(self).__name__}: queues must be orch's queues (PipeQueues, "
                f"ColmenaQueues from orchestrator.colmena.queue), got {type(queues).__name__}"
            )
        self.queues = queues
        self.methods = MethodRegistry(methods)
        self.method_names = {m.name for m in self.methods}
        self.site_configs = self._resolve_sites(sites, default_sites)
        self.timeout = timeout
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir()
        self.grace = grace
        self.error: BaseException | None = None
        """What stopped the server, if it failed (also logged); its tasks got failed results."""
        self.ready = threading.Event()
        """Set once the sites are up and the queues are attached (or the start failed)."""
        self._terminate = threading.Event()
        self._exitcode: int | None = None

    @staticmethod
    def _resolve_sites(sites: SitesSpec, default: Sequence[SiteConfig]) -> list[SiteConfig]:
        if sites is None:
            return list(default)
        if isinstance(sites, (str, os.PathLike)):
            return load_sites(Path(sites))
        return list(sites)

    @property
    def exitcode(self) -> int | None:
        """0 once the server stopped cleanly, 1 if it failed, ``None`` while it runs."""
        return self._exitcode

    def terminate(self) -> None:
        """Stop now: tasks still running get ``grace`` seconds, then they are interrupted."""
        self._terminate.set()

    def kill(self) -> None:
        """Stop now, as :meth:`terminate`."""
        self._terminate.set()

    def _should_stop(self) -> bool:
        if self._terminate.is_set():
            return True
        if self.queues.killed.is_set():
            return self.queues.wait_delivered(0)
        if self.timeout is not None and time.monotonic() - self.queues.last_sent > self.timeout:
            if self.queues.wait_delivered(0):
                logger.info("no task for %g s: the task server stops", self.timeout)
                return True
        return False

    def run(self) -> None:
        """Start the sites, serve the queues' tasks, stop the sites (the thread's body)."""
        try:
            self._serve()
            self._exitcode = 0
        except BaseException as exc:  # noqa: BLE001 - reported on the server and in the log
            self.error = exc
            self._exitcode = 1
            logger.error("task server %s failed: %s", type(self).__name__, exc, exc_info=exc)
            self.queues.close(
                f"the task server failed: {type(exc).__name__}: {exc}", reason=SITE_FAILURE
            )
        finally:
            self.ready.set()

    def _serve(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        journal = Journal(self.run_dir)
        journal.set_meta(
            {
                "campaign": f"colmena:{Path(sys.argv[0]).name or 'script'}",
                "sites": [c.name for c in self.site_configs],
            }
        )
        with open_session(
            self.site_configs,
            self.methods,
            set(self.queues.topics),
            self.run_dir,
            _worker_paths(self.methods),
            journal,
            queues=self.queues,
        ) as session:
            journal.set_meta({"started": time.time(), "site_info": site_facts(session.sites)})
            live = LiveRecorder(session.dispatcher, journal).start()
            state = "failed"
            try:
                self.ready.set()
                logger.info(
                    "%s serving %s on %s (run dir %s)",
                    type(self).__name__,
                    ", ".join(sorted(self.method_names)),
                    ", ".join(s.name for s in session.sites),
                    self.run_dir,
                )
                while not self._should_stop():
                    self._terminate.wait(POLL_S)
                if self._terminate.is_set():
                    self._interrupt(session.dispatcher)
                state = "ended"
            finally:
                session.dispatcher.stop_accepting()
                live.stop(state)

    def _interrupt(self, dispatcher: Any) -> None:
        self.queues.close("the task server was terminated")
        dispatcher.stop_accepting()
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline and not dispatcher.wait_idle(POLL_S):
            pass
        stopped = dispatcher.interrupt()
        if stopped:
            logger.warning("terminated: %d task(s) interrupted", len(stopped))
