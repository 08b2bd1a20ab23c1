"""LAMMPS, CP2K and NWChem on 2 MPI ranks (Debian's Open MPI) give their 1-rank answers.

Each wrapper is called directly under a task context, as a site's worker runs it: resources
with 1 or 2 ranks, and an ``openmpi`` site's ``mpi`` entry. Every test also checks the rank
count the code itself printed (the results' ``ranks``), so a run that silently fell back to
one process (a singleton, a wrong launch line) fails. About 15 s on 2 cores.
"""

from __future__ import annotations

import shutil

import pytest
from ase import Atoms
from ase.build import molecule

from orchestrator.apps.runtime import run_task, using_context
from orchestrator.apps.sim.cp2k import cp2k_energy
from orchestrator.apps.sim.lammps import lammps_md
from orchestrator.apps.sim.nwchem import nwchem_energy, nwchem_ip

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(
        shutil.which("mpiexec") is None,
        reason="no mpiexec: apt-get install openmpi-bin (Debian's codes are built on Open MPI)",
    ),
]

LOCAL = {"launcher": "openmpi", "options": "", "nodes": ["localhost"]}
"""A local site with one node (this machine)."""
TWO_NODES = {"launcher": "openmpi", "options": "", "nodes": ["localhost", "localhost"]}
"""A local site with two nodes, both shares of this machine (merged: ``--host localhost:2``)."""

LJ = {"setup": "lj", "steps": 200, "seed": 4242}
"""The 500-atom LJ liquid, 200 steps (1 τ)."""
LJ_TOLERANCE = 1e-8
"""|ΔE| allowed between rank counts (LJ units; |PE| ≈ 2800, so ~4e-12 relative).

Two ranks split the box in two: forces and energies are summed in another order, so the
trajectories differ by rounding that the chaotic dynamics amplify. Measured here (3 seeds,
2 ranks and 2 nodes x 1 rank against 1 rank; values printed with 15 digits, resolution 1e-11):
|ΔPE|, |ΔE_total| <= 1e-11 at 100 and 200 steps, <= 5e-11 at 500, ~1e-8 at 1000, ~2e-3 at
2000 and ~10 at 4000 (exponential growth). At 200 steps 1e-8 leaves a factor 1000 over the
measured difference yet catches any real difference in the run (velocities drawn per atom ID,
which create_atoms numbers per rank, made PE differ by ~1 after 100 steps).
"""
CP2K_FAST = {"basis": "SZV-MOLOPT-SR-GTH", "cutoff_ry": 200, "rel_cutoff_ry": 30, "eps_scf": 1e-8}
"""H2 in a 6 Å box, small basis and grid (~1.5 s): test_sim_cp2k's FAST settings."""
ENERGY_TOLERANCE = 1e-8
"""Hartree. Measured 1 vs 2 ranks: CP2K H2 1e-15, NWChem water SCF/sto-3g 0 (12 printed
decimals), IP job 0: the parallel sums only reorder terms far below the SCF threshold."""


def resources(nodes: int = 1, per_node: int = 1) -> dict[str, int]:
    return {
        "nodes": nodes,
        "ranks_per_node": per_node,
        "ranks": nodes * per_node,
        "threads_per_rank": 1,
        "gpus_per_rank": 0,
    }


def on(ranks: int, mpi: dict = LOCAL, nodes: int = 1) -> dict:
    """A task context asking for ``ranks`` ranks over ``nodes`` nodes of ``mpi``'s site."""
    return {"resources": resources(nodes, ranks // nodes), "mpi": mpi}


def h2() -> Atoms:
    return Atoms("H2", positions=[(3, 3, 2.63), (3, 3, 3.37)], cell=[6.0] * 3, pbc=True)


@pytest.fixture(autouse=True)
def _sim_root(sim_root, monkeypatch):
    """Run directories under the test's own folder; no MPI engine's leftover variables."""
    for name in ("PARSL_MPI_PREFIX", "PARSL_MPI_NODELIST"):
        monkeypatch.delenv(name, raising=False)
    return sim_root


def test_lammps_two_ranks_and_two_nodes_match_one_rank():
    with using_context(on(1)):
        one = lammps_md(**LJ)
    with using_context(on(2)):
        two = lammps_md(**LJ)
    with using_context(on(2, TWO_NODES, nodes=2)):  # 2 nodes x 1 rank, merged onto localhost
        spread = lammps_md(**LJ)
    assert (one.ranks, two.ranks, spread.ranks) == (1, 2, 2)
    for other in (two, spread):
        assert other.natoms == one.natoms == 500
        assert other.potential_energy == pytest.approx(one.potential_energy, abs=LJ_TOLERANCE)
        assert other.total_energy == pytest.approx(one.total_energy, abs=LJ_TOLERANCE)


def test_lammps_through_run_task_reports_what_it_got():
    record = run_task(lammps_md, (), {"setup": "lj", "steps": 0}, on(2))
    assert record["ok"] is True, record.get("failure")
    assert record["value"].ranks == 2
    assert record["granted"] == {
        "nodes": 1, "ranks": 2, "threads_per_rank": 1, "hosts": ["localhost"],
    }  # fmt: skip


def test_cp2k_two_ranks_match_one_rank():
    with using_context(on(1)):
        one = cp2k_energy(h2(), **CP2K_FAST)
    with using_context(on(2)):
        two = cp2k_energy(h2(), **CP2K_FAST)
    assert (one.ranks, two.ranks) == (1, 2)
    assert abs(two.energy_hartree - one.energy_hartree) <= ENERGY_TOLERANCE


def test_nwchem_two_ranks_match_one_rank():
    water = molecule("H2O")
    with using_context(on(1)):
        one = nwchem_energy(water, basis="sto-3g")
        one_ip = nwchem_ip(water, basis="sto-3g")
    with using_context(on(2)):
        two = nwchem_energy(water, basis="sto-3g")
        two_ip = nwchem_ip(water, basis="sto-3g")
    assert (one.ranks, two.ranks, one_ip.ranks, two_ip.ranks) == (1, 2, 1, 2)
    assert abs(two.energy_hartree - one.energy_hartree) <= ENERGY_TOLERANCE
    assert abs(two_ip.neutral_energy_hartree - one_ip.neutral_energy_hartree) <= ENERGY_TOLERANCE
    assert abs(two_ip.cation_energy_hartree - one_ip.cation_energy_hartree) <= ENERGY_TOLERANCE
