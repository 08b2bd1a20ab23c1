"""molecular-design: pool files, option errors, plots; end to end on both local sites + MLflow."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from conftest import REPO, read_results
from test_cli import launch, one_error_line, orch

from orchestrator.campaigns import BUILTIN_CAMPAIGNS
from orchestrator.campaigns.pool import (
    PoolError,
    ReferenceMissError,
    default_pool_path,
    lookup_ip,
    read_pool,
)
from orchestrator.registry import ModelRegistry, TrackingServer

PNG = b"\x89PNG\r\n\x1a\n"
needs_xtb = pytest.mark.skipif(shutil.which("xtb") is None, reason="xtb not installed")


def launch_line(*options: str) -> str:
    args = [a for o in options for a in ("-o", o)]
    return one_error_line(orch("launch", "--sites", str(REPO / "sites"), "molecular-design", *args))


# -- the pool ---------------------------------------------------------------------------------


def test_shipped_pool_is_a_few_thousand_valid_distinct_molecules_with_its_source():
    pool = read_pool()
    assert len(pool) == 10000 and len(set(pool)) == 10000
    header = default_pool_path().read_text().splitlines()[:8]
    assert any("QM9" in line for line in header) and any("CC0" in line for line in header)
    assert "molecular-design" in BUILTIN_CAMPAIGNS


def test_user_pool_file_format(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("smiles,name\n# a comment\n\nCCO,ethanol\nc1ccccc1 benzene\nCCO,again\n")
    assert read_pool(path) == ["CCO", "c1ccccc1"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("", "no molecules"),
        (
            "CCO\nnot_a_smiles\nC1CC\nCC\n",
            "2 invalid SMILES (line 2: 'not_a_smiles'; line 3: 'C1CC')",
        ),
        (b"\xff\xfe\x00binary", "not a UTF-8 text file"),
    ],
)
def test_bad_pool_file_is_one_error_line(tmp_path, content, expected):
    path = tmp_path / "pool.smi"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(PoolError, match="pool file") as caught:
        read_pool(path)
    assert expected in str(caught.value)
    line = launch_line(f"pool={path}")
    assert "option pool" in line and expected in line


def test_bad_options_are_one_error_line(tmp_path):
    assert "reference" in launch_line("simulation=reference")
    assert "policy" in launch_line("policy=greedy")
    assert "no such file" in launch_line("simulation=reference", f"reference={tmp_path}/x.csv")


def test_reference_lookup(tmp_path):
    table = tmp_path / "ref.csv"
    table.write_text("smiles,ip_ev,seconds,error\nCCO,10.5,0.2,\nC1CC1,,0.1,not_converged\n")
    found = lookup_ip("CCO", str(table), time_scale=0)
    assert found.ip_ev == 10.5 and found.method == "reference lookup"
    with pytest.raises(ReferenceMissError) as missing:
        lookup_ip("CC", str(table), time_scale=0)
    assert missing.value.reason == "bad_input"
    with pytest.raises(ReferenceMissError) as failed:
        lookup_ip("C1CC1", str(table), time_scale=0)
    assert failed.value.reason == "not_converged"


# -- end to end -------------------------------------------------------------------------------


def check_run(run_dir, n_sims: int) -> dict:
    """What every policy's run must satisfy; returns summary.json."""
    sims = read_results(run_dir, "simulate")
    trains = read_results(run_dir, "train")
    assert len(sims) == n_sims and {r["site"] for r in sims} == {"local-cpu"}
    assert {r["method"] for r in sims} == {"xtb_ip_ea"}
    smiles = [r["args"][0] for r in sims]
    assert len(set(smiles)) == n_sims and set(smiles) <= set(read_pool()[:300])
    assert trains and {r["site"] for r in trains} == {"local-gpu"}
    assert all(r["success"] for r in trains)
    page = (run_dir / "report.html").read_text()  # orch writes it once the run ended
    for section in ("objective", "utilization", "latency", "timeline", "models"):
        assert f'id="{section}"' in page
    assert "ionization potential (eV)" in page and "<svg" in page
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["simulations"]["ok"] + summary["simulations"]["failed"] == n_sims
    ok = [r for r in sims if r["success"]]
    best = max(ok, key=lambda r: r["value"]["ip_ev"])
    assert summary["best"][0]["smiles"] == best["args"][0]

    # MLflow, read back from the campaign's own store after it ended
    with TrackingServer(run_dir) as server:
        registry = ModelRegistry(server, "molecular-design-ip")
        versions = {v.version: v for v in registry.versions()}
        assert sorted(versions) == list(range(1, len(trains) + 1))
        champion = registry.alias_version("champion")
        assert champion == min(versions, key=lambda v: versions[v].metrics["val_rmse"])
        for version in versions:
            label = f"molecular-design-ip/{version}"
            steered = {r["task_id"] for r in sims if r["model_version"] == label}
            assert {row["task_id"] for row in registry.lineage(version)} == steered
    labels = {r["model_version"] for r in sims} - {None}
    assert labels <= {f"molecular-design-ip/{v}" for v in versions}
    return summary


@pytest.mark.slow
@pytest.mark.timeout(300)
@needs_xtb
def test_steered_campaign_end_to_end(tmp_path):
    run_dir = tmp_path / "steered"
    options = ["budget=32", "retrain_every=10", "pool_size=300", "epochs=15", "infer_chunk=100"]
    done = launch("molecular-design", run_dir, "--no-progress", *[f"-o{o}" for o in options])
    assert done.returncode == 0, done.stderr
    assert "molecular-design: policy steered" in done.stdout and "time per phase" in done.stdout
    summary = check_run(run_dir, 32)
    # The first version is asked for after 10 values; the last one is trained on every value
    assert len(summary["versions"]) >= 2 and summary["versions"][-1]["final"]
    assert summary["versions"][-1]["n_train"] == summary["simulations"]["ok"]
    # Whether a ranking came before the budget was spent depends on speed: check what came
    if (run_dir / "results" / "infer.jsonl").exists():
        infers = read_results(run_dir, "infer")
        for label, chunks in Counter(r["model_version"] for r in infers).items():
            assert label is not None and chunks == 3  # 300 molecules less those chosen, in 100s


@pytest.mark.slow
@pytest.mark.timeout(300)
@needs_xtb
def test_batch_policy_pauses_retrains_and_steers(tmp_path):
    run_dir = tmp_path / "batch"
    options = ["policy=batch", "budget=30", "retrain_every=10", "pool_size=300", "epochs=15"]
    done = launch("molecular-design", run_dir, "--no-progress", *[f"-o{o}" for o in options])
    assert done.returncode == 0, done.stderr
    summary = check_run(run_dir, 30)
    sims = read_results(run_dir, "simulate")
    # 10 random, 10 chosen by version 1, 10 by version 2, then the final version 3
    assert [r["model_version"] for r in sorted(sims, key=lambda r: r["timestamps"]["created"])] == [
        None
    ] * 10 + ["molecular-design-ip/1"] * 10 + ["molecular-design-ip/2"] * 10
    assert [v["final"] for v in summary["versions"]] == [False, False, True]
    assert summary["phases"]["sampling paused"]["seconds"] > 0
