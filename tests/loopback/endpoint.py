"""A real Globus Compute manager endpoint on this machine, pointed at the loopback service.

:class:`LoopbackEndpoint` installs the three files ``orch deploy`` writes for a site
(:func:`orchestrator.containers.endpoint.write_endpoint_files`: ``config.yaml``,
``user_config_template.yaml.j2``, ``user_config_schema.json``) plus a
``user_environment.yaml`` with the public ``globus-compute-endpoint configure NAME
--core-config ... --template-config ... --schema-config ... --user-env-config ...`` (the way
the generated ``config.yaml`` says to install them), then runs ``globus-compute-endpoint start
NAME --endpoint-uuid ID`` from this venv. The manager registers with the loopback service and
waits for start commands; its user endpoint (a ``GlobusComputeEngine`` rendered from orch's
template, with whatever provider the site's ``user_endpoint_config`` names, e.g. the default
``LocalProvider``) starts on the first submission.

How the endpoint finds the service (globus-compute-endpoint 4.19):

* ``GLOBUS_SDK_ENVIRONMENT=local``: the Compute URL becomes ``http://localhost:5000`` (fixed
  by the SDK; see the port lock in :mod:`loopback.service`);
* ``GLOBUS_SDK_SERVICE_URL_AUTH=<service>/auth/``: Globus Auth (mandatory with ``local``);
* ``GLOBUS_COMPUTE_CLIENT_ID``/``GLOBUS_COMPUTE_CLIENT_SECRET``: a client identity, so the
  endpoint logs in by client credentials instead of interactively;
* ``GLOBUS_COMPUTE_USER_DIR``: a scratch compute dir (endpoint dirs, token storage).

As root, ``configure`` is told ``--multi-user false`` (no identity mapping: the manager runs
user endpoints as itself for the service's one identity) and ``--contact-email`` (a root
manager refuses to start without an ``email``). A root manager clears its user endpoints'
environment and then applies ``user_environment.yaml``: that file gives them this venv's
``bin`` first on ``PATH``, the compute dir, ``PYTHONPATH`` (so workers import test modules)
and a tag variable. Every process started under this endpoint carries the tag, which is how
:meth:`LoopbackEndpoint.stop` proves (and, if needed, forces) that none is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from orchestrator.config.sites import SiteConfig
from orchestrator.containers.endpoint import write_endpoint_files

from .service import LoopbackService

VENV_BIN = Path(sys.prefix) / "bin"
CLI = VENV_BIN / "globus-compute-endpoint"
TAG_VAR = "ORCH_LOOPBACK_TAG"
"""Environment variable that marks every process of one loopback endpoint."""
CLIENT_ID = "5d3c1e0a-7b2f-4c9e-8a61-3f0b9d2e4c17"
CLIENT_SECRET = "loopback-client-secret"


def client_env(service: LoopbackService, compute_dir: Path) -> dict[str, str]:
    """What a process needs to reach ``service`` as Globus Compute (endpoint side)."""
    return {
        "GLOBUS_SDK_ENVIRONMENT": "local",
        "GLOBUS_SDK_SERVICE_URL_AUTH": service.auth_url,
        "GLOBUS_COMPUTE_CLIENT_ID": CLIENT_ID,
        "GLOBUS_COMPUTE_CLIENT_SECRET": CLIENT_SECRET,
        "GLOBUS_COMPUTE_USER_DIR": str(compute_dir),
        "GLOBUS_SDK_HTTP_TIMEOUT": "30",
    }


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``TAG_VAR=tag``."""
    found = []
    for proc in psutil.process_iter(["status"]):
        if proc.pid == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            if proc.environ().get(TAG_VAR) == tag:
                found.append(proc)
        except psutil.Error:
            continue
    return found


class EndpointError(RuntimeError):
    """The endpoint did not configure or start (the message carries its log tail)."""


