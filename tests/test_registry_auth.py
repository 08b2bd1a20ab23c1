"""Shared machines: an embedded MLflow server takes only the run's secret, orch's clients send
it, and it shows nowhere else; logging is idempotent by task id; ``--tracking-uri`` is checked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import REPO, read_results
from mlflow import MlflowClient
from test_cli import launch
from torch import nn

from orchestrator.exceptions import ConfigError
from orchestrator.registry import (
    Credentials,
    ModelRegistry,
    RegistryError,
    TrackingServer,
    store_paths,
    validate_tracking_uri,
)
from orchestrator.registry.server import AUTH_PROBE, auth_error

SECRET_FILES = ("credentials", "basic_auth.ini")
"""The only files of a run directory that may hold the password."""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with TrackingServer(tmp_path_factory.mktemp("run")) as srv:
        yield srv


@pytest.fixture
def client(server, monkeypatch) -> MlflowClient:
    """A plain MLflow client that reads the run's secret as any other tool would."""
    assert server.credentials is not None
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.credentials.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.credentials.password)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def status(url: str, path: str, header: str | None = None) -> int:
    request = urllib.request.Request(url + path)
    if header is not None:
        request.add_header("Authorization", header)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def files_holding(root: Path, secret: str) -> list[Path]:
    """Files under ``root`` whose bytes contain ``secret``, except the two meant to hold it."""
    needle = secret.encode()
    return [
        path
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in SECRET_FILES and needle in path.read_bytes()
    ]


def model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))


# --- the server takes the run's secret and nothing else ---------------------------------


def test_requests_without_the_secret_are_refused(server):
    credentials = server.credentials
    assert server.run_dir is not None and credentials is not None
    paths = store_paths(server.run_dir)
    assert credentials.path == paths["credentials"] and credentials.username == "orch"
    for name in ("credentials", "auth_ini", "auth_db"):
        assert paths[name].stat().st_mode & 0o777 == 0o600, name
    assert credentials.password not in repr(credentials) + repr(server)
    assert len(credentials.password) >= 32

    url = server.url
    wrong = Credentials(credentials.username, credentials.password[:-1] + "x")
    assert status(url, "/health") == 200  # MLflow serves it without auth (liveness only)
    assert status(url, AUTH_PROBE) == 401
    assert status(url, AUTH_PROBE, wrong.header()) == 401
    assert status(url, AUTH_PROBE, Credentials("admin", credentials.password).header()) == 401
    assert status(url, AUTH_PROBE, credentials.header()) == 200
    assert status(url, "/ajax-api/2.0/mlflow/registered-models/search") == 401  # the UI's API
    assert status(url, "/") == 401  # the UI itself
    assert status(url, "/api/2.0/mlflow-artifacts/artifacts") == 401
    assert auth_error(url, credentials) is None and auth_error(url, wrong) == "HTTP 401"

    # orch's own client: refused with wrong credentials (naming them), and without any
    with pytest.raises(RegistryError, match="refuses the credentials"):
        ModelRegistry(url, "anything", credentials=wrong)
    anonymous = ModelRegistry(url, "anything")
    with pytest.raises(RegistryError, match="401"):
        anonymous.versions()


def test_logging_sends_the_secret_and_leaks_it_nowhere(server, client, monkeypatch):
    credentials = server.credentials
    assert credentials is not None and server.run_dir is not None
    # the caller's MLflow credentials for some other server are neither sent nor disturbed
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone-else")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "for-another-server")
    env_before = dict(os.environ)
    registry = ModelRegistry(server, "leak-check")
    info = registry.log_training(
        model(), {"width": 4}, {"val_rmse": 0.5}, tags={"campaign": "t"}, task_id="task-1"
    )
    assert registry.promote(info.version)
    assert isinstance(registry.load("champion"), nn.Module)
    registry.log_lineage(info.version, [{"task_id": "sim-1", "smiles": "CCO"}])
    assert dict(os.environ) == env_before  # nothing of orch's stays in the environment
    assert credentials.password not in "".join(os.environ.values())

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", credentials.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", credentials.password)
    run = client.get_run(info.run_id)
    assert run.data.tags["orch.task_id"] == "task-1"
    shown = json.dumps([run.data.params, run.data.tags, registry.versions()[0].tags], default=str)
    assert credentials.password not in shown
    paths = store_paths(server.run_dir)
    assert credentials.password not in paths["log"].read_text()
    assert credentials.password not in paths["info"].read_text()
    assert json.loads(paths["info"].read_text())["credentials"] == str(paths["credentials"])
    assert files_holding(server.run_dir, credentials.password) == []


def test_the_secret_goes_to_its_own_server_only(server):
    from requests import Request

    from orchestrator.registry.models import _ServerAuth

    assert server.credentials is not None
    auth = _ServerAuth(server.url + "/", server.credentials)
    own = auth(Request("GET", server.url + AUTH_PROBE).prepare())
    assert own.headers["Authorization"] == server.credentials.header()
    for other in ("http://mlflow.example.org/api/2.0/x", "http://127.0.0.1:1/api", "http://x/"):
        assert "Authorization" not in auth(Request("GET", other).prepare()).headers, other


# --- exactly once, by task id -------------------------------------------------------------


