"""Campaigns in an image, end to end: ``orch deploy`` then ``orch launch`` on a local site whose
worker pool (workers mode) or simulation codes (exec mode) run in the sandbox image built from
``containers/sim.def``.

Here ``apptainer`` is the bubblewrap runner of ``tests/support`` (first on PATH); where a real
``apptainer`` exists, ``ORCH_TEST_REAL_APPTAINER=1`` runs the same tests on it. To show that the
tasks ran in the image, orch runs with a PATH on which no ``xtb`` exists, the image's marker
file ``/opt/orch/IMAGE`` is read by a task (it does not exist on the host), and each result
records the image's digest, which must equal the deployment record's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import read_results
from support.images import (  # noqa: F401 - fixtures
    REAL_RUNTIME_REASON,
    apptainer_path,
    real_runtime,
    sim_image,
    sim_image_build,
    sim_sources,
)

from orchestrator.apps.images import image_digest

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[1]
HIDDEN = {"xtb", "lmp", "cp2k", "cp2k.psmp", "nwchem"}

MARKER_CAMPAIGN = """
from orchestrator.dispatch.methods import Method
from orchestrator.thinker import BaseThinker, agent


def where_am_i() -> dict:
    import os, shutil
    marker = open("/opt/orch/IMAGE").read().strip() if os.path.exists("/opt/orch/IMAGE") else None
    return {"marker": marker, "container": os.environ.get("APPTAINER_CONTAINER"),
            "xtb": shutil.which("xtb"), "host_file_visible": os.path.exists(%(host_only)r)}


class WhereAmI(BaseThinker):
    methods = [Method(where_am_i, kind="cpu")]

    @agent(startup=True)
    def ask(self) -> None:
        for _ in range(3):
            self.queues.send_inputs(method="where_am_i", topic="where_am_i")
        for _ in range(3):
            self.queues.get_result(topic="where_am_i")
        self.done.set()
"""


def path_without_codes(tmp_path: Path, runtime_dir: Path) -> str:
    """A PATH with the container runtime and orch's venv but none of the simulation codes."""
    farm = tmp_path / "host-bin"
    farm.mkdir()
    for folder in ("/usr/local/bin", "/usr/bin", "/usr/sbin"):
        for entry in sorted(Path(folder).iterdir()):
            if entry.name not in HIDDEN and not (farm / entry.name).exists():
                (farm / entry.name).symlink_to(entry)
    return os.pathsep.join([str(runtime_dir), str(Path(sys.executable).parent), str(farm)])


def orch(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``orch ARGS`` as a user runs it, from a folder outside the repository (Apptainer binds
    the current directory by default; the repository must stay invisible in the image)."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True, text=True, env=env, cwd=env["ORCH_TEST_CWD"], timeout=1500,
        check=False,
    )  # fmt: skip


@pytest.fixture
def host_env(
    tmp_path: Path,
    sim_image: Path,  # noqa: F811 - fixture
    apptainer_path: Path,  # noqa: F811 - fixture
) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = path_without_codes(tmp_path, apptainer_path)
    env["PYTHONPATH"] = str(REPO)
    env["ORCH_TEST_CWD"] = str(tmp_path)
    env["COLUMNS"] = "200"  # the deploy table on one line per row
    assert shutil.which("xtb", path=env["PATH"]) is None  # the host offers no xtb to orch
    assert shutil.which("apptainer", path=env["PATH"]) is not None
    return env


def site_dir(tmp_path: Path, image: Path, mode: str) -> Path:
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "boxed.yaml").write_text(
        "kind: cpu\nbackend: local\ncapacity: 2\n"
        f"container:\n  image: {image}\n  recipe: sim.def\n  mode: {mode}\n"
    )
    return sites


