"""MLflow wiring: embedded tracking server, logging and versioning torch models, alias policy,
loading by alias in a fresh process, lineage, fail-fast on an unreachable server, ``orch ui``."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
import torch
from conftest import REPO
from torch import nn
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.exceptions import OrchError
from orchestrator.registry import (
    ModelRegistry,
    RegistryError,
    RegistryUnavailableError,
    TrackingServer,
    store_paths,
)
from orchestrator.registry.server import (
    auth_error,
    free_port,
    health_error,
    read_credentials,
    read_server_info,
)

runner = CliRunner()


def server_processes(pid: int) -> list[psutil.Process]:
    """The server process and all its descendants."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def assert_gone(procs: list[psutil.Process]) -> None:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid}: {' '.join(proc.cmdline())[:100]}")
        except psutil.NoSuchProcess:
            continue
    assert not alive, f"server processes left over: {alive}"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One embedded server for the module (starting one costs ~5 s)."""
    run_dir = tmp_path_factory.mktemp("run")
    with TrackingServer(run_dir) as srv:
        procs = server_processes(srv.pid)
        yield srv
    assert_gone(procs)


def make_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 3, generator=gen)
    y = x @ torch.tensor([[1.5], [-2.0], [0.5]]) + 0.05 * torch.randn(96, 1, generator=gen)
    return x[:64], y[:64], x[64:], y[64:]


def train(steps: int) -> tuple[nn.Module, float]:
    """A small regression net trained for ``steps`` steps; returns it and its validation RMSE."""
    torch.manual_seed(0)
    x, y, x_val, y_val = make_data()
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        rmse = torch.sqrt(nn.functional.mse_loss(model(x_val), y_val)).item()
    return model, rmse


# --- the tracking server ----------------------------------------------------------------


@pytest.mark.timeout(120)
def test_server_lifecycle_and_fail_fast_after_stop(tmp_path):
    server = TrackingServer(tmp_path).start()
    try:
        assert server.healthy()
        info = read_server_info(tmp_path)
        assert info is not None and info["url"] == server.url and info["pid"] == server.pid
        assert store_paths(tmp_path)["db"].is_file()
        procs = server_processes(server.pid)
        registry = ModelRegistry(server, "lifecycle")  # probes /health: server is up
        assert registry.versions() == []
    finally:
        server.stop()
    assert_gone(procs)
    assert not store_paths(tmp_path)["info"].exists()
    assert health_error(info["url"]) is not None
    server.stop()  # idempotent

    # a registry whose server went away fails at once, naming the URI and the fix
    with pytest.raises(RegistryUnavailableError, match=re.escape(info["url"])) as caught:
        registry.versions()
    assert "orch ui" in str(caught.value) and isinstance(caught.value, OrchError)


def test_external_server_is_not_managed(server):
    external = TrackingServer.external(server.url + "/")
    assert external.start() is external and external.url == server.url
    external.stop()
    assert server.healthy() and external.pid is None


@pytest.mark.timeout(20)  # the fail-fast bound: MLflow alone retries for ~250 s
def test_unreachable_tracking_uri_fails_fast():
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryUnavailableError) as caught:
        ModelRegistry(uri, "anything")
    message = str(caught.value)
    assert uri in message and "unreachable" in message
    assert "orch ui --run-dir" in message and "tracking URI" in message
    with pytest.raises(RegistryUnavailableError):
        TrackingServer.external(uri).start()


# --- logging, alias policy, loading -------------------------------------------------------


def test_train_log_promote_and_load_in_fresh_process(server, tmp_path):
    rough, rough_rmse = train(steps=3)
    good, good_rmse = train(steps=150)
    assert good_rmse < rough_rmse  # the premise of the policy checks below
    registry = ModelRegistry(server, "surrogate", experiment="test-campaign")

    v1 = registry.log_training(
        rough, {"steps": 3, "lr": 0.05}, {"val_rmse": rough_rmse}, tags={"campaign": "t"}
    )
    assert (v1.name, v1.version, v1.metrics) == ("surrogate", 1, {"val_rmse": rough_rmse})
    assert registry.promote(v1.version) is True  # no champion yet
    v2 = registry.log_training(good, {"steps": 150, "lr": 0.05}, {"val_rmse": good_rmse})
    assert registry.promote(v2.version) is True  # better: the alias moves
    v3 = registry.log_training(rough, {"steps": 3, "lr": 0.05}, {"val_rmse": rough_rmse})
    assert registry.promote(v3.version) is False  # worse: it stays
    assert registry.promote(v2.version) is False  # already the holder
    assert registry.alias_version("champion") == 2
    # higher-is-better policy on another alias
    assert registry.promote(v3.version, metric="val_rmse", lower_is_better=False, alias="widest")
    assert not registry.promote(v2.version, lower_is_better=False, alias="widest")
    with pytest.raises(RegistryError, match="no metric 'r2'"):
        registry.promote(v2.version, metric="r2")

    listed = registry.versions()
    assert [v.version for v in listed] == [1, 2, 3]
    assert [v.aliases for v in listed] == [(), ("champion",), ("widest",)]
    assert [v.metrics["val_rmse"] for v in listed] == [rough_rmse, good_rmse, rough_rmse]
    assert listed[0].tags == {"campaign": "t"} and listed[1].run_id == v2.run_id
    assert registry.resolve("champion") == 2 and registry.resolve("latest") == 3

    x = make_data(seed=1)[2]
    with torch.no_grad():
        expected = good(x)
    with torch.no_grad():
        assert torch.equal(registry.load("champion")(x), expected)
    with pytest.raises(RegistryError, match="no version or alias 'nope'"):
        registry.load("nope")

    # a fresh process loads models:/surrogate@champion with plain MLflow: same predictions
    torch.save(x, tmp_path / "x.pt")
    code = textwrap.dedent(
        f"""
        import mlflow.pytorch, torch
        model = mlflow.pytorch.load_model("models:/surrogate@champion")
        x = torch.load({str(tmp_path / "x.pt")!r})
        with torch.no_grad():
            torch.save(model(x), {str(tmp_path / "y.pt")!r})
        """
    )
    # another tool passes the run's secret the usual MLflow way
    assert server.credentials is not None
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": server.url,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_TRACKING_USERNAME": server.credentials.username,
        "MLFLOW_TRACKING_PASSWORD": server.credentials.password,
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.equal(torch.load(tmp_path / "y.pt"), expected)


def test_tags_lineage_and_contained_settings(server):
    scoped = (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_TRACKING_AUTH",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    )
    env_before = {key: os.environ.get(key) for key in scoped}
    registry = ModelRegistry(server, "lineage-model")
    model, rmse = train(steps=2)
    version = registry.log_training(model, {"steps": 2}, {"val_rmse": rmse}).version
    registry.tag_version(version, "stage", "screening")
    assert registry.lineage(version) == []
    registry.log_lineage(version, [{"task_id": "t1", "smiles": "CCO"}, {"task_id": "t2"}])
    registry.log_lineage(version, [{"task_id": "t3", "path": Path("/x")}])
    # rows of tasks already recorded (results replayed after --resume) are not added again
    assert registry.log_lineage(version, [{"task_id": "t2"}, {"task_id": "t1"}]) is None
    assert [row["task_id"] for row in registry.lineage(version)] == ["t1", "t2", "t3"]
    assert registry.lineage(version)[2]["path"] == "/x"  # not JSON: stored as text
    tags = registry.versions()[0].tags
    assert tags["stage"] == "screening" and tags["orch.lineage_rows"] == "3"
    with pytest.raises(RegistryError, match="reserved"):
        registry.set_alias("latest", version)  # MLflow's own error, as an OrchError
    # orch's MLflow settings last only as long as its calls
    assert {key: os.environ.get(key) for key in scoped} == env_before
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"


# --- orch ui ------------------------------------------------------------------------------


def test_ui_no_serve(server, tmp_path):
    missing = runner.invoke(app, ["ui", "--run-dir", str(tmp_path), "--no-serve"])
    assert missing.exit_code == 2, missing.output
    lines = [line for line in missing.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "no MLflow store" in lines[0], missing.output
    absent = runner.invoke(app, ["ui", "--run-dir", str(tmp_path / "nope")])
    assert absent.exit_code == 2 and "no such directory" in absent.output

    run_dir = server.run_dir
    assert run_dir is not None
    shown = runner.invoke(app, ["ui", "--run-dir", str(run_dir), "--no-serve"])
    assert shown.exit_code == 0, shown.output
    assert f"sqlite:///{store_paths(run_dir)['db']}" in shown.output
    assert f"served at {server.url}/#/models" in shown.output
    # where the secret is, never the secret
    assert server.credentials is not None and server.credentials.path is not None
    login = f"login: user 'orch', password in {server.credentials.path}"
    assert login in shown.output and server.credentials.password not in shown.output
    # serving mode finds the live server and only prints its URL
    live = runner.invoke(app, ["ui", "--run-dir", str(run_dir)])
    assert live.exit_code == 0 and f"{server.url}/#/models" in live.output
    assert login in live.output and server.credentials.password not in live.output


@pytest.mark.timeout(120)
def test_ui_serves_until_interrupted(server, tmp_path):
    # a copy of the module's store that no server is serving
    assert server.run_dir is not None
    paths = store_paths(tmp_path)
    paths["root"].mkdir()
    with (
        sqlite3.connect(store_paths(server.run_dir)["db"]) as src,
        sqlite3.connect(paths["db"]) as dst,
    ):
        src.backup(dst)
    cmd = [sys.executable, "-m", "orchestrator.cli", "ui", "--run-dir", str(tmp_path)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 90
        url = None
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            match = re.search(r"MLflow UI: (http://127\.0\.0\.1:\d+)/#/models", line)
            url = match.group(1) if match else None
        assert url is not None, f"no URL printed (exit {proc.poll()}): {proc.stderr.read()}"
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            assert response.status == 200
        info = json.loads(paths["info"].read_text())
        assert info["url"] == url
        # the copied store got a secret of its own; the UI takes it and nothing else
        credentials = read_credentials(tmp_path)
        assert credentials is not None and credentials.path == paths["credentials"]
        assert info["credentials"] == str(paths["credentials"]) and info["username"] == "orch"
        assert auth_error(url, credentials) is None
        assert auth_error(url, None) == "HTTP 401"
        login = lines.get(timeout=30)
        assert login.strip() == f"login: user 'orch', password in {paths['credentials']} " + (
            "(readable by you only)"
        )
        procs = server_processes(info["pid"])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
        assert_gone(procs)
        assert not paths["info"].exists()
        shown = proc.stderr.read() + "".join(lines.queue)
        assert credentials.password not in shown + paths["log"].read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
