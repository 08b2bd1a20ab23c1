"""The ``orch`` command line: bad input → one line and exit 2; the demo end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, assert_no_new_engine_processes, engine_processes
from typer.testing import CliRunner

from orchestrator.cli import app

runner = CliRunner()

GOOD_CAMPAIGN = """
from orchestrator.dispatch import Method
from orchestrator.thinker import BaseThinker, agent

def double(x):
    return 2 * x

class Small(BaseThinker):
    methods = [Method(double, kind="cpu")]

    @agent
    def go(self):
        self.queues.send_inputs(21, method="double", topic="double")
        self.value = self.queues.get_result("double").value

    def summary(self):
        return f"value={self.value}"
"""


def orch(*args: str):
    return runner.invoke(app, list(args))


def launch_cmd(
    campaign: str, run_dir: Path, *extra: str, sites: Path = REPO / "sites"
) -> list[str]:
    """``orch launch`` (default sites), as a separate process, as users run it."""
    return [
        sys.executable, "-m", "orchestrator.cli", "launch", "--sites", str(sites),
        campaign, "--run-dir", str(run_dir), *extra,
    ]  # fmt: skip


def launch(
    campaign: str,
    run_dir: Path,
    *extra: str,
    cwd: Path | None = None,
    sites: Path = REPO / "sites",
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        launch_cmd(campaign, run_dir, *extra, sites=sites),
        capture_output=True,
        text=True,
        timeout=200,
        cwd=cwd,
    )


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_sites_list_and_validate_defaults():
    listed = orch("sites", "list", "--sites", str(REPO / "sites"))
    assert listed.exit_code == 0, listed.output
    assert "local-cpu" in listed.output and "local-gpu" in listed.output
    valid = orch("sites", "validate", "--sites", str(REPO / "sites"))
    assert valid.exit_code == 0 and "2 site(s) valid" in valid.output
    examples = orch("sites", "validate", "--sites", str(REPO / "sites" / "examples"))
    assert examples.exit_code == 0, examples.output


def test_missing_sites_dir(tmp_path):
    line = one_error_line(orch("sites", "validate", "--sites", str(tmp_path / "nope")))
    assert "nope" in line and "not found" in line


def test_bad_yaml_names_file_and_field(tmp_path):
    (tmp_path / "a.yaml").write_text("kind: cpu\nbackend: local\ncapcity: 2\n")
    line = one_error_line(orch("sites", "validate", "--sites", str(tmp_path)))
    assert "a.yaml" in line and "capcity" in line and "capacity" in line


def test_launch_unknown_campaign():
    line = one_error_line(orch("launch", "--sites", str(REPO / "sites"), "nosuch"))
    assert "nosuch" in line and "demo" in line


def test_launch_campaign_file_missing(tmp_path):
    ref = f"{tmp_path}/gone.py:Thing"
    line = one_error_line(orch("launch", "--sites", str(REPO / "sites"), ref))
    assert "not found" in line


def test_launch_campaign_class_missing(tmp_path):
    path = tmp_path / "camp_nocls.py"
    path.write_text(GOOD_CAMPAIGN)
    line = one_error_line(orch("launch", "--sites", str(REPO / "sites"), f"{path}:Nope"))
    assert "no attribute 'Nope'" in line


def test_launch_unknown_option():
    line = one_error_line(orch("launch", "--sites", str(REPO / "sites"), "demo", "-o", "n_sims=3"))
    assert "n_sims" in line and "n_simulations" in line


def test_launch_bad_option_value():
    result = orch("launch", "--sites", str(REPO / "sites"), "demo", "-o", "parallel=lots")
    line = one_error_line(result)
    assert "parallel" in line and "lots" in line


def test_launch_malformed_option():
    line = one_error_line(orch("launch", "--sites", str(REPO / "sites"), "demo", "-o", "parallel"))
    assert "key=value" in line


def test_launch_no_site_of_required_kind(tmp_path):
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "only-cpu.yaml").write_text("kind: cpu\nbackend: local\ncapacity: 1\n")
    result = orch("launch", "--sites", str(sites), "demo", "--run-dir", str(tmp_path / "run"))
    line = one_error_line(result)
    assert "no site of kind gpu" in line and "fit_and_rank" in line and "kind: gpu" in line


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_launch_campaign_from_file(tmp_path):
    path = tmp_path / "camp_small.py"
    path.write_text(GOOD_CAMPAIGN)
    run_dir = tmp_path / "run"
    done = launch(f"{path}:Small", run_dir, "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "value=42" in done.stdout
    record = json.loads((run_dir / "results" / "double.jsonl").read_text())
    assert record["value"] == 42 and record["site"] == "local-cpu"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_demo_end_to_end(tmp_path):
    before = {p.pid for p in engine_processes()}
    run_dir = tmp_path / "demo"
    done = launch("demo", run_dir, "-o", "n_simulations=32", "-o", "batch_size=8")
    assert done.returncode == 0, done.stderr
    assert "best value found" in done.stdout and str(run_dir) in done.stdout.replace("\n", "")
    sims = [
        json.loads(x) for x in (run_dir / "results" / "simulate.jsonl").read_text().splitlines()
    ]
    fits = [json.loads(x) for x in (run_dir / "results" / "train.jsonl").read_text().splitlines()]
    assert len(sims) == 32 and all(r["success"] for r in sims)
    assert {r["site"] for r in sims} == {"local-cpu"}
    assert len(fits) >= 1 and {r["site"] for r in fits} == {"local-gpu"}
    for record in sims + fits:
        assert all(v is not None for v in record["timestamps"].values()), record["timestamps"]
        assert record["worker_pid"] and record["worker_host"]
    assert_no_new_engine_processes(before)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ctrl_c_stops_every_process(tmp_path):
    before = {p.pid for p in engine_processes()}
    run_dir = tmp_path / "long"
    cmd = launch_cmd("demo", run_dir, "--no-progress", "-o", "n_simulations=100000")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = run_dir / "results" / "simulate.jsonl"
    deadline = time.monotonic() + 120
    try:
        while not (results.exists() and results.stat().st_size > 0):  # wait for work to flow
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no result within 120 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # a failed stop must not leave a 100,000-task campaign running
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert results.read_text().strip()  # what was computed is kept
    assert_no_new_engine_processes(before)


def test_console_script_installed():
    bindir = Path(sys.executable).parent
    assert (bindir / "orch").exists() or os.environ.get("CI_NO_SCRIPT")


TYPO_CAMPAIGN = GOOD_CAMPAIGN.replace('method="double"', 'method="dubble"')


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_launch_campaign_calling_unknown_method(tmp_path):
    path = tmp_path / "camp_typo.py"
    path.write_text(TYPO_CAMPAIGN)
    done = launch(f"{path}:Small", tmp_path / "run", "--no-progress")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: agent go: unknown method 'dubble'; this campaign registers: double"]


BROKEN_INIT = GOOD_CAMPAIGN.replace(
    "class Small(BaseThinker):",
    "class Small(BaseThinker):\n"
    "    def __init__(self, queues):\n"
    "        raise ValueError('bad init')\n",
)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_constructor_error_is_one_line_and_reaps_sites(tmp_path):
    before = {p.pid for p in engine_processes()}
    path = tmp_path / "camp_broken.py"
    path.write_text(BROKEN_INIT)
    run_dir = tmp_path / "run"
    done = launch(f"{path}:Small", run_dir, "--no-progress")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(errors) == 1
    assert "its constructor raised ValueError: bad init" in errors[0]
    assert "Traceback" in (run_dir / "orch.log").read_text()
    assert_no_new_engine_processes(before)