@pytest.mark.parametrize("mode", ["workers", "exec"])
def test_deploy_then_xtb_screen_runs_every_task_in_the_image(
    tmp_path: Path, host_env: dict[str, str], mode: str
) -> None:
    image = tmp_path / "images" / "sim"
    sites = site_dir(tmp_path, image, mode)

    started = time.monotonic()
    deployed = orch("deploy", "--sites", str(sites), env=host_env)
    deploy_s = time.monotonic() - started
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    record = json.loads((sites / "deploy" / "boxed" / "record.json").read_text())
    assert record["digest"] == image_digest(image)
    assert record["report"]["image"]["marker"] == "sim"
    assert record["report"]["codes"]["xtb"] is not None
    assert "boxed" in deployed.stdout and record["digest"][:19] in deployed.stdout
    assert "ready" in deployed.stdout
    print(f"\n[container] orch deploy ({mode}, image cached by the runner): {deploy_s:.1f} s")
    print(deployed.stdout)

    run_dir = tmp_path / "run"
    smiles = "O,C,N,CO,CC,C=C"
    launched = orch(
        "launch", "xtb-screen", "--sites", str(sites), "--run-dir", str(run_dir),
        "--no-progress", "-o", f"smiles={smiles}", env=host_env,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stdout + launched.stderr
    results = read_results(run_dir, "xtb_ip_ea")
    assert len(results) == 6
    assert all(r["success"] for r in results), [r["failure_info"] for r in results]
    assert {r["image_digest"] for r in results} == {record["digest"]}
    assert {r["image"] for r in results} == {str(image)}
    assert all(5 < r["value"]["ip_ev"] < 25 for r in results)
    log = (run_dir / "orch.log").read_text()
    (line,) = [x for x in log.splitlines() if "pre-flight: site boxed passed" in x]
    print(f"[container] {line.split('INFO ')[-1]}")


def test_a_task_in_workers_mode_sees_the_image_not_the_host(
    tmp_path: Path, host_env: dict[str, str], request: pytest.FixtureRequest
) -> None:
    image = tmp_path / "images" / "sim"
    sites = site_dir(tmp_path, image, "workers")
    campaign = tmp_path / "where.py"
    # a host file outside Apptainer's default binds ($HOME, /tmp, the current directory):
    # the task must not see it
    host_only = Path("/var/tmp") / f"orch-host-only-{os.getpid()}-{tmp_path.name}"
    host_only.write_text("host\n")
    request.addfinalizer(host_only.unlink)
    campaign.write_text(MARKER_CAMPAIGN % {"host_only": str(host_only)})
    assert not Path("/opt/orch/IMAGE").exists()  # the marker exists only in the image
    deployed = orch("deploy", "--sites", str(sites), env=host_env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    run_dir = tmp_path / "run"
    launched = orch(
        "launch", f"{campaign}:WhereAmI", "--sites", str(sites), "--run-dir", str(run_dir),
        "--no-progress", env=host_env,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stdout + launched.stderr
    results = read_results(run_dir, "where_am_i")
    assert len(results) == 3 and all(r["success"] for r in results)
    for r in results:
        assert r["value"]["marker"] == "sim"
        assert r["value"]["container"] == str(image)
        assert r["value"]["xtb"] == "/usr/bin/xtb"  # the image's, the host PATH has none
        assert r["value"]["host_file_visible"] is False  # host files are not bound in
        assert r["image_digest"] == image_digest(image)


def test_a_changed_image_is_refused_at_launch(tmp_path: Path, host_env: dict[str, str]) -> None:
    image = tmp_path / "images" / "sim"
    sites = site_dir(tmp_path, image, "exec")
    deployed = orch("deploy", "--sites", str(sites), env=host_env)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    marker = image / "opt" / "orch" / "IMAGE"
    marker.unlink()  # a hard link into the runner's cache: replace it, do not write through
    marker.write_text("changed\n")
    launched = orch(
        "launch", "xtb-screen", "--sites", str(sites), "--run-dir", str(tmp_path / "run"),
        "--no-progress", "-o", "smiles=O", env=host_env,
    )  # fmt: skip
    assert launched.returncode == 2, launched.stdout + launched.stderr
    (line,) = launched.stderr.strip().splitlines()
    assert "changed since it was deployed" in line and "orch deploy" in line


@pytest.mark.skipif(real_runtime() is None, reason=REAL_RUNTIME_REASON)
def test_the_real_runtime_runs_the_image(sim_image: Path) -> None:  # noqa: F811 - fixture
    runtime = real_runtime()
    assert runtime is not None
    done = subprocess.run(
        [runtime, "exec", "--cleanenv", str(sim_image), "cat", "/opt/orch/IMAGE"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "sim", done.stderr
