"""The ``orch`` command line: launch campaigns and inspect sites."""

from __future__ import annotations

import datetime as dt
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
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
    err.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
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
    for column in ("name", "kind", "backend", "capacity", "max in flight", "where"):
        table.add_column(column)
    for c in configs:
        where = str(c.endpoint_id) if c.backend == "globus" else "this machine"
        table.add_row(c.name, c.kind, c.backend, str(c.capacity), str(c.in_flight_limit), where)
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


@app.command()
def launch(
    campaign: Annotated[
        str,
        typer.Argument(help="Built-in name (demo), package.module:Class or path/to/file.py:Class."),
    ],
    sites: SitesOption = Path("sites"),
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
) -> None:
    """Run a campaign across the sites in --sites."""
    from orchestrator.config.campaign import parse_options
    from orchestrator.runner import load_campaign, run_campaign

    configs = _load(sites)
    try:
        cls, extra_paths = load_campaign(campaign)
        options = parse_options(cls, option or [])
    except ConfigError as exc:
        fail(str(exc))
    run_dir = (run_dir or _default_run_dir(campaign)).resolve()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"--run-dir {run_dir}: cannot create it ({exc.strerror}); choose a writable path")
    _setup_logging(run_dir / "orch.log", verbose)
    signal.signal(signal.SIGTERM, _raise_interrupt)

    on_session = None
    if progress:
        from orchestrator.progress import live_progress

        on_session = live_progress
    try:
        summary = run_campaign(
            cls,
            configs,
            run_dir,
            options,
            extra_paths,
            on_session=on_session,
            tracking_uri=tracking_uri,
        )
    except ConfigError as exc:
        fail(str(exc))
    except RegistryUnavailableError as exc:  # e.g. a wrong --tracking-uri
        fail(str(exc))
    except KeyboardInterrupt:
        err.print(f"interrupted: sites stopped; results so far are in {run_dir / 'results'}")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback in the log
        logging.getLogger("orchestrator.cli").exception("campaign failed")
        fail(f"{exc} (traceback in {run_dir / 'orch.log'})", code=1)

    table = Table(title="tasks per site")
    for column in ("site", "done", "failed"):
        table.add_column(column)
    for name, counts in summary.per_site.items():
        table.add_row(name, str(counts["done"]), str(counts["failed"]))
    out.print(table)
    if summary.summary:
        out.print(summary.summary, highlight=False, soft_wrap=True)
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
    """Show a run's MLflow store (runs, metrics, model versions and aliases) in the MLflow UI."""
    from orchestrator.registry.errors import TrackingServerError
    from orchestrator.registry.server import TrackingServer, free_port, live_server_url, store_paths

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
        return
    if url:
        out.print(f"MLflow UI (already running): {url}/#/models", highlight=False, soft_wrap=True)
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
