"""Pre-flight at ``orch launch``: each failure is one line, and a kind left without a site
stops the campaign with exit 2 before any task runs.

The Globus checks run against the stand-in Globus service of test_site_globus.py (real SDK,
HTTP on 127.0.0.1); the image checks against deployment records written by orch's own code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from test_site_globus import ENDPOINT_ID, FakeGlobus, point_at

from orchestrator.apps.images import fingerprint, image_digest
from orchestrator.apps.probe import versions
from orchestrator.config.sites import SiteConfig
from orchestrator.containers.deploy import Deployment, save_record, site_folder
from orchestrator.containers.preflight import check_site
from orchestrator.sites import make_site

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_globus_login(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """An environment with no Globus credentials at all (and a private SDK state dir)."""
    for var in list(os.environ):
        if var.startswith(("GLOBUS_", "ORCH_TRACKING")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("GLOBUS_COMPUTE_USER_DIR", str(tmp_path / "globus_compute"))
    return dict(os.environ)


def write_site(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)


def test_a_globus_only_cpu_campaign_without_credentials_exits_2_before_any_task(
    tmp_path: Path, no_globus_login: dict[str, str]
) -> None:
    sites = tmp_path / "sites"
    write_site(
        sites, "hpc", f"kind: cpu\nbackend: globus\ncapacity: 4\nendpoint_id: {ENDPOINT_ID}\n"
    )
    run_dir = tmp_path / "run"
    env = {**no_globus_login, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "launch", "xtb-screen", "--sites", str(sites),
         "--run-dir", str(run_dir), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: no cpu site passed the pre-flight checks")
    assert "site 'hpc'" in lines[0] and "globus-compute-endpoint login" in lines[0]
    results = run_dir / "results"
    assert not results.exists() or not any(p.stat().st_size for p in results.iterdir())


def globus_site(tmp_path: Path, **extra: Any) -> Any:
    config = SiteConfig.model_validate(
        {"name": "hpc", "kind": "cpu", "backend": "globus", "capacity": 2,
         "endpoint_id": ENDPOINT_ID, "http_timeout": 2.0, **extra}
    )  # fmt: skip
    return make_site(config, tmp_path / "run")


def test_an_offline_endpoint_fails_the_preflight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_globus_login: dict[str, str]
) -> None:
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_ID", "00000000-0000-4000-8000-000000000001")
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", "orch-test-secret")
    service = FakeGlobus(endpoint_status="offline")
    point_at(monkeypatch, service.url)
    try:
        site = globus_site(tmp_path)
        verdict = check_site(site, None)
        assert verdict.reason is not None
        assert f"endpoint {ENDPOINT_ID} is offline" in verdict.reason
        assert "globus-compute-endpoint start" in verdict.reason
        assert "orch-test-secret" not in verdict.reason
        service.endpoint_status = "online"
        assert check_site(site, None).reason is None
        assert service.find("GET", f"/v2/endpoints/{ENDPOINT_ID}/status")
    finally:
        service.close()


def local_container_site(tmp_path: Path, image: Path) -> tuple[SiteConfig, Path]:
    sites = tmp_path / "sites"
    text = f"kind: cpu\nbackend: local\ncapacity: 1\ncontainer:\n  image: {image}\n"
    write_site(sites, "boxed", text)
    from orchestrator.config.sites import load_sites

    return load_sites(sites)[0], sites


def fake_image(tmp_path: Path) -> Path:
    image = tmp_path / "img"
    (image / "opt" / "orch").mkdir(parents=True)
    (image / "opt" / "orch" / "IMAGE").write_text("sim\n")
    return image


def deployed(config: SiteConfig, sites: Path, image: Path, report: dict[str, Any]) -> None:
    folder = site_folder(sites, config.name)
    folder.mkdir(parents=True)
    result = Deployment(
        site=config.name, image=str(image), action="found",
        digest=image_digest(image), fingerprint=fingerprint(image), report=report,
    )  # fmt: skip
    save_record(folder, config, result)


def test_a_deployed_local_site_passes_and_its_results_will_name_the_digest(tmp_path: Path) -> None:
    image = fake_image(tmp_path)
    config, sites = local_container_site(tmp_path, image)
    site = make_site(config, tmp_path / "run")
    assert "not deployed" in str(check_site(site, sites).reason)
    deployed(config, sites, image, versions())
    verdict = check_site(site, sites)
    assert verdict.reason is None and verdict.digest == image_digest(image)
    record = json.loads((site_folder(sites, "boxed") / "record.json").read_text())
    assert record["digest"] == verdict.digest


def test_an_image_changed_since_deployment_fails_the_preflight(tmp_path: Path) -> None:
    image = fake_image(tmp_path)
    config, sites = local_container_site(tmp_path, image)
    deployed(config, sites, image, versions())
    site = make_site(config, tmp_path / "run")
    (image / "opt" / "orch" / "IMAGE").write_text("tampered\n")
    reason = str(check_site(site, sites).reason)
    assert f"image {image} changed since it was deployed" in reason
    assert "orch deploy" in reason and "\n" not in reason


def test_an_image_whose_versions_differ_fails_the_preflight(tmp_path: Path) -> None:
    image = fake_image(tmp_path)
    config, sites = local_container_site(tmp_path, image)
    report = versions()
    report["packages"] = {**report["packages"], "parsl": "2024.1.1"}
    deployed(config, sites, image, report)
    site = make_site(config, tmp_path / "run")
    reason = str(check_site(site, sites).reason)
    here = report and versions()["packages"]["parsl"]
    assert f"parsl 2024.1.1 in the image, {here} here" in reason
    assert "orch deploy --force" in reason


def test_a_missing_image_fails_the_preflight(tmp_path: Path) -> None:
    image = fake_image(tmp_path)
    config, sites = local_container_site(tmp_path, image)
    deployed(config, sites, image, versions())
    site = make_site(config, tmp_path / "run")
    import shutil

    shutil.rmtree(image)
    assert f"image {image} does not exist" in str(check_site(site, sites).reason)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_an_offline_globus_peer_is_kept_down_and_the_local_site_does_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_globus_login: dict[str, str]
) -> None:
    from apps_for_tests import square

    from orchestrator.dispatch import Method
    from orchestrator.runner import run_campaign
    from orchestrator.thinker import BaseThinker, agent

    class Squares(BaseThinker):
        methods = [Method(square, kind="cpu")]

        @agent
        def go(self) -> None:
            for x in range(4):
                self.queues.send_inputs(float(x), method="square", topic="square")
            self.values = sorted(self.queues.get_result("square").value for _ in range(4))

    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_ID", "00000000-0000-4000-8000-000000000001")
    monkeypatch.setenv("GLOBUS_COMPUTE_CLIENT_SECRET", "orch-test-secret")
    service = FakeGlobus(endpoint_status="offline")
    point_at(monkeypatch, service.url)
    hpc = SiteConfig.model_validate(
        {"name": "hpc", "kind": "cpu", "backend": "globus", "capacity": 2,
         "endpoint_id": ENDPOINT_ID, "http_timeout": 2.0}
    )  # fmt: skip
    local = SiteConfig.model_validate({"name": "here", "kind": "cpu", "backend": "local",
                                       "capacity": 1})  # fmt: skip
    lines: list[str] = []
    try:
        summary = run_campaign(
            Squares, [hpc, local], tmp_path / "run", notify=lines.append,
            extra_paths=[str(Path(__file__).parent)],
        )  # fmt: skip
    finally:
        service.close()
    (line,) = lines
    assert line.startswith("pre-flight: site 'hpc': endpoint") and "is offline" in line
    assert line.endswith("kept as down until it answers")
    assert summary.per_site["here"]["done"] == 4 and summary.per_site["hpc"]["done"] == 0
    assert not service.find("POST", f"/v3/endpoints/{ENDPOINT_ID}/submit")  # nothing sent there
