"""``orch deploy`` for a Globus site: the deployment task and the probe as they reach the service.

The stand-in service of test_site_globus.py answers the SDK's HTTP calls but has no result
stream, so nothing comes back: these tests check what was sent (the SDK's own request, decoded)
and that a site which never answers is reported, in one line, within the bounded wait.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest
from test_site_globus import (  # noqa: F401 - fixtures
    ENDPOINT_ID,
    FUNCTION_ID,
    FakeGlobus,
    creds,
    decode_buffers,
    fake,
)

from orchestrator.apps.images import ensure_image
from orchestrator.apps.probe import probe
from orchestrator.config.sites import SiteConfig
from orchestrator.containers import deploy

pytestmark = [pytest.mark.container, pytest.mark.timeout(120)]

USER_CONFIG = {
    "worker_init": "module load apptainer",
    "account": "chem",
    "provider": "PBSProProvider",
}


def globus_config(mode: str) -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "name": "polaris",
            "kind": "cpu",
            "backend": "globus",
            "capacity": 4,
            "endpoint_id": str(ENDPOINT_ID),
            "http_timeout": 2.0,
            "user_endpoint_config": USER_CONFIG,
            "container": {"image": "/eagle/chem/sim.sif", "recipe": "sim.def", "mode": mode},
        }
    )


def submitted(fake: FakeGlobus) -> list[tuple[dict[str, Any], tuple, dict]]:  # noqa: F811
    """Each submitted batch's settings, and its one task's (fn, args, kwargs)."""
    out = []
    for request in fake.requests:
        if request.path == f"/v3/endpoints/{ENDPOINT_ID}/submit":
            batch = request.json()
            (payload,) = batch["tasks"][FUNCTION_ID]
            (call_args, _) = decode_buffers(payload)
            fn, args, kwargs, _context = call_args
            out.append((batch, (fn, *args), kwargs))
    return out


def test_the_deployment_task_runs_outside_the_image_and_carries_the_recipe(
    tmp_path: Path,
    fake: FakeGlobus,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(deploy, "IMAGE_TIMEOUT_S", 3.0)
    config = globus_config("workers")
    result = deploy.deploy_site(config, tmp_path / "sites")
    # The stand-in never returns a result: reported in one line within the bounded wait
    assert not result.ok
    (problem,) = result.problems
    assert "the deployment task: no answer within 3 s" in problem and "\n" not in problem
    (batch, call, kwargs) = submitted(fake)[0]
    # the endpoint's container wrapper is switched off for this task, the rest is the site's
    assert batch["user_endpoint_config"] == {**USER_CONFIG, "container": False}
    fn, runtime, image = call
    assert fn is ensure_image and (runtime, image) == ("apptainer", "/eagle/chem/sim.sif")
    assert kwargs["build"] == [
        "apptainer", "build", "--fakeroot", "/eagle/chem/sim.sif", "containers/sim.def",
    ]  # fmt: skip
    assert kwargs["pull"] is None
    with tarfile.open(fileobj=io.BytesIO(kwargs["sources"]), mode="r:gz") as tar:
        names = set(tar.getnames())
    assert {"containers/sim.def", "containers/pins.txt", "orchestrator/apps/probe.py"} <= names
    assert not any("__pycache__" in n for n in names)
    assert not (tmp_path / "sites" / "deploy" / "polaris" / "record.json").exists()


@pytest.mark.parametrize("mode", ["workers", "exec"])
def test_the_probe_runs_in_the_image_on_the_site(
    tmp_path: Path,
    fake: FakeGlobus,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    monkeypatch.setattr(deploy, "PROBE_TIMEOUT_S", 2.0)
    config = globus_config(mode)
    with pytest.raises(RuntimeError, match="the probe: no answer within 2 s"):
        deploy._probe_step(config, tmp_path)
    ((batch, call, kwargs),) = submitted(fake)
    # the probe goes to the same user endpoint as the campaign's tasks (container on)
    assert batch["user_endpoint_config"] == USER_CONFIG
    fn, prefix = call
    assert fn is probe and kwargs == {}
    if mode == "workers":
        assert prefix is None  # the worker itself runs in the image
    else:  # exec mode: the task starts the probe in the image on the site's host
        assert prefix == [
            "apptainer", "exec", "--cleanenv", "--env", "PYTHONNOUSERSITE=1",
            "/eagle/chem/sim.sif",
        ]  # fmt: skip


def test_endpoint_files_are_written_for_the_sites_owner(tmp_path: Path) -> None:
    from orchestrator.containers.endpoint import check_endpoint_files, write_endpoint_files

    folder = tmp_path / "endpoint"
    written = write_endpoint_files(globus_config("workers"), folder)
    assert sorted(p.name for p in written) == [
        "config.yaml", "user_config_schema.json", "user_config_template.yaml.j2",
    ]  # fmt: skip
    rendered = check_endpoint_files(folder)
    assert "container_type: custom" in rendered and "/eagle/chem/sim.sif" in rendered
    assert "container_type" not in check_endpoint_files(folder, {"container": False})


def test_the_example_sites_get_endpoint_files_the_endpoint_loads(tmp_path: Path) -> None:
    from orchestrator.config.sites import load_sites
    from orchestrator.containers.endpoint import check_endpoint_files, write_endpoint_files

    examples = Path(__file__).resolve().parents[1] / "sites" / "examples"
    for config in load_sites(examples):
        folder = tmp_path / config.name
        write_endpoint_files(config, folder)
        rendered = check_endpoint_files(folder)
        assert config.container is not None
        assert ("container_type: custom" in rendered) == (config.container.mode == "workers")


# --- MPI sites: a GlobusMPIEngine ---------------------------------------------------------------

MPI_USER_CONFIG = {
    "provider": "PBSProProvider",
    "account": "chem",
    "queue": "debug",
    "walltime": "01:00:00",
    "worker_init": "module load apptainer",
    "address": "127.0.0.1",
}


def mpi_config(launcher: str, **fields: Any) -> SiteConfig:
    data: dict[str, Any] = {
        "name": "polaris-mpi",
        "kind": "cpu",
        "backend": "globus",
        "capacity": 4,
        "endpoint_id": str(ENDPOINT_ID),
        "user_endpoint_config": MPI_USER_CONFIG,
        "mpi": {"launcher": launcher, "options": "--cpu-bind depth"},
        "container": {"image": "/eagle/chem/sim.sif", "mode": "exec"},
    }
    data.update(fields)
    return SiteConfig.model_validate(data)


@pytest.mark.parametrize(
    ("launcher", "parsl_launcher"),
    [("mpiexec", "mpiexec"), ("openmpi", "mpiexec"), ("srun", "srun"), ("aprun", "aprun")],
)
def test_an_mpi_site_gets_a_globus_mpi_engine_the_endpoint_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, launcher: str, parsl_launcher: str
) -> None:
    import threading

    import psutil
    from globus_compute_endpoint.endpoint.config.utils import load_config_yaml
    from globus_compute_endpoint.engines import GlobusMPIEngine
    from parsl.launchers import SimpleLauncher

    from orchestrator.containers.endpoint import check_endpoint_files, write_endpoint_files

    # No batch job here: loading must not need the scheduler's node list.
    for var in ("PBS_NODEFILE", "SLURM_NODELIST", "SLURM_JOB_NODELIST", "COBALT_NODEFILE"):
        monkeypatch.delenv(var, raising=False)
    config = mpi_config(launcher)
    folder = tmp_path / "endpoint"
    write_endpoint_files(config, folder)
    threads_before = set(threading.enumerate())
    rendered = check_endpoint_files(folder)
    user = load_config_yaml(rendered)  # what the user endpoint process loads
    try:
        engine = user.engine
        assert type(engine) is GlobusMPIEngine
        executor = engine.executor
        assert type(executor).__name__ == "MPIExecutor"
        assert executor.mpi_launcher == parsl_launcher
        assert executor.max_workers_per_block == config.capacity
        provider = executor.provider
        assert type(provider).__name__ == "PBSProProvider"
        assert isinstance(provider.launcher, SimpleLauncher)
        assert provider.nodes_per_block == config.capacity
        # The non-MPI template's provider settings are kept.
        assert provider.account == "chem" and provider.queue == "debug"
        assert provider.walltime == "01:00:00"
        assert provider.worker_init == "module load apptainer"
        assert (provider.init_blocks, provider.min_blocks, provider.max_blocks) == (1, 0, 1)
        # HTEX-only keys are not written (MPIExecutor refuses them); exec mode: no wrapper.
        for key in ("max_workers_per_node", "available_accelerators", "container_type"):
            assert key not in rendered
        # Loading built objects and started nothing.
        assert executor.interchange_proc is None
        assert psutil.Process().children(recursive=True) == []
        assert [t for t in threading.enumerate() if t not in threads_before] == []
    finally:
        user.engine.shutdown()


def test_an_mpi_site_with_several_batch_jobs_runs_one_task_per_node_of_each(
    tmp_path: Path,
) -> None:
    from globus_compute_endpoint.endpoint.config.utils import load_config_yaml

    from orchestrator.containers.endpoint import check_endpoint_files, write_endpoint_files

    values = {**MPI_USER_CONFIG, "nodes_per_block": 2, "max_blocks": 2}
    config = mpi_config("srun", user_endpoint_config=values)
    write_endpoint_files(config, tmp_path / "endpoint")
    user = load_config_yaml(check_endpoint_files(tmp_path / "endpoint", values))
    try:
        assert user.engine.executor.max_workers_per_block == 2
        assert user.engine.executor.provider.nodes_per_block == 2
    finally:
        user.engine.shutdown()


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("launcher", "MpiExecLauncher", "SimpleLauncher"),
        ("max_workers_per_node", 2, "max_workers_per_block"),
        ("available_accelerators", ["0"], "does not pin"),
    ],
)
def test_an_mpi_site_refuses_the_htex_only_variables(name: str, value: Any, hint: str) -> None:
    from orchestrator.containers.endpoint import endpoint_files
    from orchestrator.exceptions import ConfigError

    config = mpi_config("mpiexec", user_endpoint_config={**MPI_USER_CONFIG, name: value})
    with pytest.raises(ConfigError, match=f"user_endpoint_config.{name}: .*{hint}"):
        endpoint_files(config)


def test_a_site_without_mpi_keeps_the_globus_compute_engine(tmp_path: Path) -> None:
    from globus_compute_endpoint.endpoint.config.utils import load_config_yaml
    from globus_compute_endpoint.engines import GlobusComputeEngine

    from orchestrator.containers.endpoint import check_endpoint_files, write_endpoint_files

    config = globus_config("exec")
    write_endpoint_files(config, tmp_path / "endpoint")
    rendered = check_endpoint_files(tmp_path / "endpoint")
    assert "GlobusMPIEngine" not in rendered and "max_workers_per_block" not in rendered
    user = load_config_yaml(rendered)
    try:
        assert type(user.engine) is GlobusComputeEngine
        assert user.engine.max_workers_per_node == config.capacity
    finally:
        user.engine.shutdown()
    # max_workers_per_block is an MPI site's variable only.
    from orchestrator.containers.endpoint import endpoint_files
    from orchestrator.exceptions import ConfigError

    other = globus_config("exec").model_copy(
        update={"user_endpoint_config": {**USER_CONFIG, "max_workers_per_block": 2}}
    )
    with pytest.raises(ConfigError, match="max_workers_per_block"):
        endpoint_files(other)
