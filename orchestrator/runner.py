"""Running a campaign: load the thinker class, start the sites, wire queues to dispatch.

A campaign class is a ``BaseThinker`` subclass with class attributes:

- ``methods``: the ``Method`` objects (or plain functions, which run on ``cpu`` sites);
- ``topics`` (optional): extra result topics besides ``default``, the method names and the
  ``@result_processor`` topics, which are always declared;
- ``Options`` (optional): a pydantic model of the campaign's options; the instance is passed
  to the constructor as ``options=``;
- ``registry_model`` (optional): the name of the model the campaign versions in MLflow; orch
  then starts a tracking server in the run directory (or uses ``tracking_uri``) and passes a
  ``ModelRegistry`` as ``registry=``;

- ``objective`` (optional): an :class:`~orchestrator.context.Objective`; the campaign then
  reports values with ``context.record_objective`` and ``orch report`` plots them;
- ``report_at_end`` (optional, also an instance attribute): when true, orch writes the run's
  report (``RUN_DIR/report.html``, as ``orch report`` does) once the run ended;

and, optionally, ``summary(self) -> str`` for the line printed when it ends.

While the campaign runs, orch writes a live snapshot to the journal every second (``orch
status``) and serves control requests on ``RUN_DIR/control.sock`` (``orch cancel``, ``drain``,
``undrain``, ``halt``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from orchestrator.campaigns import BUILTIN_CAMPAIGNS
from orchestrator.config.faults import FaultSpec
from orchestrator.config.sites import SiteConfig
from orchestrator.containers import preflight
from orchestrator.context import CampaignContext, Objective
from orchestrator.control import ControlServer, Reply
from orchestrator.data import DataPlane
from orchestrator.dispatch import Dispatcher, MethodRegistry
from orchestrator.dispatch.chaos import FaultInjector
from orchestrator.dispatch.dispatcher import SITE_WAIT, check_kinds
from orchestrator.dispatch.journal import Journal
from orchestrator.exceptions import CampaignError, ConfigError, Halted
from orchestrator.lifeline import lifeline
from orchestrator.observe.live import LiveRecorder
from orchestrator.queues import Queues
from orchestrator.sites import make_site
from orchestrator.sites.base import Site
from orchestrator.thinker import BaseThinker, agent_spec

logger = logging.getLogger(__name__)


def load_campaign(ref: str) -> tuple[type[BaseThinker], list[str]]:
    """Resolve a campaign reference to its class.

    Args:
        ref: A built-in name (``demo``), ``package.module:Class`` or ``path/to/file.py:Class``.

    Returns:
        The class and the directories workers need on their ``PYTHONPATH`` to import it.

    Raises:
        ConfigError: the reference cannot be resolved (one line, with what to do).
    """
    extra_paths: list[str] = []
    target = BUILTIN_CAMPAIGNS.get(ref, ref)
    if ":" not in target:
        known = ", ".join(sorted(BUILTIN_CAMPAIGNS))
        raise ConfigError(
            f"campaign {ref!r}: not a built-in campaign ({known}); give "
            f"'package.module:Class' or 'path/to/file.py:Class'"
        )
    module_ref, _, class_name = target.rpartition(":")
    where = module_ref
    if module_ref.endswith(".py"):
        path = Path(module_ref).resolve()
        if not path.is_file():
            raise ConfigError(
                f"campaign {ref!r}: file {module_ref} not found; check the path (relative "
                f"paths start from {Path.cwd()})"
            )
        # Import by module name from the file's folder, so workers can import it the same way
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        extra_paths.append(folder)
        module_name = path.stem
    elif "/" in module_ref or "\\" in module_ref:
        raise ConfigError(
            f"campaign {ref!r}: {module_ref} is not a .py file; give 'path/to/file.py:Class' "
            "or 'package.module:Class'"
        )
    else:
        module_name = module_ref
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.split(".")[0] != exc.name.split(".")[0]:
            fix = f"install {exc.name!r} in orch's Python environment"
        else:
            fix = "check the module name and that its folder is on PYTHONPATH"
        raise ConfigError(f"campaign {ref!r}: cannot import {module_name}: {exc}; {fix}") from None
    except ImportError as exc:
        raise ConfigError(
            f"campaign {ref!r}: cannot import {module_name}: {exc}; fix the import in {where}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - user code failing at import time
        raise ConfigError(
            f"campaign {ref!r}: importing {module_name} raised {type(exc).__name__}: {exc}; "
            f"fix {where} (`python -c 'import {module_name}'` shows the traceback)"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        thinkers = sorted(
            name
            for name, value in vars(module).items()
            if isinstance(value, type)
            and issubclass(value, BaseThinker)
            and value is not BaseThinker
        )
        have = f"it defines: {', '.join(thinkers)}" if thinkers else "it defines no thinker class"
        raise ConfigError(
            f"campaign {ref!r}: {module_name} has no attribute {class_name!r}; check the class "
            f"name ({have})"
        )
    if not (isinstance(cls, type) and issubclass(cls, BaseThinker)):
        raise ConfigError(
            f"campaign {ref!r}: {class_name} is not a BaseThinker subclass; make it subclass "
            "orchestrator.thinker.BaseThinker"
        )
    return cls, extra_paths


def campaign_methods(cls: type) -> MethodRegistry:
    """The methods a campaign class declares in its ``methods`` attribute."""
    declared = getattr(cls, "methods", None)
    if not declared:
        raise ConfigError(
            f"campaign {cls.__name__}: declares no methods; set a class attribute "
            f"'methods = [Method(fn, kind=\"cpu\"), ...]'"
        )
    return MethodRegistry(declared)


def campaign_topics(cls: type, methods: MethodRegistry) -> set[str]:
    """Topics to declare: ``topics`` attribute, method names and result-processor topics."""
    topics = set(getattr(cls, "topics", ()) or ())
    topics.update(m.name for m in methods)
    for _, member in inspect.getmembers(cls):
        spec = agent_spec(member)
        if spec is not None and spec.topic is not None:
            topics.add(spec.topic)
    return topics


@dataclass
class Session:
    """A running campaign's plumbing: queues for the thinker, the dispatcher and sites."""

    queues: Queues
    dispatcher: Dispatcher
    sites: list[Site]
    run_dir: Path
    data: DataPlane
    journal: Journal | None = None
    faults: FaultInjector | None = None


