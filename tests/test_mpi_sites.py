"""MPI sites on the real engine: nodes allotted per task, placement by slots, refusals.

A local site with ``mpi:`` runs Globus Compute's MPI engine (Parsl's ``MPIExecutor``) over a
node list made for this machine. These tests name the nodes (``node-a``, ``node-b``) so that
which task got which node can be read back: Python tasks need no real host behind a name.
Occupancy is checked from the workers' own start and end times of each task.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apps_for_tests import hold_until, nap, nodes_given, resources_seen
from conftest import TESTS_DIR

from orchestrator.config.sites import SiteConfig
from orchestrator.dispatch import Method, MethodRegistry
from orchestrator.dispatch.journal import Journal
from orchestrator.exceptions import ConfigError
from orchestrator.models import Result
from orchestrator.resources import Resources
from orchestrator.runner import Session, open_session

pytestmark = [pytest.mark.mpi, pytest.mark.slow, pytest.mark.timeout(300)]

METHODS = MethodRegistry(
    [Method(nodes_given), Method(nap), Method(resources_seen), Method(hold_until)]
)
TOPICS = {"nodes_given", "nap", "resources_seen", "hold_until"}
NODES = ["node-a", "node-b"]


def _session(run_dir: Path, config: SiteConfig) -> Session:
    run_dir.mkdir(parents=True, exist_ok=True)
    return open_session(
        [config], METHODS, TOPICS, run_dir, extra_paths=[str(TESTS_DIR)], journal=Journal(run_dir)
    )


@pytest.fixture(scope="module")
def mpi(tmp_path_factory) -> Iterator[Session]:
    """One MPI site of two named nodes for the whole module (an engine start is seconds)."""
    config = SiteConfig(
        name="mpi",
        kind="cpu",
        backend="local",
        capacity=2,
        mpi={"launcher": "openmpi", "nodes": NODES, "ranks_per_node": 2},
    )
    with _session(tmp_path_factory.mktemp("mpi") / "run", config) as session:
        yield session


def _results(session: Session, topic: str, n: int) -> list[Result]:
    return [session.queues.get_result(topic, timeout=120) for _ in range(n)]


def _busiest(results: list[Result], size) -> int:
    """Most slots in use at once, from the workers' start/end times of each task."""
    edges = []
    for r in results:
        assert r.timestamps.started is not None and r.timestamps.finished is not None
        edges.append((r.timestamps.started, 1, size(r)))
        edges.append((r.timestamps.finished, 0, -size(r)))  # an end sorts before a start
    busy = most = 0
    for _, _, delta in sorted(edges):
        busy += delta
        most = max(most, busy)
    return most


def test_a_two_node_task_waits_for_both_nodes(mpi: Session, tmp_path: Path) -> None:
    release = tmp_path / "release"  # the 1-node task runs until the file is there
    first = mpi.queues.send_inputs(str(release), method="hold_until", topic="hold_until")
    wide = mpi.queues.send_inputs(
        0.1, method="nodes_given", topic="nodes_given", resources={"nodes": 2}
    )
    # held in orch while one of the two nodes is busy (placement runs inside send_inputs)
    assert mpi.dispatcher.waiting("cpu") == 1
    release.touch()
    (one,) = _results(mpi, "hold_until", 1)
    (two,) = _results(mpi, "nodes_given", 1)
    mpi.journal.flush()
    with sqlite3.connect(mpi.run_dir / "journal.sqlite") as db:
        states = [
            state
            for (state,) in db.execute(
                "SELECT state FROM events WHERE task_id = ? ORDER BY seq", (wide,)
            )
        ]
    assert states[:3] == ["created", "waiting", "sent"], states
    assert (one.task_id, two.task_id) == (first, wide)
    assert one.success and two.success, (one.failure_info, two.failure_info)
    assert len(one.value) == 1 and sorted(two.value) == NODES
    assert two.timestamps.started >= one.timestamps.finished
    assert two.granted is not None and two.granted.nodes == 2
    assert sorted(two.granted.hosts) == NODES
    print(
        f"2-node task started {two.timestamps.started - one.timestamps.finished:.3f} s "
        "after the 1-node task ended"
    )


