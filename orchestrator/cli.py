"""The ``orch`` command line: launch campaigns and inspect sites."""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from orchestrator.config.sites import SiteConfig, load_sites
from orchestrator.exceptions import ConfigError, UnknownMethodError, UnknownTopicError
from orchestrator.registry.errors import RegistryUnavailableError

app = typer.Typer(
    name="orch",
    help="Run AI-steered campaigns across HPC sites (Globus Compute, Apptainer, MLflow).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
sites_app = typer.Typer(
    help="Inspect and check site descriptions (sites/*.yaml).", no_args_is_help=True
)
app.add_typer(sites_app, name="sites")

out = Console()
err = Console(stderr=True)

SitesOption = Annotated[
    Path, typer.Option("--sites", help="Directory of site YAML files.", show_default=True)
]


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one error line and exit (2: bad input)."""
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(directory: Path) -> list[SiteConfig]:
    try:
        return load_sites(directory)
    except ConfigError as exc:
        fail(str(exc))


@sites_app.command("list")
def sites_list(sites: SitesOption = Path("sites")) -> None:
    """List the sites described in a directory."""
    configs = _load(sites)
    table = Table(title=f"sites in {sites}")
    for column in ("name", "kind", "backend", "capacity", "max in flight", "where", "container"):
        table.add_column(column)
    for c in configs:
        where = str(c.endpoint_id) if c.backend == "globus" else "this machine"
        image = f"{c.container.mode}: {c.container.image}" if c.container else "-"
        table.add_row(
            c.name, c.kind, c.backend, str(c.capacity), str(c.in_flight_limit), where, image
        )
    out.print(table)


@sites_app.command("validate")
def sites_validate(sites: SitesOption = Path("sites")) -> None:
    """Check every site file in a directory; exit 2 naming the first problem."""
    configs = _load(sites)
    kinds = sorted({c.kind for c in configs})
    out.print(f"{len(configs)} site(s) valid in {sites}: kinds {', '.join(kinds)}")


def _default_run_dir(campaign: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in campaign.split(":")[-1])
    return Path("runs") / f"{safe}-{stamp}"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _check_writable(run_dir: Path, flag: str) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"{flag} {run_dir}: cannot create it ({exc.strerror}); choose a writable path")
    if not os.access(run_dir, os.W_OK | os.X_OK):
        fail(f"{flag} {run_dir}: not writable; fix its permissions or choose another directory")


def _resume_facts(resume: Path) -> dict[str, Any]:
    """The journaled facts of the run in ``resume`` (exit 2 when it is not a run directory)."""
    from orchestrator.dispatch.journal import JOURNAL_NAME, Journal, is_run_dir

    if not resume.is_dir():
        fail(f"--resume {resume}: no such directory; give the run directory of an earlier launch")
    if not is_run_dir(resume):
        fail(
            f"--resume {resume}: not a run directory ({JOURNAL_NAME} is missing); give the "
            "'run dir:' that `orch launch` printed"
        )
    _check_writable(resume, "--resume")
    try:
        journal = Journal(resume)
        facts = journal.meta()
        journal.close()
    except ConfigError as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. a corrupt database file
        fail(f"--resume {resume}: cannot read {JOURNAL_NAME} ({exc}); the run cannot be resumed")
    if "campaign" not in facts:
        fail(f"--resume {resume}: its journal names no campaign; start a new run instead")
    return facts


def _absolute_ref(campaign: str) -> str:
    """A ``file.py:Class`` reference with an absolute path, so a resume works from anywhere."""
    module_ref, sep, class_name = campaign.rpartition(":")
    if sep and module_ref.endswith(".py"):
        return f"{Path(module_ref).resolve()}:{class_name}"
    return campaign


@app.command()
def launch(
    campaign: Annotated[
        str | None,
        typer.Argument(
            help="Built-in name (molecular-design, demo, xtb-screen, ip-search), "
            "package.module:Class or path/to/file.py:Class [default: molecular-design, or the "
            "resumed run's].",
            show_default=False,
        ),
    ] = None,
    sites: Annotated[
        Path | None,
        typer.Option(
            "--sites", help="Directory of site YAML files [default: sites, or the resumed run's]."
        ),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option("--run-dir", help="Campaign directory [default: runs/NAME-TIME].")
    ] = None,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Campaign option as key=value (repeatable)."),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Live per-site progress table.")
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log to stderr too.")] = False,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            "--tracking-uri",
            envvar="ORCH_TRACKING_URI",
            help="MLflow tracking server for campaigns that version models "
            "[default: an embedded server in RUN_DIR/mlflow].",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the run in this directory: results in its journal are replayed, "
            "not recomputed; -o values override its options.",
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            min=0,
            help="On Ctrl-C/SIGTERM, seconds to wait for running tasks before stopping them.",
        ),
    ] = 30.0,
    site_wait: Annotated[
        float,
        typer.Option(
            "--site-wait",
            min=0,
            help="When every site a task can run on is down, seconds it waits for one to "
            "come back before it fails (reason no_site).",
        ),
    ] = 600.0,
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="Serve a live dashboard on 127.0.0.1 while the campaign runs (its URL, with "
            "the token that protects it, is printed).",
        ),
    ] = False,
    dashboard_port: Annotated[
        int | None,
        typer.Option("--dashboard-port", help="The dashboard's port [default: a free one]."),
    ] = None,
    inject_faults: Annotated[
        str | None,
        typer.Option(
            "--inject-faults",
            metavar="SPEC",
            help="Chaos testing: cause faults at local sites, e.g. "
            "kill_worker=0.01,kill_pool=0.002,kill_interchange=0.001,stall_worker=0.01,"
            "drop_result=0.01,seed=7 (rates per task sent).",
        ),
    ] = None,
) -> None:
    """Run a campaign across the sites in --sites (or continue one with --resume)."""
    from orchestrator.config.campaign import parse_options
    from orchestrator.config.faults import parse_faults
    from orchestrator.runner import load_campaign, run_campaign

    if tracking_uri is not None:  # before anything starts: a typo is bad input, not a crash
        from orchestrator.registry.server import validate_tracking_uri

        try:
            tracking_uri = validate_tracking_uri(tracking_uri)
        except ConfigError as exc:
            fail(str(exc))
    faults = None
    if inject_faults is not None:
        try:
            faults = parse_faults(inject_faults)
        except ConfigError as exc:
            fail(str(exc))
    facts: dict[str, Any] = {}
    if resume is not None:
        facts = _resume_facts(resume.resolve())
        if run_dir is not None and run_dir.resolve() != resume.resolve():
            fail("--run-dir: a resumed run continues in its own directory; leave --run-dir out")
        if campaign is not None and campaign != facts["campaign"]:
            fail(
                f"campaign {campaign!r}: the run in {resume} is of campaign "
                f"{facts['campaign']!r}; leave the campaign out to resume it"
            )
        campaign = facts["campaign"]
        run_dir = resume
        if sites is None and facts.get("sites"):
            sites = Path(facts["sites"])
    from orchestrator.campaigns import DEFAULT_CAMPAIGN

    campaign = campaign or DEFAULT_CAMPAIGN
    sites = sites or Path("sites")
    configs = _load(sites)
    try:
        cls, extra_paths = load_campaign(campaign)
        options = parse_options(cls, option or [], base=facts.get("options"))
    except ConfigError as exc:
        fail(str(exc))
    run_dir = (run_dir or _default_run_dir(campaign)).resolve()
    _check_writable(run_dir, "--run-dir")
    if resume is None and (run_dir / "journal.sqlite").exists():
        fail(
            f"--run-dir {run_dir}: holds an earlier run; continue it with --resume {run_dir} "
            "or choose another directory"
        )
    _setup_logging(run_dir / "orch.log", verbose)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    _dump_stacks_on_sigusr1(run_dir / "orch.log")

    on_session = None
    if progress:
        from orchestrator.progress import live_progress

        on_session = live_progress
    board = _start_dashboard(run_dir, dashboard_port) if dashboard else None
    try:
        summary = run_campaign(
            cls,
            configs,
            run_dir,
            options,
            extra_paths,
            on_session=on_session,
            tracking_uri=tracking_uri,
            resume=resume is not None,
            meta={
                "campaign": _absolute_ref(campaign),
                "options": options.model_dump(mode="json") if options is not None else {},
                "sites": str(sites.resolve()),
            },
            grace=grace,
            notify=lambda line: err.print(line, highlight=False, soft_wrap=True),
            sites_dir=sites.resolve(),
            site_wait=site_wait,
            faults=faults,
        )
    except ConfigError as exc:
        fail(str(exc))
    except RegistryUnavailableError as exc:  # e.g. a wrong --tracking-uri
        fail(str(exc))
    except KeyboardInterrupt as exc:
        from orchestrator.exceptions import Halted

        how = f"halted by {exc.user} (orch halt)" if isinstance(exc, Halted) else "interrupted"
        err.print(
            f"{how}: sites stopped; results so far are in {run_dir / 'results'}; "
            f"continue with: orch launch --resume {run_dir}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback in the log
        logging.getLogger("orchestrator.cli").exception("campaign failed")
        fail(f"{exc} (traceback in {run_dir / 'orch.log'})", code=1)
    finally:
        if board is not None:
            _stop_process(board)

    table = Table(title="tasks per site")
    for column in ("site", "done", "failed", "moved"):
        table.add_column(column)
    for name, counts in summary.per_site.items():
        table.add_row(name, str(counts["done"]), str(counts["failed"]), str(counts["moved"]))
    out.print(table)
    if summary.replayed:
        out.print(
            f"replayed from the journal (not run again): {summary.replayed} result(s)",
            highlight=False,
        )
    if summary.summary:
        out.print(summary.summary, highlight=False, soft_wrap=True, markup=False)
    out.print(f"run dir: {run_dir}  ({summary.seconds:.1f} s)", highlight=False, soft_wrap=True)
    if summary.agent_errors:
        for name, error in summary.agent_errors:
            if isinstance(error, UnknownMethodError | UnknownTopicError):
                fail(f"agent {name}: {error}")
            err.print(
                f"[bold red]agent {name} failed:[/bold red] {type(error).__name__}: {error} "
                f"(traceback in {run_dir / 'orch.log'})",
                highlight=False,
                soft_wrap=True,
            )
        raise typer.Exit(1)


@app.command()
def deploy(
    sites: SitesOption = Path("sites"),
    site: Annotated[
        list[str] | None,
        typer.Option(
            "--site",
            help="Deploy only this site (repeatable) [default: every site "
            "with a container: section].",
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the deployments as JSON instead of a table.")
    ] = False,
) -> None:
    """Put each site's image in place, prove it with a probe inside it, and record it."""
    import json

    from orchestrator.containers.deploy import as_dict, deploy_site, site_folder

    configs = _load(sites)
    by_name = {c.name: c for c in configs}
    if site:
        unknown = [name for name in site if name not in by_name]
        if unknown:
            fail(
                f"--site {unknown[0]}: no such site in {sites} (sites: {', '.join(by_name)}); "
                "check the name"
            )
        chosen = [by_name[name] for name in dict.fromkeys(site)]
        for config in chosen:
            if config.container is None:
                fail(
                    f"--site {config.name}: has no `container:` section in {sites}, so there "
                    "is nothing to deploy; add `container: {image: ..., recipe: sim.def}` or "
                    "leave it out of --site"
                )
    else:
        chosen = [c for c in configs if c.container is not None]
        if not chosen:
            fail(
                f"{sites}: no site has a `container:` section; add one (see the README's "
                "containers section) or give --site"
            )
    log_dir = site_folder(sites, "_").parent
    _check_writable(log_dir, "--sites")
    log_dir.mkdir(parents=True, exist_ok=True)
    _setup_logging(log_dir / "deploy.log", verbose=False)
    from concurrent.futures import ThreadPoolExecutor

    from rich.live import Live

    steps = {c.name: "waiting" for c in chosen}

    def render() -> Table:
        table = Table(title=f"orch deploy: {sites}")
        table.add_column("site")
        table.add_column("step")
        for name, text in steps.items():
            table.add_row(name, text)
        return table

    results = []
    with Live(render(), console=err, transient=True, auto_refresh=False) as live:

        def on(name: str) -> Any:
            def step(text: str) -> None:
                steps[name] = text
                live.update(render(), refresh=True)

            return step

        with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
            futures = [pool.submit(deploy_site, c, sites, on_step=on(c.name)) for c in chosen]
            for config, future in zip(chosen, futures, strict=True):
                result = future.result()
                steps[config.name] = "ready" if result.ok else "FAILED"
                live.update(render(), refresh=True)
                results.append(result)
    if json_out:
        out.print_json(json.dumps([as_dict(r) for r in results], default=str))
    else:
        table = Table(title="deployments")
        for column in ("site", "image", "digest", "versions", "verdict"):
            table.add_column(column, overflow="fold")
        for result in results:
            report = result.report or {}
            packages = report.get("packages") or {}
            parts = (
                [f"python {report.get('python')}", f"orch {report.get('orch')}"] if report else []
            )
            parts += [
                f"{name.replace('globus-compute-', 'gc-')} {packages[name]}"
                for name in ("globus-compute-endpoint", "parsl", "dill")
                if packages.get(name)
            ]
            torch = report.get("torch")
            if torch:
                parts.append(
                    f"torch {torch['version']} (cuda {'yes' if torch['cuda_available'] else 'no'})"
                )
            codes = report.get("codes") or {}
            if codes:
                parts.append("codes: " + ", ".join(c for c, v in codes.items() if v) or "none")
            verdict = (
                f"ready ({result.action}, {result.seconds:.1f} s)"
                if result.ok
                else "; ".join(result.problems)
            )
            table.add_row(
                result.site,
                result.image,
                (result.digest or "-")[:19],
                "\n".join(parts) or "-",
                escape(verdict),
            )
        out.print(table)
        for result in results:
            for path in result.endpoint_files:
                out.print(f"{result.site}: wrote {path}", highlight=False, soft_wrap=True)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


_STACK_DUMP_FILES: list[Any] = []  # kept open: faulthandler writes to them from a signal


def _dump_stacks_on_sigusr1(log_file: Path) -> None:
    """``kill -USR1 <orch pid>`` appends every thread's stack to the run's log (a hang)."""
    import faulthandler

    handle = open(log_file, "a")  # noqa: SIM115 - open for the process's life
    _STACK_DUMP_FILES.append(handle)
    faulthandler.register(signal.SIGUSR1, file=handle, all_threads=True)


def _start_dashboard(run_dir: Path, port: int | None) -> Any:
    """Start the dashboard server for ``run_dir`` as a child process; print its URL.

    It ends with orch (it watches orch's pid), kill -9 included; its log is
    ``RUN_DIR/dashboard.log``.
    """
    import subprocess
    import threading

    cmd = [sys.executable, "-m", "orchestrator.observe.dashboard", str(run_dir)]
    cmd += ["--parent-pid", str(os.getpid()), "--port", str(port or 0)]
    log = run_dir / "dashboard.log"
    with open(log, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log_file, text=True)
    first: list[str] = []

    def read_first() -> None:
        assert proc.stdout is not None
        first.append(proc.stdout.readline())

    reader = threading.Thread(target=read_first, daemon=True)
    reader.start()
    reader.join(30)
    line = first[0].strip() if first else ""
    if not line.startswith("dashboard: "):
        _stop_process(proc)
        problem = log.read_text().strip().splitlines()
        fail(f"--dashboard: the dashboard did not start ({problem[-1] if problem else log})")
    err.print(f"{line}  (the token in it protects the page)", highlight=False, soft_wrap=True)
    return proc


def _stop_process(proc: Any) -> None:
    """End a child process orch started (SIGTERM, then SIGKILL), and reap it."""
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _setup_logging(log_file: Path, verbose: bool) -> None:
    handlers: list[logging.Handler] = [logging.FileHandler(log_file)]
    if verbose:
        handlers.append(logging.StreamHandler(sys.stderr))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s",
        handlers=handlers,
        force=True,
    )
    # Parsl and the endpoint engine are chatty at INFO; keep their warnings only
    for noisy in ("parsl", "globus_compute_endpoint", "globus_compute_sdk"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def ui(
    run_dir: Annotated[
        Path, typer.Option("--run-dir", help="Campaign directory whose MLflow store to show.")
    ],
    port: Annotated[
        int | None, typer.Option("--port", help="Port to serve on [default: a free one].")
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve/--no-serve", help="Serve the store until Ctrl-C, or only say where it is."
        ),
    ] = True,
) -> None:
    """Show a run's MLflow store (runs, metrics, model versions and aliases) in the MLflow UI.

    The server asks for the run's user and password (HTTP basic auth): the user name and the
    file that holds the password (RUN_DIR/mlflow/credentials, owner-only) are printed, never
    the password itself.
    """
    from orchestrator.registry.errors import TrackingServerError
    from orchestrator.registry.server import (
        TrackingServer,
        free_port,
        live_server_url,
        read_credentials,
        store_paths,
    )

    def print_login() -> None:
        try:
            credentials = read_credentials(run_dir)
        except TrackingServerError as exc:
            fail(str(exc), code=1)
        if credentials is None:
            line = "login: a user and password are made when the store is first served"
        else:
            line = (
                f"login: user {credentials.username!r}, password in {credentials.path} "
                "(readable by you only)"
            )
        out.print(line, highlight=False, soft_wrap=True)

    paths = store_paths(run_dir)
    if not run_dir.is_dir():
        fail(f"--run-dir {run_dir}: no such directory; pass a campaign's run directory")
    if not paths["db"].is_file():
        fail(
            f"--run-dir {run_dir}: no MLflow store there ({paths['db']} is missing); "
            "pass the run directory of a campaign that logged models"
        )
    url = live_server_url(run_dir)
    if not serve:
        out.print(
            f"MLflow store: sqlite:///{paths['db']} (artifacts in {paths['artifacts']})",
            highlight=False,
            soft_wrap=True,
        )
        where = f"served at {url}/#/models" if url else f"serve it: orch ui --run-dir {run_dir}"
        out.print(where, highlight=False, soft_wrap=True)
        print_login()
        return
    if url:
        out.print(f"MLflow UI (already running): {url}/#/models", highlight=False, soft_wrap=True)
        print_login()
        return
    if port is not None:
        try:
            free = free_port(port=port) == port
        except OSError:
            free = False
        if not free:
            fail(f"--port {port}: the port is in use; choose another or leave --port out")
    server = TrackingServer(run_dir, port=port)
    serving = False
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        server.start()
        serving = True
        out.print(f"MLflow UI: {server.url}/#/models", highlight=False, soft_wrap=True)
        print_login()
        out.file.flush()
        err.print("serving until Ctrl-C", highlight=False)
        code = server.wait()
        fail(f"the MLflow server exited with code {code} (log {paths['log']})", code=1)
    except TrackingServerError as exc:
        fail(str(exc), code=1)
    except KeyboardInterrupt:
        server.stop()
        err.print("MLflow server stopped", highlight=False)
        raise typer.Exit(0 if serving else 130) from None
    finally:
        server.stop()