def _start_sites(
    configs: Sequence[SiteConfig],
    run_dir: Path,
    extra_paths: list[str],
    data: DataPlane,
    kinds: set[str],
    sites_dir: Path | None = None,
    notify: Callable[[str], None] | None = None,
) -> tuple[list[Site], dict[str, str]]:
    """Start the sites and run the pre-flight checks, all in parallel.

    Sites that fail the pre-flight are reported (one line each through ``notify``); those
    whose image failed are stopped and left out, those whose service failed are kept and
    returned with their reason, to be marked down once the dispatcher watches them (it
    revives them when they answer). When a kind in ``kinds`` has no passing site, nothing runs.

    Returns:
        The sites to use, and ``{site name: reason}`` for those to mark down.

    Raises:
        ConfigError: a site could not start, or a kind has no site that passed the pre-flight.
    """
    sites: list[Site] = []
    for config in configs:
        sites.append(make_site(config, run_dir, extra_paths, data.result_context(config.name)))
    errors: list[str] = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, 2 * len(sites))) as pool:
        starting = {pool.submit(site.start): site for site in sites}
        checking = [pool.submit(preflight.check_site, site, sites_dir) for site in sites]
        for future, site in starting.items():
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - reported below with the site name
                errors.append(f"site {site.name}: could not start: {type(exc).__name__}: {exc}")
        verdicts = [future.result() for future in checking]
    logger.info("sites started and pre-flight done in %.2f s", time.monotonic() - started)
    for verdict in verdicts:
        logger.info(
            "pre-flight: site %s %s in %.3f s",
            verdict.site,
            "passed" if verdict.reason is None else "failed",
            verdict.seconds,
        )
    if not errors:
        failed = [v for v in verdicts if v.reason is not None]
        missing = preflight.missing_kinds(sites, verdicts, kinds)
        if missing:
            reasons = "; ".join(str(v.reason) for v in failed)
            errors.append(
                f"no {'/'.join(sorted(missing))} site passed the pre-flight checks, so no task "
                f"can run: {reasons}"
            )
        else:
            for verdict in failed:
                then = "kept as down until it answers" if verdict.revivable else "left out"
                line = f"pre-flight: {verdict.reason}; {then}"
                logger.warning("%s", line)
                if notify is not None:
                    notify(line)
    if errors:
        for site in sites:
            site.shutdown()
        raise ConfigError("; ".join(errors))
    by_name = {v.site: v for v in verdicts}
    kept = []
    down: dict[str, str] = {}
    for site in sites:
        verdict = by_name[site.name]
        if verdict.reason is None or verdict.revivable:
            preflight.apply(site, verdict)
            kept.append(site)
            if verdict.reason is not None:
                down[site.name] = verdict.reason
        else:
            site.shutdown()
    return kept, down


