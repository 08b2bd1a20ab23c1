"""Fixtures and helpers for tests that run Apptainer images (the bubblewrap runner here).

Use from a test module (``tests/`` is on ``sys.path`` when pytest runs)::

    pytest_plugins = ["support.images"]  # the fixtures below, by name

    pytestmark = pytest.mark.container

    def test_xtb_inside(sim_image, apptainer_path):
        subprocess.run(["apptainer", "exec", str(sim_image), "xtb", "--version"], check=True)

``sim_image`` builds ``containers/sim.def`` once per session through the runner, whose cache
(``$ORCH_IMAGE_CACHE``, default ``~/.cache/orch/images``) makes that a cold build only once per
machine and per content of the recipe and its ``%files`` (``orchestrator/`` included).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPPORT_DIR = Path(__file__).resolve().parent
REPO = SUPPORT_DIR.parents[1]
CONTAINERS_DIR = REPO / "containers"
SIM_RECIPE = CONTAINERS_DIR / "sim.def"
BUILD_TIMEOUT_S = 3600.0
"""A cold build of sim.def (debootstrap, apt, pip) takes minutes; cached ones seconds."""


def runtime_bin_dir() -> Path:
    """The folder holding the ``apptainer`` and ``singularity`` stand-ins (put it first on PATH)."""
    return SUPPORT_DIR / "bin"


def runtime_skip_reason() -> str | None:
    """Why container tests cannot run here (``None`` when they can)."""
    if not sys.platform.startswith("linux"):
        return "container tests need Linux (bubblewrap)"
    bwrap = shutil.which("bwrap") or (
        "/usr/bin/bwrap" if os.path.exists("/usr/bin/bwrap") else None
    )
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed: apt-get install bubblewrap"
    if not (shutil.which("debootstrap") or os.path.exists("/usr/sbin/debootstrap")):
        return "debootstrap is not installed: apt-get install debootstrap"
    probe = subprocess.run(
        [bwrap, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"bubblewrap cannot create a sandbox here: {probe.stderr.strip()[:200]}"
    if os.geteuid() != 0:
        return "image builds (debootstrap, apt in %post) need root"
    return None


def skip_without_runtime() -> None:
    """``pytest.skip`` with the reason when the runner cannot work on this machine."""
    reason = runtime_skip_reason()
    if reason:
        pytest.skip(reason)


def runtime_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """``base`` (default ``os.environ``) with the runner first on PATH, plus ``extra``."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(runtime_bin_dir()), env.get("PATH", "/usr/bin:/bin")])
    env.update(extra)
    return env


def apptainer(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    timeout: float = 120.0,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``apptainer ARGS...`` (the runner), capturing text output."""
    return subprocess.run(
        ["apptainer", *args],
        env=runtime_env() if env is None else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


@dataclass(frozen=True)
class BuildResult:
    """One ``apptainer build --sandbox`` run."""

    image: Path
    """The sandbox directory built."""
    seconds: float
    """Wall-clock time of the build command."""
    cached: bool
    """Whether the runner served it from its cache (no debootstrap, %post or %test ran)."""
    log: str
    """The build's stderr (progress lines, %post and %test output)."""


def build_sandbox(
    recipe: Path,
    dest: Path,
    *,
    options: Sequence[str] = ("--fakeroot",),
    env: Mapping[str, str] | None = None,
    cwd: Path = REPO,
    timeout: float = BUILD_TIMEOUT_S,
) -> BuildResult:
    """``apptainer build OPTIONS --sandbox DEST RECIPE`` from ``cwd``; fails the test on error."""
    started = time.monotonic()
    proc = subprocess.run(
        ["apptainer", "build", *options, "--sandbox", str(dest), str(recipe)],
        env=runtime_env() if env is None else dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        pytest.fail(f"building {recipe} failed (exit {proc.returncode}):\n{tail}")
    cached = any(line.startswith("INFO:    cached:") for line in proc.stderr.splitlines())
    return BuildResult(image=dest, seconds=seconds, cached=cached, log=proc.stderr)


def real_runtime() -> str | None:
    """A real ``apptainer`` (or ``singularity``) on PATH, not this runner; ``None`` if none."""
    ours = os.path.abspath(runtime_bin_dir())
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if p and os.path.abspath(p) != ours
    )
    for name in ("apptainer", "singularity"):
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


REAL_RUNTIME_REASON = (
    "no apptainer or singularity binary on this machine (not packaged for Debian, not on "
    "PyPI); the bubblewrap runner of tests/support stands in for it"
)


@pytest.fixture(scope="session")
def apptainer_path() -> Iterator[Path]:
    """The folder whose ``apptainer`` the session's tests use, first on ``os.environ['PATH']``.

    A real ``apptainer`` on PATH is used as it is (set ``ORCH_TEST_BWRAP_RUNNER=1`` to use
    the runner anyway); otherwise the runner of ``tests/support/bin``, which skips when
    bubblewrap or debootstrap are missing.
    """
    real = real_runtime()
    if real is not None and os.environ.get("ORCH_TEST_BWRAP_RUNNER") != "1":
        yield Path(real).parent
        return
    skip_without_runtime()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", runtime_env()["PATH"])
        yield runtime_bin_dir()


def snapshot_sources(dest: Path) -> Path:
    """A copy of what the recipes read (``containers/``, ``orchestrator/``) under ``dest``.

    Building from the copy keeps a session's image (and its cache key) fixed while the working
    tree is being edited; the key equals that of a build from the repository root with the
    same content. Returns ``dest``: build with ``cwd=dest``.
    """
    litter = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("containers", "orchestrator"):
        shutil.copytree(REPO / name, dest / name, ignore=litter, dirs_exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def sim_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's snapshot of the recipes' sources (see :func:`snapshot_sources`)."""
    return snapshot_sources(tmp_path_factory.mktemp("image-sources"))


@pytest.fixture(scope="session")
def sim_image_build(
    tmp_path_factory: pytest.TempPathFactory, apptainer_path: Path, sim_sources: Path
) -> BuildResult:
    """``containers/sim.def`` built once for the session (the runner's cache makes it cheap)."""
    dest = tmp_path_factory.mktemp("images") / "sim"
    result = build_sandbox(sim_sources / "containers/sim.def", dest, cwd=sim_sources)
    how = "cache hit" if result.cached else "built"
    print(f"\n[images] containers/sim.def: {how} in {result.seconds:.1f} s -> {dest}")
    return result


@pytest.fixture(scope="session")
def sim_image(sim_image_build: BuildResult) -> Path:
    """The sandbox directory of ``containers/sim.def`` (read-only: the runner mounts it so)."""
    return sim_image_build.image