RunDirArgument = Annotated[
    Path, typer.Argument(help="The campaign's run directory (the 'run dir:' orch launch printed).")
]


@app.command()
def status(
    run_dir: RunDirArgument,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Refresh every second until the run ends.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the status as one JSON document.")
    ] = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve", help="Serve a live dashboard on 127.0.0.1 (status, plots, controls)."
        ),
    ] = False,
    port: Annotated[
        int | None, typer.Option("--port", help="Dashboard port [default: a free one].")
    ] = None,
) -> None:
    """Show a run's sites, methods, failures and control actions (while it runs or after).

    Reads the run's journal read-only: it never slows the campaign down.
    """
    from orchestrator.observe.status import read_status, render

    def load() -> dict[str, Any]:
        try:
            return read_status(run_dir.resolve())
        except ConfigError as exc:
            fail(str(exc))

    current = load()
    if serve:
        from orchestrator.observe.dashboard import serve_dashboard

        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            serve_dashboard(run_dir.resolve(), port=port, announce=_announce)
        except ConfigError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            err.print("dashboard stopped", highlight=False)
        return
    if json_out:
        import json

        print(json.dumps(current, default=str))
        return
    if not watch:
        # piped: wide enough for the tables (rich would fold them to 80 columns)
        shown = out if out.is_terminal else Console(width=140)
        shown.print(render(current))
        return
    from rich.live import Live

    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with Live(render(current), console=out, auto_refresh=False) as live:
            while current["state"] == "running":
                time.sleep(1.0)  # a refresh period, not a synchronization
                current = load()
                live.update(render(current), refresh=True)
    except KeyboardInterrupt:
        pass