@contextlib.contextmanager
def open_session(
    site_configs: Sequence[SiteConfig],
    methods: MethodRegistry,
    topics: set[str],
    run_dir: Path,
    extra_paths: list[str] | None = None,
    journal: Journal | None = None,
    sites_dir: Path | None = None,
    notify: Callable[[str], None] | None = None,
    site_wait: float = SITE_WAIT,
    faults: FaultSpec | None = None,
    queues: Queues | None = None,
) -> Iterator[Session]:
    """Start the sites and wire queues to a dispatcher; stop everything on exit.

    Every site is shut down on the way out, whether the block ends normally, raises, or is
    interrupted (KeyboardInterrupt), so no engine process outlives the session. With a
    ``journal``, results it holds that the results files lack (a crash came between the two)
    are written there first; the journal is closed on exit. ``sites_dir`` is where the
    deployment records of containerized sites are (``<sites_dir>/deploy/``); the pre-flight
    checks every site against them before the block runs. ``site_wait`` is how long tasks
    wait out an outage of every site of their kind; ``faults`` turns fault injection on.
    ``queues``: use these (made earlier, e.g. by a Colmena main script) instead of new queues
    for ``topics``; tasks they hold go out once the dispatcher is attached.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    with lifeline(run_dir):  # every engine process ends with orch, kill -9 included
        needed = methods.kinds()
        configs = [c for c in site_configs if c.kind in needed]
        if queues is None:
            queues = Queues(topics)
        sites: list[Site] = []
        dispatcher: Dispatcher | None = None
        check_kinds(methods, {c.kind for c in configs})
        data = DataPlane({c.name: c.data for c in configs}, campaign=run_dir.name)
        try:
            sites, down = _start_sites(
                configs, run_dir, extra_paths or [], data, needed, sites_dir, notify
            )
            dispatcher = Dispatcher(
                sites,
                methods,
                queues.put_result,
                run_dir,
                data=data,
                journal=journal,
                site_wait=site_wait,
            )
            injector = FaultInjector(faults, dispatcher) if faults is not None else None
            for site in sites:
                if site.name in down:  # the dispatcher revives it when it answers
                    site.mark_down(down[site.name])
            if journal is not None:
                dispatcher.undelivered(journal.completed_results(skip=dispatcher.results.written))
            queues.attach(dispatcher)
            yield Session(
                queues=queues,
                dispatcher=dispatcher,
                sites=sites,
                run_dir=run_dir,
                data=data,
                journal=journal,
                faults=injector,
            )
        finally:
            if dispatcher is not None:
                dispatcher.stop_accepting()
            for site in sites:
                site.shutdown()
            if dispatcher is not None:
                dispatcher.undelivered(queues.drain())
                dispatcher.close()
            elif journal is not None:
                journal.close()
            data.close()  # after the sites: a late task could re-create a store's directory


def site_facts(sites: Sequence[Site]) -> list[dict[str, Any]]:
    """What the journal keeps of each site for ``orch status`` (``meta['site_info']``)."""
    return [
        {
            "name": site.name,
            "kind": site.kind,
            "backend": site.config.backend,
            "capacity": site.capacity,
        }
        for site in sites
    ]


@dataclass
class RunSummary:
    """What a finished campaign reports."""

    run_dir: Path
    seconds: float
    per_site: dict[str, dict[str, int]]
    agent_errors: list[tuple[str, BaseException]] = field(default_factory=list)
    summary: str = ""
    replayed: int = 0


def build_thinker(
    cls: type[BaseThinker],
    queues: Queues,
    options: BaseModel | None,
    run_dir: Path,
    registry: Any = None,
    context: CampaignContext | None = None,
) -> BaseThinker:
    """Construct the thinker with what its constructor takes of orch's facts.

    ``options``, ``run_dir``, ``registry`` and ``context`` are passed where its constructor
    takes them; :attr:`BaseThinker.context` is set in any case.
    """
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if options is not None:
        kwargs["options"] = options
    if "run_dir" in params:
        kwargs["run_dir"] = run_dir
    if registry is not None and "registry" in params:
        kwargs["registry"] = registry
    if context is not None and "context" in params:
        kwargs["context"] = context
    thinker = cls(queues, **kwargs)
    if context is not None:
        thinker.context = context
    return thinker


def control_handler(session: Session, halt: threading.Event, halted_by: list[str]) -> Any:
    """The handler of a campaign's control socket: acts on the dispatcher, journals it."""
    dispatcher, journal = session.dispatcher, session.journal

    def handle(request: dict[str, Any], user: str) -> Reply:
        action = str(request["action"])
        if action == "ping":
            return Reply(True, "running")
        if action == "cancel":
            tasks = [str(t) for t in request.get("tasks") or []]
            method = request.get("method")
            if method is not None and method not in {m.name for m in dispatcher.methods}:
                known = ", ".join(m.name for m in dispatcher.methods)
                return Reply(False, f"--method {method}: no such method; methods: {known}")
            if not tasks and method is None:
                return Reply(False, "cancel: give task ids or --method NAME")
            found = dispatcher.cancel(tasks, method=method)
            cancelled = sum(1 for how in found.values() if how.startswith("cancelled"))
            target = f"method {method}" if method is not None else " ".join(tasks)
            message = f"{cancelled} task(s) cancelled"
            if not cancelled:
                message = (
                    "no task cancelled: "
                    + "; ".join(f"{task_id}: {how}" for task_id, how in found.items())
                    if found
                    else f"no task cancelled: method {method} has no unfinished task"
                )
            reply = Reply(cancelled > 0, message, {"tasks": found if cancelled else {}})
        elif action in ("drain", "undrain"):
            target = str(request.get("site"))
            try:
                message = dispatcher.drain(target, drained=action == "drain")
            except KeyError as exc:
                return Reply(False, f"--site {target}: {exc.args[0]}")
            reply = Reply(True, message)
        else:  # halt
            target = ""
            if halt.is_set():
                return Reply(True, "already halting")
            halted_by.append(user)
            halt.set()
            message = "halting: running tasks get the grace period, then the run stops"
            reply = Reply(True, message)
        if journal is not None:
            journal.control(action, target, user, message)
        return reply

    return handle


