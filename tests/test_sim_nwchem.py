"""The NWChem wrapper against the real ``nwchem`` binary: physics, failure classes, directories."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from ase import Atoms
from ase.build import molecule
from ase.units import Hartree
from conftest import workdirs

from orchestrator.apps.runtime import run_task
from orchestrator.apps.sim import common, nwchem
from orchestrator.apps.sim.common import SimulationError
from orchestrator.apps.sim.nwchem import NWChemIpResult, NWChemResult, nwchem_energy, nwchem_ip

pytestmark = pytest.mark.skipif(
    shutil.which("nwchem") is None, reason="nwchem not installed: apt-get install nwchem"
)

WATER = molecule("H2O")
PERIODIC_H2 = Atoms("H2", positions=[(0, 0, 0), (0, 0, 0.74)], cell=[5, 5, 5], pbc=True)


def direct_nwchem(directory: Path, atoms: Atoms, body: str) -> list[float]:
    """Run NWChem directly on a hand-written input; return its printed energies."""
    directory.mkdir()
    geometry = "\n".join(
        f"  {a.symbol} {a.position[0]:.16e} {a.position[1]:.16e} {a.position[2]:.16e}"
        for a in atoms
    )
    (directory / "direct.nw").write_text(
        f"start direct\npermanent_dir {directory}\nscratch_dir {directory}\n"
        f"geometry units angstrom nocenter noautosym noautoz\n{geometry}\nend\n{body}\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMPI_MCA_ess_singleton_isolated": "1"}
    proc = subprocess.run(
        ["nwchem", "direct.nw"], cwd=directory, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    return [float(x) for x in re.findall(r"Total (?:SCF|DFT) energy =\s*(\S+)", proc.stdout)]


def no_launch(*args, **kwargs):
    raise AssertionError("run_code was called for an input that should have been rejected")


# -- physics --------------------------------------------------------------------------------


def test_scf_energy_equals_a_direct_run(tmp_path: Path, sim_root: Path):
    result = nwchem_energy(WATER, basis="sto-3g")
    (direct,) = direct_nwchem(
        tmp_path / "direct", WATER, "basis\n  * library sto-3g\nend\ntask scf energy"
    )
    assert isinstance(result, NWChemResult)
    assert abs(result.energy_hartree - direct) <= 1e-8
    assert -75.1 < result.energy_hartree < -74.8  # RHF/STO-3G water: -74.96 Eh
    assert result.converged and result.theory == "scf" and result.xc is None
    assert (result.charge, result.multiplicity, result.nwchem_version) == (0, 1, "7.0.2")
    assert workdirs(sim_root) == []  # cleaned on success


def test_dft_energy_equals_a_direct_run(tmp_path: Path):
    result = nwchem_energy(WATER, basis="6-31g", theory="dft", xc="b3lyp")
    (direct,) = direct_nwchem(
        tmp_path / "direct",
        WATER,
        "basis\n  * library 6-31g\nend\ndft\n  xc b3lyp\nend\ntask dft energy",
    )
    assert abs(result.energy_hartree - direct) <= 1e-8
    assert result.xc == "b3lyp"
    scf = nwchem_energy(WATER, basis="6-31g")
    assert result.energy_hartree < scf.energy_hartree - 0.2  # correlation lowers it (~0.4 Eh)


def test_water_ip_in_one_job_equals_two_direct_runs(tmp_path: Path):
    result = nwchem_ip(WATER, basis="6-31g")
    basis = "basis\n  * library 6-31g\nend\n"
    (neutral,) = direct_nwchem(tmp_path / "neutral", WATER, basis + "task scf energy")
    (cation,) = direct_nwchem(
        tmp_path / "cation",
        WATER,
        "charge 1\n" + basis + "scf\n  nopen 1\n  uhf\nend\ntask scf energy",
    )
    assert isinstance(result, NWChemIpResult)
    assert result.cation_multiplicity == 2
    assert abs(result.neutral_energy_hartree - neutral) <= 1e-8
    assert abs(result.cation_energy_hartree - cation) <= 1e-6  # different initial guess
    assert result.ip_ev == pytest.approx((cation - neutral) * Hartree, abs=1e-4)
    assert result.ip_ev == pytest.approx(
        (result.cation_energy_hartree - result.neutral_energy_hartree) * Hartree, rel=1e-12
    )
    assert 9.0 < result.ip_ev < 14.0  # UHF delta-SCF ~10.9 eV; experiment 12.6 eV


def test_open_shell_smiles_defaults_to_a_doublet():
    methyl = nwchem_energy("[CH3]", basis="sto-3g")
    assert methyl.multiplicity == 2 and methyl.charge == 0
    assert -39.2 < methyl.energy_hartree < -38.9  # UHF/STO-3G CH3: -39.08 Eh


# -- failures -------------------------------------------------------------------------------


def test_missing_binary_is_reported_through_run_task():
    out = run_task(
        nwchem_energy, (WATER,), {"basis": "sto-3g"}, context={"commands": {"nwchem": ["nope"]}}
    )
    assert out["ok"] is False
    assert out["failure"]["reason"] == common.BINARY_MISSING


def test_not_converged_even_though_an_energy_is_printed(sim_root: Path):
    with pytest.raises(SimulationError) as info:
        nwchem_energy(WATER, basis="sto-3g", max_iterations=1)
    exc = info.value
    assert exc.reason == common.NOT_CONVERGED
    assert exc.returncode == 255
    assert "last energy printed" in exc.message  # NWChem printed one; it was not returned
    assert exc.workdir is not None and (Path(exc.workdir) / "nwchem.nw").is_file()


def test_dft_not_converged_in_the_ip_job():
    with pytest.raises(SimulationError) as info:
        nwchem_ip(WATER, basis="sto-3g", theory="dft", max_iterations=2)
    assert info.value.reason == common.NOT_CONVERGED
    assert "neutral task" in info.value.message


def test_unknown_basis_is_a_code_error():
    with pytest.raises(SimulationError) as info:
        nwchem_energy(WATER, basis="no-such-basis")
    exc = info.value
    assert exc.reason == common.CODE_ERROR
    assert exc.returncode == 255
    assert "basis" in exc.message and "no-such-basis" in exc.message


def test_multiplicity_the_basis_cannot_hold_is_a_code_error():
    # He triplet: parity allows it, but STO-3G has one orbital for the two alpha electrons
    with pytest.raises(SimulationError) as info:
        nwchem_energy(Atoms("He"), basis="sto-3g", multiplicity=3)
    assert info.value.reason == common.CODE_ERROR
    assert info.value.returncode != 0


def test_multiplicity_nwchem_rejects_is_a_code_error(sim_root: Path):
    # bypass the wrapper's own parity check to see NWChem's: exit 10
    with common.workdir("nwchem", keep="never") as path:
        text = nwchem._render(WATER, path, "dft", "sto-3g", "b3lyp", 0, 2, 30)
        run = nwchem._run(path, text, walltime=60, threads=1)
        with pytest.raises(SimulationError) as info:
            nwchem._energies(run, tasks=("energy",))
    assert info.value.reason == common.CODE_ERROR
    assert info.value.returncode == 10
    assert "multiplicity not compatible" in info.value.message


def test_walltime_kills_the_run_and_leaves_no_process():
    # B3LYP/cc-pVTZ benzene: > 30 s here on one core
    started = time.monotonic()
    with pytest.raises(SimulationError) as info:
        nwchem_energy(molecule("C6H6"), basis="cc-pvtz", theory="dft", walltime=1)
    elapsed = time.monotonic() - started
    assert info.value.reason == common.WALLTIME
    assert elapsed < 10
    kept = Path(info.value.workdir)
    leftovers = []
    for proc in psutil.process_iter(["name", "cwd"]):
        if proc.info["cwd"] and Path(proc.info["cwd"]) == kept:
            leftovers.append(proc.info["name"])
    assert leftovers == []


@pytest.mark.parametrize(
    ("structure", "kwargs", "words"),
    [
        (WATER, {"multiplicity": 2}, "impossible"),
        (WATER, {"multiplicity": 0}, "multiplicity"),
        (WATER, {"charge": 10}, "no electrons"),
        (WATER, {"charge": "1"}, "charge"),
        (WATER, {"theory": "mp2"}, "theory"),
        (WATER, {"basis": "sto-3g\ntask scf gradient"}, "basis"),
        (WATER, {"basis": {"O": "sto-3g"}}, "H"),
        (WATER, {"basis": {"O": "sto-3g", "H": "sto-3g", "Qq": "sto-3g"}}, "Qq"),
        (WATER, {"theory": "dft", "xc": "b3lyp\nend"}, "functional"),
        (WATER, {"max_iterations": 0}, "max_iterations"),
        (Atoms("XH", positions=[(0, 0, 0), (0, 0, 1)]), {}, "dummy"),
        (
            PERIODIC_H2,
            {},
            "periodic",
        ),
    ],
)
def test_bad_input_is_rejected_before_launch(structure, kwargs, words, sim_root, monkeypatch):
    monkeypatch.setattr(nwchem, "run_code", no_launch)
    with pytest.raises(SimulationError) as info:
        nwchem_energy(structure, **kwargs)
    assert info.value.reason == common.BAD_INPUT
    assert words in info.value.message
    assert info.value.returncode is None and info.value.workdir is None
    assert workdirs(sim_root) == []


def test_ip_of_a_one_electron_system_is_rejected_before_launch(sim_root, monkeypatch):
    monkeypatch.setattr(nwchem, "run_code", no_launch)
    with pytest.raises(SimulationError) as info:
        nwchem_ip(Atoms("H"), basis="sto-3g")
    assert info.value.reason == common.BAD_INPUT
    assert "cation" in info.value.message
    assert workdirs(sim_root) == []


def test_keep_settings(sim_root: Path):
    nwchem_energy(WATER, basis="sto-3g", keep="always")
    (directory,) = workdirs(sim_root)
    assert (directory / "nwchem.nw").is_file() and (directory / "nwchem.db").is_file()
    shutil.rmtree(directory)

    with pytest.raises(SimulationError) as info:
        nwchem_energy(WATER, basis="no-such-basis", keep="never")
    assert info.value.workdir is None
    assert workdirs(sim_root) == []


# -- through the task wrapper ---------------------------------------------------------------


def test_run_task_round_trip():
    out = run_task(nwchem_energy, ("O",), {"basis": "sto-3g"})
    assert out["ok"] is True
    assert isinstance(out["value"], NWChemResult)

    out = run_task(nwchem_energy, ("O",), {"basis": "no-such-basis"})
    assert out["ok"] is False
    failure = out["failure"]
    assert failure["reason"] == common.CODE_ERROR
    assert "There is an error in the specified basis set" in failure["details"]["output_tail"]
    assert failure["details"]["returncode"] == 255