def test_log_training_is_idempotent_by_task_id(server, client):
    registry = ModelRegistry(server, "idempotent", experiment="idempotent-runs")
    first = registry.log_training(model(), {"width": 4}, {"val_rmse": 0.3}, task_id="train-1")
    assert registry.promote(first.version) is True
    # the same task again (a result replayed after --resume): its version, nothing new
    again = registry.log_training(model(), {"width": 4}, {"val_rmse": 0.1}, task_id="train-1")
    assert (again.version, again.run_id) == (first.version, first.run_id)
    assert again.metrics == {"val_rmse": 0.3}
    assert registry.promote(again.version) is False  # the alias does not move again
    # campaigns that only tag the task id (provenance tags) get the same guarantee
    tagged = {"orch.task_id": "train-2", "orch.site": "local-gpu"}
    second = registry.log_training(model(), {"width": 4}, {"val_rmse": 0.2}, tags=tagged)
    assert registry.log_training(model(), {}, {"val_rmse": 0.9}, tags=tagged) == second

    # a run that a crash left without a version is retired, and the task logged afresh
    experiment = client.get_experiment_by_name("idempotent-runs")
    assert experiment is not None
    crashed = client.create_run(experiment.experiment_id, tags={"orch.task_id": "train-3"})
    third = registry.log_training(model(), {"width": 4}, {"val_rmse": 0.4}, task_id="train-3")
    assert client.get_run(crashed.info.run_id).info.lifecycle_stage == "deleted"

    versions = registry.versions()
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.tags["orch.task_id"] for v in versions] == ["train-1", "train-2", "train-3"]
    assert [v.run_id for v in versions] == [first.run_id, second.run_id, third.run_id]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["orch.task_id"] for r in runs) == ["train-1", "train-2", "train-3"]
    assert registry.alias_version("champion") == 1  # where the first promotion put it
    with pytest.raises(RegistryError, match="quotes"):
        registry.log_training(model(), {}, {"val_rmse": 0.1}, task_id="x' OR '1'='1")


# --- the secret survives restarts; the server dies with orch ---------------------------------


@pytest.mark.timeout(180)
def test_server_dies_with_orch_after_kill_9_and_restarts_with_the_same_secret(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from orchestrator.registry import TrackingServer
        server = TrackingServer({str(tmp_path)!r}).start()
        print(server.pid, flush=True)
        sys.stdin.read()
        """
    )
    orch = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert orch.stdout is not None
        line = orch.stdout.readline()
        assert line.strip().isdigit(), f"no server pid (exit {orch.poll()})"
        root = psutil.Process(int(line))
        group = [root, *root.children(recursive=True)]  # watcher, mlflow, uvicorn
        assert len(group) >= 3, [" ".join(p.cmdline())[:80] for p in group]
        first = store_paths(tmp_path)["credentials"].read_text()
        orch.send_signal(signal.SIGKILL)
        orch.wait(timeout=30)
        _, alive = psutil.wait_procs(group, timeout=30)
        assert not alive, [" ".join(p.cmdline())[:80] for p in alive]
    finally:
        if orch.poll() is None:
            orch.kill()
            orch.wait()

    with TrackingServer(tmp_path) as again:  # --resume / orch ui: same store, same secret
        assert store_paths(tmp_path)["credentials"].read_text() == first
        assert again.credentials is not None
        assert auth_error(again.url, again.credentials) is None


# --- --tracking-uri --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("localhost:5000", "no scheme"),
        ("http//127.0.0.1:5000", "no scheme"),
        ("htp://127.0.0.1:5000", "unknown scheme 'htp'"),
        ("http://", "no host"),
        ("http://127.0.0.1:50x0", "port"),
        ("http://127.0.0.1:99999", "port"),
        ("http://me:hunter2@127.0.0.1:5000", "credentials in the URI"),
        ("http://127.0.0.1:5000/?x=1", "no ?query"),
        ("sqlite://", "no path"),
        ("http://127.0.0.1 :5000", "spaces"),
        ("", "empty"),
    ],
)
def test_malformed_tracking_uri_is_one_config_line(uri, problem):
    with pytest.raises(ConfigError) as caught:
        TrackingServer.external(uri)
    message = str(caught.value)
    assert message.startswith("--tracking-uri ") and problem in message and "; " in message
    assert "\n" not in message and "hunter2" not in message


def test_good_tracking_uris_are_used_as_they_are():
    for uri in ("http://127.0.0.1:5000/", "https://mlflow.example.org", "sqlite:///x.db"):
        external = TrackingServer.external(uri)
        assert external.url == uri.rstrip("/") and external.credentials is None
    assert validate_tracking_uri("postgresql+psycopg2://db.example.org/mlflow")
    assert validate_tracking_uri("databricks") == "databricks"


# --- a campaign run, from the command line -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_campaign_run_shows_the_secret_nowhere(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    options = ["policy=batch", "budget=8", "retrain_every=4", "pool_size=40", "epochs=3"]
    done = launch("molecular-design", run_dir, "--no-progress", *[f"-o{o}" for o in options])
    assert done.returncode == 0, done.stderr
    credentials = store_paths(run_dir)["credentials"].read_text()
    password = credentials.split("mlflow_tracking_password = ")[1].split()[0]
    assert password not in done.stdout + done.stderr
    assert files_holding(run_dir, password) == []  # log, journal, results, plots, summary

    trains = read_results(run_dir, "train")
    with TrackingServer(run_dir) as server:
        assert server.credentials is not None and server.credentials.password == password
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.credentials.username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        client = MlflowClient(tracking_uri=server.url, registry_uri=server.url)
        experiment = client.get_experiment_by_name("molecular-design-ip")
        assert experiment is not None
        runs = client.search_runs([experiment.experiment_id])
        assert len(runs) == len(trains) >= 2
        assert {r.data.tags["orch.task_id"] for r in runs} == {t["task_id"] for t in trains}
        for run in runs:
            assert password not in json.dumps([run.data.params, run.data.tags])
