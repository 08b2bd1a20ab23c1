"""``orch deploy``: put each site's image in place, write endpoint files, prove it with a probe.

For one site (:func:`deploy_site`):

1. **Image.** A local site's image is built from its recipe or pulled here, unless it is
   already there. A Globus site gets a *deployment task* (:func:`orchestrator.apps.images.
   ensure_image`) through Globus Compute, sent with ``user_endpoint_config`` that switches the
   endpoint's container wrapper off, so the task runs ``apptainer`` on the site's host.
2. **Endpoint files** (Globus sites): ``config.yaml``, ``user_config_template.yaml.j2`` and
   ``user_config_schema.json`` for the endpoint's owner, checked with the endpoint package's
   own loaders.
3. **Probe.** A task sent to the site runs inside the image there and reports the versions of
   Python, orch, globus-compute-endpoint, parsl, dill, torch and each code; any difference from
   orch's own is a problem naming both versions and the fix.
4. **Record.** ``<sites-dir>/deploy/<site>/record.json`` keeps the image, its digest and the
   probe's report; ``orch launch`` checks against it before the thinker starts.

This module sits above ``sites/`` (it starts sites to send them tasks), like the runner.
"""

from __future__ import annotations

import json
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.apps.images import ensure_image, fingerprint, image_digest
from orchestrator.apps.probe import PACKAGES, own_versions, probe
from orchestrator.config.containers import is_uri
from orchestrator.config.sites import SiteConfig
from orchestrator.containers.commands import build_argv, pull_argv
from orchestrator.containers.plan import plan_for
from orchestrator.containers.recipes import pack_sources
from orchestrator.exceptions import ConfigError
from orchestrator.sites import make_site
from orchestrator.sites.base import Site

DEPLOY_DIR = "deploy"
"""Sub-folder of the sites directory that holds the deployment records and endpoint files."""

RECORD_FILE = "record.json"
PROBE_TIMEOUT_S = 600.0
IMAGE_TIMEOUT_S = 4 * 3600.0


def site_folder(sites_dir: Path, name: str) -> Path:
    """``<sites-dir>/deploy/<name>``: the site's record and endpoint files."""
    return Path(sites_dir) / DEPLOY_DIR / name


def load_record(sites_dir: Path, name: str) -> dict[str, Any] | None:
    """The site's deployment record, or ``None`` when it was never deployed."""
    path = site_folder(sites_dir, name) / RECORD_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path}: unreadable deployment record ({exc}); run `orch deploy` again"
        ) from None
    return data if isinstance(data, dict) else None


def _base(version: str | None) -> str | None:
    return version.split("+")[0] if version else version


def version_problems(site: str, report: dict[str, Any]) -> list[str]:
    """One line per version in the image that differs from orch's own (and the fix)."""
    here = own_versions()
    problems: list[str] = []
    fix = "rebuild the image from containers/pins.txt (`orch deploy --force`)"
    ours, theirs = here["python"].rsplit(".", 1)[0], str(report.get("python", "?"))
    if not theirs.startswith(ours + "."):
        problems.append(
            f"site {site}: Python {theirs} in the image, {here['python']} here (functions "
            f"travel as bytecode: the minor versions must match); {fix} on Python {ours}"
        )
    if report.get("orch") != here["orch"]:
        problems.append(
            f"site {site}: orch {report.get('orch')} in the image, {here['orch']} here; {fix}"
        )
    packages = report.get("packages") or {}
    for name in PACKAGES:
        want, have = here["packages"].get(name), packages.get(name)
        if want and have != want:
            problems.append(f"site {site}: {name} {have} in the image, {want} here; {fix}")
    torch_here, torch_there = here.get("torch"), report.get("torch")
    if torch_here and torch_there and _base(torch_here["version"]) != _base(torch_there["version"]):
        problems.append(
            f"site {site}: torch {torch_there['version']} in the image, {torch_here['version']} "
            f"here; {fix}"
        )
    return problems


@dataclass
class Deployment:
    """What ``orch deploy`` did for one site.

    Attributes:
        site: The site's name.
        image: The image's path (or URI) on the site.
        action: ``found``, ``built`` or ``pulled``.
        digest: The image's ``sha256:`` digest, computed where it lies.
        report: The probe's report from inside the image.
        problems: One line per failed check; empty when the site is ready.
        endpoint_files: Files written for the endpoint's owner (Globus sites).
        seconds: Time spent on the site.
    """

    site: str
    image: str
    action: str = ""
    digest: str | None = None
    fingerprint: str | None = None
    report: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    endpoint_files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.problems and self.digest is not None


def _wait(site: Site, future: Future[Any], timeout: float, what: str) -> Any:
    try:
        future.result(timeout=timeout)
    except TimeoutError:
        raise RuntimeError(f"{what}: no answer within {timeout:g} s") from None
    except Exception:  # noqa: BLE001 - decoded below into the site's failure message
        pass
    outcome = site.outcome(future)
    if not outcome.ok:
        failure = outcome.failure or {}
        raise RuntimeError(f"{what} failed: {failure.get('message', 'unknown error')}")
    return outcome.value