def _announce(line: str) -> None:
    out.print(line, highlight=False, soft_wrap=True)
    out.file.flush()


def _control(run_dir: Path, action: str, **fields: Any) -> None:
    """Send a control request to the campaign running in ``run_dir``; print its answer."""
    from orchestrator.control import ControlError, request

    if not run_dir.is_dir():
        fail(f"{run_dir}: no such directory; give the 'run dir:' that orch launch printed")
    try:
        reply = request(run_dir.resolve(), action, **fields)
    except ControlError as exc:
        fail(str(exc))
    if not reply.ok:
        fail(reply.message)
    out.print(reply.message, highlight=False, soft_wrap=True)
    for task_id, how in (reply.details.get("tasks") or {}).items():
        out.print(f"  {task_id}: {how}", highlight=False, soft_wrap=True)


@app.command()
def cancel(
    run_dir: RunDirArgument,
    task_ids: Annotated[
        list[str] | None, typer.Argument(help="Ids of the tasks to cancel.", show_default=False)
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", help="Cancel every unfinished task of this method.")
    ] = None,
) -> None:
    """Cancel tasks of a running campaign: the thinker gets them back as failed (cancelled).

    A task waiting in orch is removed; one running on a local site is stopped (its processes
    end); on a Globus site its result is ignored and its slot freed.
    """
    if not task_ids and method is None:
        fail(
            "cancel: no task given; give task ids (from orch status or the results files) or "
            "--method NAME"
        )
    if task_ids and method is not None:
        fail("cancel: task ids and --method given together; give one or the other")
    _control(run_dir, "cancel", tasks=task_ids or [], method=method)


