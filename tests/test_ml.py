"""The surrogate (``orchestrator.apps.ml``): accuracy on real xTB data, determinism, warm starts,
uncertainty, input errors, the nn.Module form (also in a fresh process) and ``run_task``.

Data: ``tests/data/xtb_ip.csv``, IPEA-xTB vertical ionization potentials (eV) of 228 small
molecules, made by ``scripts/make_ml_dataset.py`` with this repository's xTB wrapper.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator.apps.ml import (
    FORMAT,
    InvalidSmilesError,
    SurrogateEnsemble,
    TrainOptions,
    infer,
    resolve_device,
    to_module,
    train,
)
from orchestrator.apps.ml import surrogate as surrogate_module
from orchestrator.apps.runtime import run_task

TESTS_DIR = Path(__file__).parent
REPO = TESTS_DIR.parent
DATA = TESTS_DIR / "data" / "xtb_ip.csv"
QUICK = {"epochs": 8, "n_members": 3}
"""Options for tests that need a trained model, not a good one."""
UNSEEN = ["CCCCCCC", "c1ccc(O)c(C)c1", "CC(=O)N(C)C", "c1ccc2ncccc2c1C", "OCCCCO"]
METRIC_KEYS = {
    "train_loss",
    "train_rmse",
    "val_rmse",
    "val_mae",
    "val_baseline_rmse",
    "val_mean_std",
    "std_scale",
    "n_train",
    "n_val",
    "epochs",
    "epochs_total",
    "n_members",
    "seconds",
    "device",
}


def load_data() -> list[tuple[str, float]]:
    with DATA.open(newline="") as handle:
        return [(row["smiles"], float(row["value"])) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def data() -> list[tuple[str, float]]:
    return load_data()


@pytest.fixture(scope="module")
def split(data):
    """A held-out test set (every 5th molecule) the model never sees, and the rest."""
    test = data[::5]
    rest = [pair for i, pair in enumerate(data) if i % 5]
    return rest, test


@pytest.fixture(scope="module")
def trained(split):
    """The default model trained on the non-test molecules (seed 0)."""
    rest, _ = split
    return train(None, rest, {"seed": 0, "device": "cpu"})


@pytest.fixture(scope="module")
def quick(data):
    """A small model, trained briefly: for API checks."""
    return train(None, data[:60], {**QUICK, "device": "cpu"})


def same_weights(a: dict, b: dict) -> bool:
    if a["config"] != b["config"] or a["target"] != b["target"]:
        return False
    return all(
        sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        for sa, sb in zip(a["members"], b["members"], strict=True)
    )


# -- the data set -----------------------------------------------------------------------------


def test_data_set_is_small_real_and_clean(data):
    from rdkit import Chem

    smiles = [s for s, _ in data]
    values = [v for _, v in data]
    assert 100 <= len(data) <= 250
    assert len(set(smiles)) == len(smiles)
    assert all(Chem.MolToSmiles(Chem.MolFromSmiles(s)) == s for s in smiles)  # canonical
    assert all(5.0 < v < 17.0 for v in values)  # vertical IPs of closed-shell molecules (eV)
    assert max(values) - min(values) > 5.0


@pytest.mark.skipif(shutil.which("xtb") is None, reason="xtb not installed")
def test_data_set_values_come_from_the_xtb_wrapper(data):
    from orchestrator.apps.sim.xtb import xtb_ip_ea

    table = dict(data)
    for smiles in ("CCO", "c1ccccc1", "c1ccncc1"):
        assert table[smiles] == round(xtb_ip_ea(smiles, keep="never").ip_ev, 4)


# -- accuracy and metrics ---------------------------------------------------------------------


def test_training_beats_the_mean_baseline_on_held_out_molecules(split, trained):
    rest, test = split
    weights, metrics = trained
    # the model's own validation split
    assert metrics["n_train"] + metrics["n_val"] == len(rest)
    assert metrics["n_val"] == int(0.2 * len(rest))
    assert metrics["val_rmse"] < 0.8 * metrics["val_baseline_rmse"]
    assert metrics["val_mae"] <= metrics["val_rmse"]
    # and an independent test set, scored here
    means, _ = infer(weights, [s for s, _ in test], device="cpu")
    actual = [v for _, v in test]
    train_mean = sum(v for _, v in rest) / len(rest)
    rmse = math.sqrt(sum((m - a) ** 2 for m, a in zip(means, actual, strict=True)) / len(test))
    baseline = math.sqrt(sum((train_mean - a) ** 2 for a in actual) / len(test))
    assert rmse < 0.8 * baseline, (rmse, baseline)


def test_metrics_and_weights_layout(trained):
    weights, metrics = trained
    assert set(metrics) == METRIC_KEYS
    assert metrics["device"] == "cpu"
    assert all(
        isinstance(v, float) and math.isfinite(v) for k, v in metrics.items() if k != "device"
    )
    assert metrics["epochs"] == metrics["epochs_total"] == TrainOptions().epochs
    assert metrics["n_members"] == 5
    assert metrics["std_scale"] > 0 and metrics["val_mean_std"] > 0

    assert set(weights) == {"format", "config", "target", "calibration", "members", "trained"}
    assert weights["format"] == FORMAT
    assert weights["config"] == surrogate_module.DEFAULT_CONFIG
    assert weights["trained"] == {"rounds": 1, "epochs": 60, "n_train": int(metrics["n_train"])}
    assert len(weights["members"]) == 5
    for state in weights["members"]:
        assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in state.values())
    blob = pickle.dumps(weights)
    assert len(blob) < 4_000_000
    assert same_weights(pickle.loads(blob), weights)


def test_no_validation_split_gives_nan_validation_metrics(data):
    _, metrics = train(None, data[:20], {**QUICK, "validation_fraction": 0.0})
    assert metrics["n_val"] == 0 and metrics["n_train"] == 20
    assert math.isnan(metrics["val_rmse"]) and math.isnan(metrics["val_mae"])
    assert metrics["std_scale"] == 1.0  # nothing to calibrate on


# -- determinism and warm starts --------------------------------------------------------------


def test_same_seed_gives_identical_weights_and_predictions(data):
    subset = data[:80]
    rng_before, threads_before = torch.get_rng_state(), torch.get_num_threads()
    w1, m1 = train(None, subset, {**QUICK, "seed": 3})
    w2, m2 = train(None, subset, TrainOptions(epochs=8, n_members=3, seed=3))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is left alone
    assert torch.get_num_threads() == threads_before  # and so is the thread count
    assert same_weights(w1, w2)
    assert {k: v for k, v in m1.items() if k != "seconds"} == {
        k: v for k, v in m2.items() if k != "seconds"
    }
    assert infer(w1, UNSEEN, device="cpu") == infer(w2, UNSEEN, device="cpu")

    w3, _ = train(None, subset, {**QUICK, "seed": 4})
    assert not same_weights(w1, w3)


def test_warm_start_continues_training(data):
    subset = data[:100]
    options = {"n_members": 3, "validation_fraction": 0.0}
    first, m_first = train(None, subset, {**options, "epochs": 30})
    untouched = pickle.loads(pickle.dumps(first))
    warm, m_warm = train(first, subset, {**options, "epochs": 5})
    _, m_scratch = train(None, subset, {**options, "epochs": 5})

    assert m_warm["train_loss"] < m_scratch["train_loss"]
    assert m_warm["train_loss"] < m_first["train_loss"] * 2
    assert m_warm["epochs"] == 5 and m_warm["epochs_total"] == 35
    assert warm["trained"]["rounds"] == 2
    assert warm["config"] == first["config"]
    assert warm["target"] == first["target"]  # normalisation kept
    assert not same_weights(first, warm)
    assert same_weights(first, untouched) and first == {**untouched, "members": first["members"]}


def test_warm_start_refuses_another_architecture(quick, data):
    weights, _ = quick
    with pytest.raises(ValueError, match="hidden_sizes"):
        train(weights, data[:20], {"epochs": 1, "hidden_sizes": [32]})
    with pytest.raises(ValueError, match="n_members"):
        train(weights, data[:20], {"epochs": 1, "n_members": 4})
    train(weights, data[:20], {"epochs": 1, "n_members": 3})  # the same is fine


# -- inference and uncertainty ----------------------------------------------------------------


def test_infer_gives_a_mean_and_a_positive_std_per_molecule(trained, data):
    weights, _ = trained
    means, stds = infer(weights, UNSEEN)
    assert len(means) == len(stds) == len(UNSEEN)
    assert all(isinstance(x, float) and math.isfinite(x) for x in means + stds)
    assert all(s > 0 for s in stds)
    assert all(5.0 < m < 17.0 for m in means)
    assert infer(weights, []) == ([], [])
    one = infer(weights, UNSEEN[:1])
    assert (one[0][0], one[1][0]) == pytest.approx((means[0], stds[0]), rel=1e-5)


# -- bad inputs -------------------------------------------------------------------------------


def test_invalid_smiles_are_named_before_training(monkeypatch, data):
    def must_not_train(*args, **kwargs):
        raise AssertionError("training started despite invalid SMILES")

    monkeypatch.setattr(surrogate_module, "_fit_member", must_not_train)
    bad = [*data[:10], ("C1CC", 1.0), ("not_a_smiles", 2.0), ("", 3.0)]
    with pytest.raises(InvalidSmilesError) as caught:
        train(None, bad, QUICK)
    assert isinstance(caught.value, ValueError)
    assert "3 invalid SMILES" in str(caught.value)
    assert "'C1CC'" in str(caught.value) and "'not_a_smiles'" in str(caught.value)
    assert caught.value.invalid == ["C1CC", "not_a_smiles", ""]
    assert caught.value.positions == [10, 11, 12]
    copy = pickle.loads(pickle.dumps(caught.value))  # engines ship exceptions across processes
    assert str(copy) == str(caught.value) and copy.details == caught.value.details


def test_invalid_smiles_in_infer(quick):
    weights, _ = quick
    with pytest.raises(ValueError, match="'c1cc'"):
        infer(weights, ["CCO", "c1cc"])
    with pytest.raises(ValueError, match="invalid SMILES"):
        to_module(weights).predict_smiles(["Xx"])
    with pytest.raises(TypeError):
        infer(weights, "CCO")


def test_bad_training_sets_and_options(data):
    with pytest.raises(ValueError, match="not finite"):
        train(None, [("CCO", 1.0), ("CC", float("nan")), ("C", "x")], QUICK)
    with pytest.raises(ValueError, match="3 SMILES but 2 values"):
        train(None, {"smiles": ["C", "CC", "CCC"], "values": [1.0, 2.0]}, QUICK)
    with pytest.raises(ValueError, match="at least 2"):
        train(None, [("CCO", 1.0)], QUICK)
    with pytest.raises(ValueError, match="unknown training option.*epoch"):
        train(None, data[:10], {"epoch": 3})
    with pytest.raises(ValueError, match="n_members"):
        TrainOptions(n_members=1)
    with pytest.raises(ValueError, match="validation_fraction"):
        TrainOptions(validation_fraction=1.0)
    with pytest.raises(ValueError, match="threads"):
        TrainOptions(threads=0)
    with pytest.raises(ValueError, match="not surrogate weights"):
        infer({"format": "something else"}, ["C"])


def test_mapping_training_set_equals_pairs(data):
    subset = data[:30]
    as_pairs, _ = train(None, subset, QUICK)
    values = np.array([v for _, v in subset])
    as_mapping, _ = train(None, {"smiles": [s for s, _ in subset], "values": values}, QUICK)
    assert same_weights(as_pairs, as_mapping)
    train(None, [("CCO", np.float32(1.5)), ("CC", np.int64(2)), ("C", 3)], QUICK)


def test_other_architectures(data):
    options = {**QUICK, "counts": False, "fingerprint_bits": 256, "hidden_sizes": [16]}
    weights, metrics = train(None, data[:40], options)
    assert weights["config"] == {
        "fingerprint_radius": 2,
        "fingerprint_bits": 256,
        "counts": False,
        "hidden_sizes": [16],
        "n_members": 3,
    }
    module = to_module(weights)
    features = module.featurize(["c1ccccc1O", "CCN"])
    assert features.shape == (2, 256) and set(features.unique().tolist()) <= {0.0, 1.0}
    assert module.predict_smiles(["CCN"]) == infer(weights, ["CCN"], device="cpu")


# -- the nn.Module form -----------------------------------------------------------------------


def test_to_module_predicts_exactly_like_infer(trained):
    weights, _ = trained
    module = to_module(weights)
    assert isinstance(module, torch.nn.Module) and isinstance(module, SurrogateEnsemble)
    assert type(module).__module__ == "orchestrator.apps.ml.surrogate"
    assert module.predict_smiles(UNSEEN) == infer(weights, UNSEEN, device="cpu")

    features = module.featurize(UNSEEN)
    assert features.shape == (len(UNSEEN), weights["config"]["fingerprint_bits"])
    assert features.dtype == torch.float32
    with torch.no_grad():
        out = module(features)
    assert out.shape == (len(UNSEEN), 2)
    means, stds = module.predict_smiles(UNSEEN)
    assert out[:, 0].double().tolist() == means
    assert out[:, 1].double().tolist() == stds
    with pytest.raises(ValueError, match="shape"):
        module(features[:, :10])
    assert same_weights(module.to_weights(weights["trained"]), weights)


def test_pickled_module_predicts_identically_in_a_fresh_process(trained, tmp_path):
    weights, _ = trained
    module = to_module(weights)
    expected = module.predict_smiles(UNSEEN)
    path = tmp_path / "surrogate.pt"
    torch.save(module, path)
    assert pickle.loads(pickle.dumps(module)).predict_smiles(UNSEEN) == expected
    code = (
        "import json, sys, torch\n"
        "module = torch.load(sys.argv[1], weights_only=False)\n"
        "assert type(module).__name__ == 'SurrogateEnsemble'\n"
        "print(json.dumps(module.predict_smiles(json.loads(sys.argv[2]))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), json.dumps(UNSEEN)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    means, stds = json.loads(proc.stdout)
    assert (means, stds) == expected


def test_mlflow_pytorch_round_trip_in_a_fresh_process(trained, tmp_path):
    """The registry's route: ``mlflow.pytorch`` saves the module and loads it back elsewhere."""
    mlflow_pytorch = pytest.importorskip("mlflow.pytorch")
    weights, _ = trained
    module = to_module(weights)
    expected = module.predict_smiles(UNSEEN)
    path = tmp_path / "model"
    mlflow_pytorch.save_model(
        module, str(path), serialization_format="pickle", pip_requirements=["torch"]
    )
    code = (
        "import json, sys, mlflow.pytorch\n"
        "module = mlflow.pytorch.load_model(sys.argv[1])\n"
        "print(json.dumps(module.predict_smiles(json.loads(sys.argv[2]))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), json.dumps(UNSEEN)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    means, stds = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (means, stds) == expected


# -- devices and the task runtime -------------------------------------------------------------


def test_device_choice():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="device"):
        TrainOptions(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_training_and_inference(data):
    weights, metrics = train(None, data, {"device": "cuda", "epochs": 20})
    assert metrics["device"] == "cuda:0"
    assert metrics["val_rmse"] < metrics["val_baseline_rmse"]
    assert all(t.device.type == "cpu" for s in weights["members"] for t in s.values())
    on_gpu = infer(weights, UNSEEN, device="cuda")
    on_cpu = infer(weights, UNSEEN, device="cpu")
    assert on_gpu == to_module(weights, "cuda").predict_smiles(UNSEEN)
    assert on_gpu[0] == pytest.approx(on_cpu[0], abs=1e-4)
    assert on_gpu[1] == pytest.approx(on_cpu[1], abs=1e-4)


def test_train_and_infer_through_run_task(data):
    done = run_task(train, (None, data[:40], QUICK), {})
    assert done["ok"], done.get("failure")
    weights, metrics = done["value"]
    assert weights["format"] == FORMAT and set(metrics) == METRIC_KEYS

    predicted = run_task(infer, (weights, UNSEEN), {})
    assert predicted["ok"], predicted.get("failure")
    means, stds = predicted["value"]
    assert len(means) == len(stds) == len(UNSEEN)

    failed = run_task(train, (None, [*data[:5], ("C(", 1.0)], QUICK), {})
    assert not failed["ok"]
    failure = failed["failure"]
    assert failure["exception_type"] == "orchestrator.apps.ml.features.InvalidSmilesError"
    assert failure["reason"] == "bad_input"
    assert failure["details"] == {"invalid_smiles": ["C("], "positions": [5]}
