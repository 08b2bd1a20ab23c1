"""LAMMPS wrapper against the real ``lmp``: physics, failure classes, work directories."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from ase.build import bulk
from ase.io.lammpsdata import write_lammps_data
from ase.neighborlist import neighbor_list

from orchestrator.apps.runtime import run_task
from orchestrator.apps.sim.common import (
    BAD_INPUT,
    BINARY_MISSING,
    CODE_ERROR,
    NONZERO_EXIT,
    OUTPUT_MISSING,
    WALLTIME,
    SimulationError,
)
from orchestrator.apps.sim.lammps import THERMO_COLUMNS, LammpsResult, lammps_md

pytestmark = pytest.mark.skipif(
    shutil.which("lmp") is None, reason="lammps not installed: apt-get install lammps"
)

ARGON = {"pair_style": "lj/cut 8.5", "pair_coeff": ["1 1 0.0104 3.4"]}
"""Argon Lennard-Jones in metal units (eV, Å)."""


def run_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("lammps-*")) if root.exists() else []


@pytest.fixture(scope="module")
def nve_lj(tmp_path_factory) -> LammpsResult:
    """1000 NVE steps of the 500-atom LJ liquid with a small timestep (shared by two tests)."""
    root = tmp_path_factory.mktemp("sim")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORCH_SIM_ROOT", str(root))
        result = lammps_md(setup="lj", steps=1000, timestep=0.001, thermo_every=50, seed=4242)
    assert run_dirs(root) == []  # success: the run directory is gone
    return result


def energy_error(result: LammpsResult) -> float:
    """Largest deviation of the total energy from its start, relative to the mean kinetic one."""
    etotal, ke = np.array(result.thermo["etotal"]), np.array(result.thermo["ke"])
    return float(np.abs(etotal - etotal[0]).max() / ke.mean())


def test_lj_nve_conserves_energy(nve_lj):
    table = {name: np.array(values) for name, values in nve_lj.thermo.items()}
    assert list(nve_lj.thermo) == list(THERMO_COLUMNS)
    assert len(table["step"]) == 1000 // 50 + 1 and table["step"][-1] == 1000
    assert nve_lj.natoms == 500 and nve_lj.units == "lj"
    # the system really moves: potential and kinetic energy exchange far more than etotal varies
    assert np.ptp(table["ke"]) > 0.05 * table["ke"].mean()
    error = energy_error(nve_lj)
    assert error < 5e-5, error  # measured ~2.7e-5 with dt = 0.001 tau
    # velocity Verlet: the energy error grows as dt^2 (same 1 tau, same sampling times)
    coarse = lammps_md(setup="lj", steps=500, timestep=0.002, thermo_every=25, seed=4242)
    assert 3.0 < energy_error(coarse) / error < 5.0, (energy_error(coarse), error)
    # final values are the exact (15-digit) last thermo row, and consistent with each other
    assert nve_lj.total_energy == table["etotal"][-1]
    assert nve_lj.potential_energy + nve_lj.kinetic_energy == pytest.approx(
        nve_lj.total_energy, rel=1e-12
    )
    dof = 3 * nve_lj.natoms - 3  # total momentum removed
    assert nve_lj.temperature == pytest.approx(2 * nve_lj.kinetic_energy / dof, rel=1e-12)
    assert -7 < nve_lj.potential_energy / nve_lj.natoms < -4  # dense LJ liquid, per atom


def test_walltime_kills_lmp_quickly(nve_lj, sim_root):
    steps = 10_000_000
    assert nve_lj.loop_seconds is not None
    natural = nve_lj.loop_seconds / 1000 * steps  # this machine's speed, start-up not counted
    assert natural > 60
    started = time.monotonic()
    with pytest.raises(SimulationError) as info:
        lammps_md(setup="lj", steps=steps, thermo_every=0, walltime=1)
    elapsed = time.monotonic() - started
    err = info.value
    assert err.reason == WALLTIME and elapsed < 10
    assert err.workdir is not None and Path(err.workdir).is_dir()
    left = []
    for proc in psutil.process_iter(["cwd", "status", "name"]):
        if proc.info["cwd"] == err.workdir and proc.info["status"] != psutil.STATUS_ZOMBIE:
            left.append(proc.info["name"])
    assert left == []


def test_nvt_holds_the_target_temperature():
    result = lammps_md(
        setup="lj", ensemble="nvt", temperature=1.5, steps=2000, thermo_every=100, seed=7
    )
    temps = np.array(result.thermo["temp"])
    assert temps[0] == pytest.approx(1.5, rel=1e-9)  # velocities drawn at the target
    assert abs(temps[len(temps) // 2 :].mean() - 1.5) < 0.1


def test_structure_energy_is_the_lattice_sum():
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(3)
    atoms.positions += np.random.default_rng(1).normal(0, 0.05, atoms.positions.shape)
    record = run_task(lammps_md, (), {"structure": atoms, "steps": 0, **ARGON})
    assert record["ok"] is True, record.get("failure")
    result = record["value"]
    assert isinstance(result, LammpsResult) and result.types == ("Ar",)
    first, second, distance = neighbor_list("ijd", atoms, 8.5)
    assert (first != second).all()
    eps, sigma = 0.0104, 3.4
    expected = 0.5 * np.sum(4 * eps * ((sigma / distance) ** 12 - (sigma / distance) ** 6))
    assert result.potential_energy == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert len(result.thermo["step"]) == 1 and result.natoms == 108


def test_water_trajectory_survives_in_trajectory_dir(tmp_path, sim_root):
    result = lammps_md(
        setup="water",
        ensemble="nvt",
        steps=200,
        thermo_every=100,
        dump_every=100,
        trajectory_dir=tmp_path / "traj",
    )
    assert result.trajectory is not None and Path(result.trajectory).parent == tmp_path / "traj"
    frames = result.frames()
    assert len(frames) == 3 and frames[-1].get_chemical_formula() == "H128O64"
    assert result.units == "real" and result.potential_energy < 0  # bound liquid, kcal/mol
    oh = frames[-1].get_distances(0, [1, 2], mic=True)
    assert oh == pytest.approx([1.0, 1.0], abs=1e-3)  # SHAKE keeps the molecules rigid
    assert run_dirs(sim_root) == []


def test_keep_always_leaves_the_trajectory_in_the_run_directory(sim_root):
    result = lammps_md(setup="lj", cells=3, steps=20, dump_every=10, keep="always")
    (kept,) = run_dirs(sim_root)
    assert result.trajectory == str(kept / "trajectory.lammpstrj")
    assert len(result.frames()) == 3 and (kept / "in.lammps").is_file()


def test_lost_atoms_are_a_code_error_and_keep_the_directory():
    with pytest.raises(SimulationError) as info:
        lammps_md(setup="lj", cells=3, timestep=0.5, steps=100)
    err = info.value
    assert err.reason == CODE_ERROR and err.returncode != 0
    assert err.message.startswith("ERROR: Lost atoms") and "last command: run 100" in err.message
    assert err.workdir is not None and (Path(err.workdir) / "in.lammps").is_file()


def test_atom_outside_a_fixed_box_is_a_code_error(tmp_path):
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True)
    atoms.positions[0, 2] = 9.0  # above the box top (5.26 Å) along the non-periodic z
    data = tmp_path / "argon.data"
    write_lammps_data(data, atoms, masses=True, units="metal")
    with pytest.raises(SimulationError) as info:
        lammps_md(data_file=data, boundary="p p f", steps=10, **ARGON)
    assert info.value.reason == CODE_ERROR
    assert "Did not assign all atoms correctly" in info.value.message


def test_bad_pair_style_via_run_task_returns_reason_and_tail(tmp_path):
    data = tmp_path / "argon.data"
    write_lammps_data(data, bulk("Ar", "fcc", a=5.26, cubic=True), masses=True, units="metal")
    kwargs = {"data_file": str(data), "pair_style": "lj/cut nope", "pair_coeff": ["1 1 1 1"]}
    record = run_task(lammps_md, (), kwargs)
    failure = record["failure"]
    assert record["ok"] is False and failure["reason"] == CODE_ERROR
    assert "Expected floating point parameter instead of 'nope'" in failure["message"]
    assert "ERROR:" in failure["details"]["output_tail"]
    assert failure["details"]["returncode"] == 1 and Path(failure["details"]["workdir"]).is_dir()


@pytest.mark.parametrize(
    ("command", "reason"),
    [(["no-such-lmp"], BINARY_MISSING), (["false"], NONZERO_EXIT), (["true"], OUTPUT_MISSING)],
)
def test_site_command_failures(command, reason):
    record = run_task(
        lammps_md, (), {"setup": "lj", "steps": 10}, {"commands": {"lammps": command}}
    )
    assert record["ok"] is False and record["failure"]["reason"] == reason
    assert record["failure"]["details"]["code"] == "lammps"


def test_keep_never_removes_a_failed_run(sim_root):
    with pytest.raises(SimulationError) as info:
        lammps_md(setup="lj", cells=3, timestep=0.5, steps=100, keep="never")
    assert info.value.reason == CODE_ERROR and info.value.workdir is None
    assert run_dirs(sim_root) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"setup": "lj", "steps": -1}, "steps must be"),
        ({"setup": "lj", "timestep": 0}, "timestep must be > 0"),
        ({"setup": "lj", "timestep": -0.001}, "timestep must be > 0"),
        ({"setup": "argon"}, "unknown setup"),
        ({"data_file": "/no/such/file.data", **ARGON}, "does not exist"),
        ({}, "exactly one"),
        ({"setup": "lj", "data_file": "x.data"}, "exactly one"),
        ({"setup": "lj", "ensemble": "npt"}, "ensemble"),
        ({"setup": "lj", "dump_every": 10}, "trajectory_dir"),
        ({"setup": "lj", "pair_style": "lj/cut 3"}, "own units and force field"),
        ({"structure": bulk("Ar", "fcc", a=5.26)}, "pair_style"),
        ({"setup": "lj", "seed": 0}, "seed"),
        ({"setup": "lj", "extra_commands": ["fix 2 all nve\nshell rm x"]}, "single lines"),
        ({"setup": "lj", "keep": "sometimes"}, "keep must be"),
    ],
)
def test_bad_input_is_rejected_before_launch(kwargs, message, sim_root):
    with pytest.raises(SimulationError, match=message) as info:
        lammps_md(**kwargs)
    assert info.value.reason == BAD_INPUT and info.value.returncode is None
    assert run_dirs(sim_root) == []  # no directory, so nothing was launched