class LoopbackEndpoint:
    """One manager endpoint; :meth:`start` it, :meth:`stop` it (always).

    Args:
        site: The ``backend: globus`` site whose endpoint files are installed.
        service: The loopback service (started).
        workdir: Scratch folder (the compute dir and the files go under it).
        name: Endpoint name (a folder in the compute dir).
        python_paths: Folders the workers need on ``PYTHONPATH``.
        extra_env: More variables for the user endpoints and their workers.
        heartbeat_period: The manager's ``heartbeat_period`` (seconds, at least 5), added to
            the ``config.yaml`` orch wrote; ``None`` keeps the endpoint's default (30 s). The
            service reports an endpoint offline three periods (plus 5 s) after its last one.
    """

    def __init__(
        self,
        site: SiteConfig,
        service: LoopbackService,
        workdir: Path,
        name: str = "orch-loopback",
        python_paths: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
        heartbeat_period: float | None = None,
    ):
        self.site = site
        self.service = service
        self.workdir = workdir
        self.name = name
        self.python_paths = list(python_paths)
        self.extra_env = dict(extra_env or {})
        self.heartbeat_period = heartbeat_period
        self.endpoint_id = str(site.endpoint_id or uuid.uuid4())
        self.compute_dir = workdir / "compute"
        self.files_dir = workdir / "orch-endpoint-files"
        self.tag = uuid.uuid4().hex
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None
        """From ``start`` (after ``configure``) to the first heartbeat the service saw."""
        self.configure_seconds: float | None = None
        self.forced: list[str] = []
        """Command lines of processes :meth:`stop` had to kill itself (should stay empty)."""
        self._console = workdir / "endpoint-console.log"

    @property
    def endpoint_dir(self) -> Path:
        return self.compute_dir / self.name

    def env(self) -> dict[str, str]:
        """The manager's environment: this one minus Globus settings, plus the loopback's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GLOBUS_")}
        env.update(client_env(self.service, self.compute_dir))
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        env[TAG_VAR] = self.tag
        env.pop("PYTHONPATH", None)
        return env

    def user_environment(self) -> dict[str, str]:
        """``user_environment.yaml``: what the user endpoints and workers get."""
        paths = [*self.python_paths]
        return {
            "PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin",
            "GLOBUS_COMPUTE_USER_DIR": str(self.compute_dir),
            "PYTHONPATH": os.pathsep.join(paths),
            TAG_VAR: self.tag,
            **self.extra_env,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LoopbackEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> LoopbackEndpoint:
        """Configure and start the manager; return once the service sees it heartbeat.

        Raises:
            EndpointError: ``configure`` failed, the manager exited, or it sent no heartbeat
                within ``timeout`` seconds.
        """
        try:
            if not (self.endpoint_dir / "config.yaml").exists():
                # A restart (after :meth:`kill`) reuses the configured endpoint.
                began = time.monotonic()
                self._configure()
                self.configure_seconds = time.monotonic() - began
            began = time.monotonic()
            console = open(self._console, "ab")  # noqa: SIM115 - the child keeps it
            try:
                self.process = subprocess.Popen(
                    [str(CLI), "start", self.name, "--endpoint-uuid", self.endpoint_id],
                    env=self.env(),
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    # Own session: the manager signals its whole process group on shutdown.
                    start_new_session=True,
                )
            finally:
                console.close()
            deadline = time.monotonic() + timeout
            while not self.service.wait_online(self.endpoint_id, 0.5):
                if self.process.poll() is not None:
                    raise EndpointError(
                        f"globus-compute-endpoint start exited with {self.process.returncode}: "
                        f"{self.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise EndpointError(
                        f"endpoint {self.name} sent no heartbeat within {timeout:g} s: "
                        f"{self.log_tail()}"
                    )
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - began
        return self

    def _configure(self) -> None:
        write_endpoint_files(self.site, self.files_dir)
        if self.heartbeat_period is not None:
            core = self.files_dir / "config.yaml"
            text = core.read_text()
            core.write_text(text.rstrip("\n") + f"\nheartbeat_period: {self.heartbeat_period:g}\n")
        user_env = self.files_dir / "user_environment.yaml"
        # JSON is YAML: one "KEY": "value" mapping.
        user_env.write_text(json.dumps(self.user_environment(), indent=2) + "\n")
        self.compute_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(CLI),
            "configure",
            self.name,
            "--multi-user",
            "false",
            "--contact-email",
            "loopback@localhost",
            "--core-config",
            str(self.files_dir / "config.yaml"),
            "--template-config",
            str(self.files_dir / "user_config_template.yaml.j2"),
            "--schema-config",
            str(self.files_dir / "user_config_schema.json"),
            "--user-env-config",
            str(user_env),
        ]
        done = subprocess.run(
            command,
            env=self.env(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise EndpointError(
                f"globus-compute-endpoint configure failed ({done.returncode}): "
                f"{(done.stdout + done.stderr)[-2000:]}"
            )

    def kill(self) -> list[psutil.Process]:
        """Crash the endpoint: SIGKILL the manager's process group, without ``stop``.

        Returns:
            The endpoint's processes alive just before (manager, user endpoints, workers);
            :meth:`wait_gone` waits for the ones outside the manager's group to notice.
        """
        process, self.process = self.process, None
        if process is None:
            return []
        alive = tagged_processes(self.tag)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return alive

    def wait_gone(self, processes: Sequence[psutil.Process], timeout: float) -> list[str]:
        """Wait up to ``timeout`` s for ``processes`` to exit; kill and list the rest.

        Returns:
            Command lines of the processes that had to be killed (also added to
            :attr:`forced`).
        """
        _, alive = psutil.wait_procs(list(processes), timeout=timeout)
        left = []
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                left.append(" ".join(proc.cmdline())[:160])
                proc.kill()
        psutil.wait_procs(alive, timeout=5)
        self.forced.extend(left)
        return left

    def stop(self) -> None:
        """``globus-compute-endpoint stop NAME``; then make sure nothing of ours is left.

        Processes still alive afterwards (there should be none) are killed and listed in
        :attr:`forced`.
        """
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run(
                    [str(CLI), "stop", self.name],
                    env=self.env(),
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=90,
                )
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.forced.append(f"manager pid {process.pid} ignored `stop`")
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # The user endpoints, interchanges and worker pools it ran must be gone too.
        deadline = time.monotonic() + 30
        left = tagged_processes(self.tag)
        while left and time.monotonic() < deadline:
            _, alive = psutil.wait_procs(left, timeout=0.5)
            left = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        for proc in left:
            with contextlib.suppress(psutil.Error):
                self.forced.append(" ".join(proc.cmdline())[:160])
                proc.kill()
        psutil.wait_procs(left, timeout=5)

    # -- diagnostics -------------------------------------------------------------------------

    def log_tail(self, limit: int = 3000) -> str:
        """The end of the manager's console, its ``endpoint.log`` and user endpoint logs."""
        chunks = []
        for path in [
            self._console,
            self.endpoint_dir / "endpoint.log",
            *sorted(self.compute_dir.glob("uep.*/endpoint.log")),
        ]:
            with contextlib.suppress(OSError):
                chunks.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-limit:]}")
        return "\n".join(chunks) or "(no logs)"