def test_tasks_of_mixed_sizes_never_overfill_the_nodes(mpi: Session) -> None:
    sizes = [2, 1, 1, 2, 1, 1, 1, 2, 1]
    for nodes in sizes:
        mpi.queues.send_inputs(
            0.3, method="nodes_given", topic="nodes_given", resources={"nodes": nodes}
        )
    results = _results(mpi, "nodes_given", len(sizes))
    assert all(r.success for r in results), [r.failure_info for r in results if not r.success]
    assert sorted(len(r.value) for r in results) == sorted(sizes)
    assert _busiest(results, lambda r: r.resources.nodes) <= 2
    # Tasks that overlapped in time were given different nodes
    for a in results:
        for b in results:
            if a is not b and a.timestamps.started < b.timestamps.finished <= a.timestamps.finished:
                assert not set(a.value) & set(b.value), (a.value, b.value)
    print(f"busiest: {_busiest(results, lambda r: r.resources.nodes)} of 2 nodes")


def test_a_task_bigger_than_every_site_is_refused_and_the_campaign_goes_on(mpi: Session) -> None:
    q = mpi.queues
    q.send_inputs(0.0, method="nodes_given", topic="nodes_given", resources={"nodes": 3})
    q.send_inputs(0.0, method="nodes_given", topic="nodes_given", resources={"ranks_per_node": 4})
    q.send_inputs(0.0, method="nodes_given", topic="nodes_given", resources={"nodes": "two"})
    q.send_inputs(0.0, method="nodes_given", topic="nodes_given")
    results = _results(mpi, "nodes_given", 4)
    refused = [r for r in results if not r.success]
    assert len(refused) == 3 and all(r.failure_info.reason == "bad_input" for r in refused)
    messages = sorted(r.failure_info.message for r in refused)
    assert any("has 2 node(s); the task asks for 3" in m for m in messages), messages
    assert any("2 core(s) per node" in m for m in messages), messages
    assert any(m.startswith("resources: nodes:") and "whole number" in m for m in messages)
    assert [r.success for r in results].count(True) == 1
    for m in messages:
        print(m)


def test_the_live_table_counts_slots_not_tasks(mpi: Session, tmp_path: Path) -> None:
    from rich.console import Console

    from orchestrator.progress import site_table

    release = tmp_path / "release"  # the task runs until the file is there
    mpi.queues.send_inputs(
        str(release), method="hold_until", topic="hold_until", resources={"nodes": 2}
    )
    stats = mpi.dispatcher.stats["mpi"]
    deadline = time.monotonic() + 60
    while stats.in_flight != 1:  # sent: one task in flight, holding both nodes
        assert time.monotonic() < deadline, "the task was not sent"
        time.sleep(0.01)
    snapshot = mpi.dispatcher.snapshot()["sites"]["mpi"]
    console = Console(width=200, record=True)
    console.print(site_table(mpi))
    row = next(line for line in console.export_text().splitlines() if "│ mpi" in line)
    release.touch()
    (result,) = _results(mpi, "hold_until", 1)
    assert result.success and sorted(result.value) == NODES
    assert (snapshot["in_flight"], snapshot["slots_used"], snapshot["running"]) == (1, 2, 2)
    assert "2/2" in row, row