@contextlib.contextmanager
def model_registry(
    cls: type, run_dir: Path, tracking_uri: str | None
) -> Iterator[Callable[[], Any]]:
    """Start the campaign's tracking server in the background; yield a getter for its registry.

    Nothing happens for campaigns without ``registry_model``. The embedded server (sqlite and
    artifacts under ``run_dir/mlflow``) starts while the sites start and is stopped on exit.
    """
    model_name = getattr(cls, "registry_model", None)
    if not model_name:
        yield lambda: None
        return
    from orchestrator.registry import ModelRegistry, TrackingServer

    server = TrackingServer.external(tracking_uri) if tracking_uri else TrackingServer(run_dir)
    pool = ThreadPoolExecutor(max_workers=1)
    starting = pool.submit(server.start)
    try:
        yield lambda: ModelRegistry(starting.result(), model_name)
    finally:
        pool.shutdown(wait=True)
        server.stop()


def run_campaign(
    cls: type[BaseThinker],
    site_configs: Sequence[SiteConfig],
    run_dir: Path,
    options: BaseModel | None = None,
    extra_paths: list[str] | None = None,
    on_session: Callable[[Session], contextlib.AbstractContextManager[Any]] | None = None,
    tracking_uri: str | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    grace: float = 30.0,
    notify: Callable[[str], None] | None = None,
    sites_dir: Path | None = None,
    site_wait: float = SITE_WAIT,
    faults: FaultSpec | None = None,
) -> RunSummary:
    """Run a campaign class to completion on the given sites.

    Args:
        cls: The thinker class (see module docstring for what it declares).
        site_configs: Sites to use (only those of kinds the methods need are started).
        run_dir: Campaign directory (results, site working directories, logs).
        options: The campaign's options, if it has an ``Options`` model.
        extra_paths: Folders workers need on PYTHONPATH (from ``load_campaign``).
        on_session: Optional context manager factory wrapped around the thinker's run,
            e.g. a live progress display.
        tracking_uri: MLflow tracking URI for campaigns with ``registry_model`` (default: an
            embedded server in ``run_dir/mlflow``).
        resume: Continue an earlier run of ``run_dir``: calls that match results in its
            journal get them back instead of running again.
        meta: Run facts to keep in the journal (campaign, options, sites) for ``--resume``.
        grace: On Ctrl-C/SIGTERM, seconds to wait for running tasks before interrupting
            them (a second Ctrl-C stops at once).
        notify: Called with one-line messages for the user (stopping, waiting).
        sites_dir: The sites directory, whose ``deploy/`` folder holds the deployment
            records the pre-flight checks containerized sites against.
        site_wait: Seconds tasks wait for a site of their kind when none is up.
        faults: Faults to inject at local sites while the campaign runs (chaos testing).

    Returns:
        Per-site counts, agent failures and the campaign's summary line.

    Raises:
        KeyboardInterrupt: the run was stopped; tasks still running were journaled as
            interrupted, so ``--resume`` runs them again.
    """
    methods = campaign_methods(cls)
    topics = campaign_topics(cls, methods)
    started = time.monotonic()
    run_dir.mkdir(parents=True, exist_ok=True)
    journal = Journal(run_dir, resume=resume)
    if meta:
        journal.set_meta(meta)
    with (
        lifeline(run_dir),  # every process started below ends with orch, kill -9 included
        model_registry(cls, run_dir, tracking_uri) as get_registry,
        open_session(
            site_configs,
            methods,
            topics,
            run_dir,
            extra_paths,
            journal,
            sites_dir,
            notify,
            site_wait=site_wait,
            faults=faults,
        ) as session,
    ):
        registry = get_registry()
        context = CampaignContext(run_dir, options, session.dispatcher, journal, registry)
        objective = getattr(cls, "objective", None)
        journal.set_meta(
            {
                "started": time.time(),
                "site_info": site_facts(session.sites),
                "objective": (
                    {"name": objective.name, "goal": objective.goal}
                    if isinstance(objective, Objective)
                    else None
                ),
            }
        )
        live = LiveRecorder(session.dispatcher, journal, context.progress).start()
        halt = threading.Event()
        halted_by: list[str] = []
        control = ControlServer(
            run_dir,
            control_handler(session, halt, halted_by),
            on_refused=lambda user, action: journal.control(
                action, "", user, "refused: not the run's owner"
            ),
        )
        state = "failed"
        thinker: BaseThinker | None = None
        try:
            control.start()
            try:
                thinker = build_thinker(cls, session.queues, options, run_dir, registry, context)
            except Exception as exc:
                logger.exception("constructing %s failed", cls.__name__)
                raise CampaignError(
                    f"campaign {cls.__name__}: its constructor raised {type(exc).__name__}: {exc}"
                ) from exc
            display = on_session(session) if on_session else contextlib.nullcontext()
            with display:
                try:
                    _run_interruptibly(thinker, halt, halted_by)
                except KeyboardInterrupt as exc:
                    state = "halted" if isinstance(exc, Halted) else "interrupted"
                    thinker.done.set()
                    _stop_gracefully(session.dispatcher, grace, _tell(notify))
                    raise
            state = "ended"
        finally:
            control.stop()
            live.stop(state)
            if state == "ended" and getattr(thinker, "report_at_end", False):
                _write_report(journal, run_dir)
        per_site = {
            name: {"done": s.done, "failed": s.failed, "moved": s.moved, "in_flight": s.in_flight}
            for name, s in session.dispatcher.stats.items()
        }
        summary_fn = getattr(thinker, "summary", None)
        summary = ""
        if callable(summary_fn):
            try:
                summary = str(summary_fn())
            except Exception as exc:  # noqa: BLE001 - a broken summary must not lose results
                summary = f"(summary failed: {type(exc).__name__}: {exc})"
    return RunSummary(
        run_dir=run_dir,
        seconds=time.monotonic() - started,
        per_site=per_site,
        agent_errors=list(getattr(thinker, "agent_errors", [])),
        summary=summary,
        replayed=journal.replayed,
    )