def _image_step(config: SiteConfig, scratch: Path) -> dict[str, Any]:
    container = config.container
    assert container is not None
    image = container.image_path(config.name)
    build = (
        build_argv(container.runtime, image, f"containers/{container.recipe}")
        if container.recipe
        else None
    )
    pull = pull_argv(container.runtime, image, container.image) if is_uri(container.image) else None
    sources = pack_sources(container.recipe) if container.recipe else None
    kwargs: dict[str, Any] = {"build": build, "pull": pull, "sources": sources}
    if config.backend == "local":
        return ensure_image(container.runtime, image, **kwargs, timeout=IMAGE_TIMEOUT_S)
    from orchestrator.containers.endpoint import deploy_user_config

    outside = config.model_copy(update={"user_endpoint_config": deploy_user_config(config)})
    site = make_site(outside, scratch)
    site.start()
    try:
        future = site.submit(ensure_image, (container.runtime, image), kwargs)
        return dict(_wait(site, future, IMAGE_TIMEOUT_S, "the deployment task"))
    finally:
        site.shutdown()


def _probe_step(config: SiteConfig, scratch: Path) -> dict[str, Any]:
    site = make_site(config, scratch)
    site.start()
    try:
        plan = plan_for(config, None, None)
        prefix = plan.exec_prefix() if plan is not None and plan.mode == "exec" else None
        future = site.submit(probe, (prefix,), {})
        return dict(_wait(site, future, PROBE_TIMEOUT_S, "the probe"))
    finally:
        site.shutdown()


def deploy_site(
    config: SiteConfig,
    sites_dir: Path,
    *,
    on_step: Callable[[str], None] | None = None,
) -> Deployment:
    """Deploy one site (see the module docstring); never raises for a site-side failure.

    Args:
        config: The site; it must have a ``container:`` section.
        sites_dir: The sites directory (the record goes to ``deploy/<name>/`` under it).
        on_step: Called with a short description of each step as it starts.

    Raises:
        ConfigError: the site has no ``container:`` section.
    """
    container = config.container
    if container is None:
        raise ConfigError(
            f"site {config.name}: has no `container:` section, so there is nothing to deploy; "
            "add `container: {image: ..., recipe: sim.def}` to its file or leave it out of --site"
        )
    step = on_step or (lambda _text: None)
    started = time.monotonic()
    folder = site_folder(sites_dir, config.name)
    folder.mkdir(parents=True, exist_ok=True)
    result = Deployment(site=config.name, image=container.image)
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=folder))
    try:
        step("building" if container.recipe else "pulling" if is_uri(container.image) else "image")
        placed = _image_step(config, scratch)
        result.action = str(placed["action"])
        result.digest = str(placed["digest"])
        result.fingerprint = str(placed.get("fingerprint") or "") or None
        if config.backend == "globus":
            step("endpoint files")
            from orchestrator.containers.endpoint import check_endpoint_files, write_endpoint_files

            written = write_endpoint_files(config, folder / "endpoint")
            check_endpoint_files(folder / "endpoint")
            result.endpoint_files = [str(p) for p in written]
        step("probe")
        result.report = _probe_step(config, scratch)
        result.problems = version_problems(config.name, result.report)
        if not (result.report.get("image") or {}).get("container"):
            result.problems.append(
                f"site {config.name}: the probe did not run in a container (no "
                "APPTAINER_CONTAINER); check the site's container settings"
            )
    except ConfigError as exc:
        result.problems.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - a failed site is reported, the others go on
        message = " ".join(str(exc).split())[:600]
        result.problems.append(f"site {config.name}: {message}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.seconds = time.monotonic() - started
    if result.ok:
        save_record(folder, config, result)
    return result


def save_record(folder: Path, config: SiteConfig, result: Deployment) -> Path:
    """Write the site's deployment record (what ``orch launch`` checks against)."""
    container = config.container
    assert container is not None
    record = {
        "site": config.name,
        "backend": config.backend,
        "image": container.image,
        "image_path": container.image_path(config.name),
        "runtime": container.runtime,
        "mode": container.mode,
        "recipe": container.recipe,
        "digest": result.digest,
        "fingerprint": result.fingerprint,
        "report": result.report,
        "deployed_at": time.time(),
        "deployed_by": {"orch": __version__, "host": platform.node()},
    }
    path = folder / RECORD_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def local_image_state(record: dict[str, Any]) -> tuple[str | None, str | None]:
    """For an image on this machine: (current fingerprint, current digest or None if unchanged).

    The digest is only recomputed when the fingerprint differs from the record's.
    """
    path = str(Path(record["image_path"]).expanduser())
    current = fingerprint(path)
    if current == record.get("fingerprint"):
        return current, None
    return current, image_digest(path)


def as_dict(result: Deployment) -> dict[str, Any]:
    """The deployment as plain data (for ``--json`` output)."""
    return asdict(result)