def test_the_worker_sees_the_resources_of_its_task(mpi: Session) -> None:
    mpi.queues.send_inputs(
        method="resources_seen", topic="resources_seen", resources=Resources(nodes=2, ranks=3)
    )
    (result,) = _results(mpi, "resources_seen", 1)
    assert result.value == {
        "nodes": 2,
        "ranks_per_node": 2,
        "ranks": 3,
        "threads_per_rank": 1,
        "gpus_per_rank": 0,
    }


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec (apt: openmpi-bin)")
def test_the_codes_on_two_ranks_through_the_mpi_site_match_one_rank(tmp_path: Path) -> None:
    """The whole path: send_inputs(resources=) -> MPI engine -> wrapper -> mpiexec -> code.

    Inputs and tolerances are test_sim_mpi's (the reasons are given there). Each result's
    ``ranks`` is read from the code's own output; ``granted`` is what the worker was given.
    """
    from ase.build import molecule
    from test_sim_mpi import CP2K_FAST, ENERGY_TOLERANCE, LJ, LJ_TOLERANCE, h2

    from orchestrator.apps.sim.cp2k import cp2k_energy
    from orchestrator.apps.sim.lammps import lammps_md
    from orchestrator.apps.sim.nwchem import nwchem_energy

    config = SiteConfig(
        name="codes", kind="cpu", backend="local", capacity=2, mpi={"launcher": "openmpi"}
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    calls = {
        "lammps_md": ((), LJ, "potential_energy", LJ_TOLERANCE),
        "cp2k_energy": ((h2(),), CP2K_FAST, "energy_hartree", ENERGY_TOLERANCE),
        "nwchem_energy": ((molecule("H2O"),), {"basis": "sto-3g"}, "energy_hartree",
                          ENERGY_TOLERANCE),
    }  # fmt: skip
    asks = {"1 rank": {"ranks": 1}, "2 ranks": {"ranks": 2}, "2 nodes": {"nodes": 2}}
    methods = MethodRegistry([Method(lammps_md), Method(cp2k_energy), Method(nwchem_energy)])
    sent: dict[tuple[str, str], str] = {}
    with open_session(
        [config], methods, {"sim"}, run_dir, extra_paths=[str(TESTS_DIR)],
        journal=Journal(run_dir),
    ) as s:  # fmt: skip
        for name, (args, kwargs, _, _) in calls.items():
            for label, ask in asks.items():
                if name != "lammps_md" and label == "2 nodes":
                    continue
                sent[(name, label)] = s.queues.send_inputs(
                    *args, method=name, topic="sim", resources=ask, **kwargs
                )
        by_id = {r.task_id: r for r in _results(s, "sim", len(sent))}
    got = {key: by_id[task_id] for key, task_id in sent.items()}
    for (name, label), result in got.items():
        assert result.success, (name, label, result.failure_info)
        ranks, nodes = (1, 1) if label == "1 rank" else (2, 2 if label == "2 nodes" else 1)
        assert result.value.ranks == ranks, (name, label)
        assert result.granted is not None
        assert (result.granted.ranks, result.granted.nodes) == (ranks, nodes), (name, label)
    for name, (_, _, field, tolerance) in calls.items():
        base = getattr(got[(name, "1 rank")].value, field)
        for label in ("2 ranks", "2 nodes"):
            if (name, label) in got:
                other = getattr(got[(name, label)].value, field)
                assert abs(other - base) <= tolerance, (name, label, other, base)
                print(f"{name} {label}: {field} {other!r} vs 1 rank {base!r}")


def test_a_site_without_mpi_counts_cores(tmp_path: Path) -> None:
    config = SiteConfig(name="cores", kind="cpu", backend="local", capacity=2)
    sizes = [2, 1, 1, 2, 1, 1, 2]
    with _session(tmp_path / "run", config) as s:
        for ranks in sizes:
            s.queues.send_inputs(0.3, ranks, method="nap", topic="nap", resources={"ranks": ranks})
        s.queues.send_inputs(0.0, 0, method="nap", topic="nap", resources={"nodes": 2})
        results = _results(s, "nap", len(sizes) + 1)
    ran = [r for r in results if r.success]
    assert sorted(r.value for r in ran) == sorted(sizes)
    assert _busiest(ran, lambda r: r.resources.total_ranks) <= 2
    (refused,) = [r for r in results if not r.success]
    assert refused.failure_info.reason == "bad_input"
    assert "has no `mpi:` launcher" in refused.failure_info.message


def test_a_method_with_a_bad_resource_default_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"method nap: resources: ranks: .*whole number"):
        Method(nap, resources={"ranks": 0})
    with pytest.raises(ConfigError, match=r"not a resource field; use some of: nodes"):
        Method(nap, resources={"cores": 2})
    assert Method(nap, resources={"node_count": 2}).resources.nodes == 2


@pytest.mark.skipif(shutil.which("mpiexec") is None, reason="no mpiexec (apt: openmpi-bin)")
def test_site_yaml_mpi_errors_name_the_field(tmp_path: Path) -> None:
    from orchestrator.config.sites import load_sites

    cases = {
        "launcher: slurm": "mpi.launcher",
        "launcher: srun": "mpi.launcher: srun needs its batch system",
        "launcher: openmpi\n  nodes: [a]": "mpi.nodes: lists 1 node(s) but capacity is 2",
        "launcher: openmpi\n  ranks: 2": "mpi.ranks",
    }
    for body, expected in cases.items():
        folder = tmp_path / str(abs(hash(body)))
        folder.mkdir()
        (folder / "m.yaml").write_text(
            f"name: m\nkind: cpu\nbackend: local\ncapacity: 2\nmpi:\n  {body}\n"
        )
        with pytest.raises(ConfigError) as err:
            load_sites(folder)
        assert expected in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
        print(err.value)
