"""ip-search end to end: xTB on the CPU site, the surrogate on the mock GPU site, MLflow."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
from conftest import read_results
from test_cli import launch

from orchestrator.registry import ModelRegistry, TrackingServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(400),
    pytest.mark.skipif(
        shutil.which("xtb") is None, reason="xtb not installed: apt-get install xtb"
    ),
]


def test_campaign_trains_versions_registers_them_and_records_lineage(tmp_path):
    run_dir = tmp_path / "ips"
    options = ["seed_size=8", "batch_size=4", "rounds=2", "pool_size=40", "epochs=30"]
    done = launch("ip-search", run_dir, "--no-progress", *[f"-o{o}" for o in options])
    assert done.returncode == 0, done.stderr
    assert "model versions: v1" in done.stdout and "v2" in done.stdout

    trains = read_results(run_dir, "train_surrogate")
    infers = read_results(run_dir, "infer_surrogate")
    sims = read_results(run_dir, "xtb_ip_ea")
    assert len(trains) == 2 and {r["site"] for r in trains + infers} == {"local-gpu"}
    assert {r["site"] for r in sims} == {"local-cpu"} and all(r["success"] for r in sims)
    # Lineage in the results: seeds have no model; each round's picks name the version
    assert Counter(r["model_version"] for r in sims) == {
        None: 8, "ip-surrogate/1": 4, "ip-surrogate/2": 4,
    }  # fmt: skip
    assert [r["model_version"] for r in infers] == ["ip-surrogate/1", "ip-surrogate/2"]

    # The registry, read back from the campaign's own store after the campaign ended
    with TrackingServer(run_dir) as server:
        registry = ModelRegistry(server, "ip-surrogate")
        versions = {v.version: v for v in registry.versions()}
        assert sorted(versions) == [1, 2]
        champion = registry.alias_version("champion")
        assert champion in (1, 2) and "champion" in versions[champion].aliases
        best = min(versions, key=lambda v: versions[v].metrics["val_rmse"])
        assert champion == best  # the alias follows the lower validation error
        # each version names the training task that made it, and where it ran
        for version, train in zip((1, 2), trains, strict=True):
            assert versions[version].tags["orch.task_id"] == train["task_id"]
            assert versions[version].tags["orch.site"] == "local-gpu"
            assert "image_digest" not in versions[version].tags  # no container on this site
        for version in (1, 2):
            rows = registry.lineage(version)
            steered = {
                r["task_id"] for r in sims if r["model_version"] == f"ip-surrogate/{version}"
            }
            assert {row["task_id"] for row in rows} == steered