SiteNameOption = Annotated[str, typer.Option("--site", help="The site's name.")]


@app.command()
def drain(run_dir: RunDirArgument, site: SiteNameOption) -> None:
    """Send a site nothing new; its running tasks finish (undo with orch undrain)."""
    _control(run_dir, "drain", site=site)


@app.command()
def undrain(run_dir: RunDirArgument, site: SiteNameOption) -> None:
    """Let a drained site take tasks again."""
    _control(run_dir, "undrain", site=site)


@app.command()
def halt(run_dir: RunDirArgument) -> None:
    """Stop a running campaign gracefully, as Ctrl-C does; continue it with --resume."""
    _control(run_dir, "halt")


@app.command()
def report(
    run_dir: RunDirArgument,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write [default: RUN_DIR/report.html]."),
    ] = None,
    open_it: Annotated[
        bool, typer.Option("--open", help="Open the report in a web browser.")
    ] = False,
) -> None:
    """Write a self-contained HTML report of a run: timelines, utilization, latency, failures."""
    from orchestrator.observe.report import write_report

    try:
        path = write_report(run_dir.resolve(), output.resolve() if output else None)
    except ConfigError as exc:
        fail(str(exc))
    out.print(f"report: {path}", highlight=False, soft_wrap=True)
    if open_it:
        import webbrowser

        if not webbrowser.open(path.as_uri()):
            err.print(f"no web browser found here; open {path.as_uri()}", highlight=False)


def main() -> None:
    """Console-script entry point: usage errors become one ``error:`` line and exit 2."""
    # typer vendors click (0.2x); its usage errors are not click's own classes
    from typer._click.exceptions import NoArgsIsHelpError, UsageError

    try:
        code = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            out.print(exc.ctx.get_help(), highlight=False)
        sys.exit(2)
    except UsageError as exc:
        command = exc.ctx.command_path if exc.ctx is not None else "orch"
        message = " ".join(exc.format_message().split())
        try:
            fail(f"{message}; see `{command} --help`")
        except typer.Exit as exit_:
            sys.exit(exit_.exit_code)
    except typer.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
