"""The surrogate through the registry: real data → train → log → alias → fresh-process load."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest
from conftest import TESTS_DIR

from orchestrator.apps.ml import infer, to_module, train
from orchestrator.registry import ModelRegistry, TrackingServer

pytestmark = pytest.mark.timeout(240)


def test_champion_loads_in_a_fresh_process_with_identical_predictions(tmp_path):
    with open(TESTS_DIR / "data" / "xtb_ip.csv") as handle:
        data = [(row["smiles"], float(row["value"])) for row in csv.DictReader(handle)]
    held_out = [s for s, _ in data[::10]]
    training = [pair for i, pair in enumerate(data) if i % 10]
    # Same data and seed (so the same validation split): only the training length differs
    weak, weak_metrics = train(None, training, {"epochs": 2, "seed": 1})
    strong, strong_metrics = train(None, training, {"epochs": 60, "seed": 1})
    improved = strong_metrics["val_rmse"] < weak_metrics["val_rmse"]
    champion_weights = strong if improved else weak

    with TrackingServer(tmp_path / "run") as server:
        registry = ModelRegistry(server, "ip-surrogate-test")
        numeric = {k: v for k, v in weak_metrics.items() if isinstance(v, float)}
        v1 = registry.log_training(to_module(weak), {"epochs": 2}, numeric)
        assert registry.promote(v1.version) is True
        numeric = {k: v for k, v in strong_metrics.items() if isinstance(v, float)}
        v2 = registry.log_training(to_module(strong), {"epochs": 60}, numeric)
        assert registry.promote(v2.version) is improved  # moves only on a lower val_rmse
        assert registry.alias_version("champion") == (v2.version if improved else v1.version)

        script = (
            "import json, sys, mlflow.pytorch\n"
            f"mlflow.set_tracking_uri({server.url!r})\n"
            "model = mlflow.pytorch.load_model('models:/ip-surrogate-test@champion')\n"
            "print(json.dumps(model.predict_smiles(json.loads(sys.argv[1]))))\n"
        )
        assert server.credentials is not None  # the run's secret, passed as MLflow reads it
        env = {
            **os.environ,
            "MLFLOW_TRACKING_USERNAME": server.credentials.username,
            "MLFLOW_TRACKING_PASSWORD": server.credentials.password,
        }
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(held_out)],
            capture_output=True, text=True, timeout=180, env=env,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    means, stds = json.loads(done.stdout.strip().splitlines()[-1])
    assert [means, stds] == [list(x) for x in infer(champion_weights, held_out, device="cpu")]
