"""Simulation methods through the dispatcher on the real local CPU site."""

from __future__ import annotations

import shutil

import pytest
from conftest import read_results
from test_cli import launch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        shutil.which("xtb") is None, reason="xtb not installed: apt-get install xtb"
    ),
]


def test_xtb_screen_runs_24_tasks_with_values(tmp_path):
    run_dir = tmp_path / "screen"
    done = launch("xtb-screen", run_dir, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "molecules: 24 ok, 0 failed" in done.stdout
    results = read_results(run_dir, "xtb_ip_ea")
    assert len(results) == 24
    assert all(r["success"] and r["site"] == "local-cpu" for r in results)
    ips = {r["args"][0]: r["value"]["ip_ev"] for r in results}
    assert all(isinstance(v, float) and 5 < v < 25 for v in ips.values()), ips
    assert ips["c1ccccc1"] < ips["C"]  # benzene ionizes more easily than methane
    assert all(all(v is not None for v in r["timestamps"].values()) for r in results)


def test_failed_simulation_is_data_and_not_retried(tmp_path):
    run_dir = tmp_path / "bad"
    done = launch("xtb-screen", run_dir, "--no-progress", "-o", "smiles=O,C1CC,N")
    assert done.returncode == 0, done.stderr
    assert "molecules: 2 ok, 1 failed" in done.stdout
    (bad,) = [r for r in read_results(run_dir, "xtb_ip_ea") if not r["success"]]
    assert bad["args"][0] == "C1CC"
    assert bad["failure_info"]["reason"] == "bad_input"
    assert "invalid SMILES" in bad["failure_info"]["message"]
    assert bad["retries"] == 0  # only site failures are retried


def test_site_commands_reach_the_workers(tmp_path):
    sites = tmp_path / "sites"
    sites.mkdir()
    (sites / "cpu.yaml").write_text(
        "kind: cpu\nbackend: local\ncapacity: 1\ncommands:\n  xtb: no-such-xtb --flag\n"
    )
    run_dir = tmp_path / "run"
    done = launch("xtb-screen", run_dir, "--no-progress", "-o", "smiles=O", sites=sites)
    assert done.returncode == 0, done.stderr
    (record,) = read_results(run_dir, "xtb_ip_ea")
    assert record["site"] == "cpu" and record["success"] is False
    assert record["failure_info"]["reason"] == "binary_missing"
    assert "'no-such-xtb' not found" in record["failure_info"]["message"]
