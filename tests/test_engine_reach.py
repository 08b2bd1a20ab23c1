"""Canaries for what orch changes of a Globus Compute engine before starting it (no engine is
started here): an upgrade that changes how the engine launches its processes fails these."""

from __future__ import annotations

import shlex
import sys

import pytest
from globus_compute_endpoint.engines import GlobusComputeEngine, GlobusMPIEngine
from parsl.providers import LocalProvider

from orchestrator.sites import htex
from orchestrator.sites.launchers import PrefixLauncher, PrefixSimpleLauncher


def _engine(cls: type, **options):
    launcher = PrefixSimpleLauncher([]) if cls is GlobusMPIEngine else PrefixLauncher([])
    return cls(
        address="127.0.0.1",
        encrypted=False,
        provider=LocalProvider(init_blocks=0, min_blocks=0, max_blocks=1, launcher=launcher),
        **options,
    )


@pytest.mark.parametrize(
    "cls, options",
    [(GlobusComputeEngine, {"max_workers_per_node": 2}), (GlobusMPIEngine, {})],
    ids=["htex", "mpi"],
)
def test_engines_launch_through_the_endpoint_cli_which_orch_bypasses(cls, options) -> None:
    engine = _engine(cls, **options)
    executor = engine.executor
    # What Globus Compute does today (globus-compute-endpoint 4.19): both through its CLI
    assert list(executor.interchange_launch_cmd) == [
        "globus-compute-endpoint",
        "python-exec",
        "parsl.executors.high_throughput.interchange",
    ]
    pool = executor.launch_cmd
    assert pool.startswith(
        "globus-compute-endpoint python-exec parsl.executors.high_throughput.process_worker_pool "
    )
    assert htex.launch_directly(engine) is True
    assert list(executor.interchange_launch_cmd) == [
        sys.executable,
        "-m",
        "parsl.executors.high_throughput.interchange",
    ]
    words = shlex.split(executor.launch_cmd)
    assert words[:3] == [
        sys.executable,
        "-m",
        "parsl.executors.high_throughput.process_worker_pool",
    ]
    assert words[3:] == shlex.split(pool)[3:]  # the pool's own arguments are untouched
    assert htex.launch_directly(engine) is False  # a second call changes nothing


def test_a_command_of_another_form_is_left_alone() -> None:
    engine = _engine(GlobusComputeEngine, max_workers_per_node=1)
    engine.executor.launch_cmd = "process_worker_pool.py --max_workers_per_node=1"
    before = list(engine.executor.interchange_launch_cmd)
    assert htex.launch_directly(engine) is False
    assert engine.executor.launch_cmd == "process_worker_pool.py --max_workers_per_node=1"
    assert list(engine.executor.interchange_launch_cmd) == before