def _write_report(journal: Journal, run_dir: Path) -> None:
    """Write ``RUN_DIR/report.html`` once the run ended (never raises: the results count)."""
    from orchestrator.observe.report import write_report

    try:
        journal.flush()
        path = write_report(run_dir)
        logger.info("report written to %s", path)
    except Exception:  # noqa: BLE001 - a report that fails must not fail the campaign
        logger.exception("the run's report could not be written")


def _tell(notify: Callable[[str], None] | None) -> Callable[[str], None]:
    """Log a user-facing line, and show it through ``notify`` too when given."""

    def tell(line: str) -> None:
        logger.warning("%s", line)
        if notify is not None:
            notify(line)

    return tell


def _stop_gracefully(dispatcher: Dispatcher, grace: float, notify: Callable[[str], None]) -> None:
    """Stop submitting, wait up to ``grace`` s for running tasks, interrupt the rest."""
    dispatcher.stop_accepting()
    running = dispatcher.in_flight()
    try:
        if running and grace > 0:
            notify(
                f"stopping: waiting up to {grace:g} s for {running} running task(s) "
                "(Ctrl-C again to stop now)"
            )
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and not dispatcher.wait_idle(0.2):
                pass
    except KeyboardInterrupt:
        notify("stopping now")
    finally:
        stopped = dispatcher.interrupt()
        if stopped:
            notify(f"{len(stopped)} task(s) interrupted; `orch launch --resume` runs them again")


def _run_interruptibly(thinker: BaseThinker, halt: threading.Event, halted_by: list[str]) -> None:
    """Run the thinker in a thread so the main thread stays responsive to Ctrl-C and halt.

    Raises:
        Halted: ``halt`` was set (``orch halt``; ``halted_by`` names who asked).
    """
    runner = threading.Thread(target=thinker.run, name="orch-thinker", daemon=True)
    runner.start()
    while runner.is_alive():
        if halt.wait(0.2):
            raise Halted(halted_by[0] if halted_by else "?")
