"""The xTB wrapper against the real ``xtb`` binary: physics, failure classes, directories."""

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
from ase.io import write
from conftest import workdirs

from orchestrator.apps.runtime import run_task
from orchestrator.apps.sim import common, xtb
from orchestrator.apps.sim.common import SimulationError
from orchestrator.apps.sim.xtb import XtbIpEaResult, XtbResult, xtb_energy, xtb_ip_ea

pytestmark = pytest.mark.skipif(
    shutil.which("xtb") is None, reason="xtb not installed: apt-get install xtb"
)

XTBPATH = os.environ.get("XTBPATH") or "/usr/share/xtb"
PERIODIC_H2 = Atoms("H2", positions=[(0, 0, 0), (0, 0, 0.74)], cell=[5, 5, 5], pbc=True)


def direct_xtb(directory: Path, atoms: Atoms, *args: str) -> str:
    """Run the xtb CLI directly (no wrapper) on ``atoms``; return its stdout."""
    directory.mkdir()
    write(directory / "mol.xyz", atoms, format="xyz")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XTBPATH": XTBPATH}
    proc = subprocess.run(
        ["xtb", "mol.xyz", "--norestart", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return proc.stdout


def no_launch(*args, **kwargs):
    raise AssertionError("run_code was called for an input that should have been rejected")


# -- physics --------------------------------------------------------------------------------


def test_water_ip_ea_match_the_cli_run_directly(tmp_path: Path, sim_root: Path):
    water = molecule("H2O")
    result = xtb_ip_ea(water)

    out = direct_xtb(tmp_path / "direct", water, "--vipea")
    ip = float(re.search(r"delta SCC IP \(eV\):\s*(\S+)", out).group(1))
    ea = float(re.search(r"delta SCC EA \(eV\):\s*(\S+)", out).group(1))

    assert isinstance(result, XtbIpEaResult)
    assert result.ip_ev == pytest.approx(ip, abs=1e-4)  # xtb prints 4 decimals
    assert result.ea_ev == pytest.approx(ea, abs=1e-4)
    assert 11.0 < result.ip_ev < 16.0  # IPEA-xTB ~13.8 eV (experiment 12.6 eV)
    assert result.ea_ev < 0  # water binds no extra electron
    assert (result.charge, result.multiplicity, result.method) == (0, 1, "IPEA-xTB")
    assert result.xtb_version and result.xtb_version[0].isdigit()
    assert workdirs(sim_root) == []  # cleaned on success


def test_energy_matches_the_cli_to_all_printed_digits(tmp_path: Path):
    water = molecule("H2O")
    result = xtb_energy(water)
    out = direct_xtb(tmp_path / "direct", water)
    direct = float(re.findall(r"\|\s*TOTAL ENERGY\s+(\S+)\s+Eh", out)[-1])
    assert result.energy_hartree == pytest.approx(direct, abs=1e-11)
    assert result.method == "GFN2-xTB"
    assert result.homo_lumo_gap_ev is not None and result.homo_lumo_gap_ev > 5
    assert not result.optimized
    assert result.atoms.get_chemical_formula() == "H2O"


def test_smiles_energy_is_deterministic_and_optimisation_lowers_it():
    first = xtb_energy("CCO")
    second = xtb_energy("CCO")
    assert first.energy_hartree == second.energy_hartree
    assert len(first.atoms) == 9 and first.charge == 0 and first.multiplicity == 1

    relaxed = xtb_energy("CCO", optimize=True, opt_level="tight")
    assert relaxed.optimized
    assert relaxed.energy_hartree < first.energy_hartree - 1e-4  # MMFF geometry is not GFN2's
    assert relaxed.atoms.get_chemical_symbols() == first.atoms.get_chemical_symbols()
    # the returned geometry is the one the energy belongs to
    again = xtb_energy(relaxed.atoms)
    assert again.energy_hartree == pytest.approx(relaxed.energy_hartree, abs=1e-7)


def test_charge_and_spin_defaults_follow_the_electron_count():
    ammonium = xtb_energy("[NH4+]")
    assert ammonium.charge == 1 and ammonium.multiplicity == 1
    assert ammonium.atoms.info["charge"] == 1

    neutral = xtb_energy(molecule("H2O"))
    cation = xtb_energy(molecule("H2O"), charge=1)
    assert cation.multiplicity == 2  # 9 electrons: a doublet by default
    assert cation.energy_hartree > neutral.energy_hartree + 0.3  # ionising costs > 8 eV


# -- failures -------------------------------------------------------------------------------


def test_missing_binary_is_reported_through_run_task(sim_root: Path):
    out = run_task(xtb_energy, ("O",), {}, context={"commands": {"xtb": ["no-such-xtb"]}})
    assert out["ok"] is False
    assert out["failure"]["reason"] == common.BINARY_MISSING
    assert "no-such-xtb" in out["failure"]["message"]


def test_error_block_is_a_code_error_with_the_cause(sim_root: Path):
    # 110 electrons do not fit in water's 6 orbitals; xtb exits 1 with an [ERROR] block
    with pytest.raises(SimulationError) as info:
        xtb_energy(molecule("H2O"), charge=-100)
    exc = info.value
    assert exc.reason == common.CODE_ERROR
    assert "Not enough basis functions" in exc.message
    assert exc.returncode == 1
    assert "[ERROR]" in exc.output_tail
    assert exc.workdir is not None and Path(exc.workdir).is_dir()  # kept for inspection
    assert (Path(exc.workdir) / "orch.stdout").is_file()


def test_scc_not_converged(sim_root: Path):
    with pytest.raises(SimulationError) as info:
        xtb_energy(molecule("H2O"), max_iterations=2)
    assert info.value.reason == common.NOT_CONVERGED
    assert "did not converge" in info.value.message
    assert info.value.returncode == 1


def test_optimisation_not_converged_despite_exit_zero(sim_root: Path):
    with pytest.raises(SimulationError) as info:
        xtb_energy("CCO", optimize=True, max_opt_cycles=1)
    assert info.value.reason == common.NOT_CONVERGED
    assert info.value.returncode == 0
    assert "GEOMETRY OPTIMIZATION" in info.value.message


def test_walltime_kills_the_run_and_leaves_no_process(sim_root: Path):
    # a 122-atom very tight optimisation: > 30 s here on one thread
    started = time.monotonic()
    with pytest.raises(SimulationError) as info:
        xtb_energy("C" * 40, optimize=True, opt_level="vtight", walltime=1)
    elapsed = time.monotonic() - started
    assert info.value.reason == common.WALLTIME
    assert elapsed < 10
    kept = Path(info.value.workdir)
    assert kept.is_dir()
    leftovers = []
    for proc in psutil.process_iter(["name", "cwd"]):
        if proc.info["cwd"] and Path(proc.info["cwd"]) == kept:
            leftovers.append(proc.info["name"])
    assert leftovers == []


@pytest.mark.parametrize(
    ("structure", "kwargs", "words"),
    [
        (molecule("H2O"), {"multiplicity": 2}, "impossible"),
        (molecule("H2O"), {"multiplicity": 0}, "multiplicity"),
        (molecule("H2O"), {"charge": 10}, "electrons"),
        (molecule("H2O"), {"charge": 1.5}, "charge"),
        (Atoms("XH", positions=[(0, 0, 0), (0, 0, 1)]), {}, "element"),
        (Atoms("U", positions=[(0, 0, 0)]), {}, "element"),
        (
            PERIODIC_H2,
            {},
            "periodic",
        ),
        (molecule("H2O"), {"gfn": 3}, "gfn"),
        (molecule("H2O"), {"accuracy": 0}, "accuracy"),
        (molecule("H2O"), {"max_iterations": 0}, "max_iterations"),
        (molecule("H2O"), {"optimize": True, "opt_level": "bogus"}, "opt_level"),
        ("C1CC", {}, "SMILES"),
    ],
)
def test_bad_input_is_rejected_before_launch(structure, kwargs, words, sim_root, monkeypatch):
    monkeypatch.setattr(xtb, "run_code", no_launch)
    with pytest.raises(SimulationError) as info:
        xtb_energy(structure, **kwargs)
    assert info.value.reason == common.BAD_INPUT
    assert words in info.value.message
    assert info.value.returncode is None and info.value.workdir is None
    assert workdirs(sim_root) == []


def test_ip_ea_rejects_bad_input_before_launch(sim_root, monkeypatch):
    monkeypatch.setattr(xtb, "run_code", no_launch)
    with pytest.raises(SimulationError) as info:
        xtb_ip_ea(molecule("H2O"), multiplicity=4)
    assert info.value.reason == common.BAD_INPUT
    assert workdirs(sim_root) == []


def test_keep_settings(sim_root: Path):
    kept = xtb_energy("O", keep="always")
    (directory,) = workdirs(sim_root)
    assert (directory / "xtbout.json").is_file() and (directory / "structure.xyz").is_file()
    shutil.rmtree(directory)

    assert xtb_energy("O").energy_hartree == kept.energy_hartree
    assert workdirs(sim_root) == []  # "failed": removed on success

    with pytest.raises(SimulationError) as info:
        xtb_energy("O", max_iterations=2, keep="never")
    assert info.value.workdir is None
    assert workdirs(sim_root) == []


# -- through the task wrapper ---------------------------------------------------------------


def test_run_task_round_trip():
    out = run_task(xtb_energy, ("O",), {})
    assert out["ok"] is True
    assert isinstance(out["value"], XtbResult)
    assert out["value"].energy_hartree < -5

    out = run_task(xtb_energy, ("O",), {"max_iterations": 2})
    assert out["ok"] is False
    failure = out["failure"]
    assert failure["reason"] == common.NOT_CONVERGED
    assert "did not converge" in failure["details"]["output_tail"]
    assert failure["details"]["returncode"] == 1
    assert Path(failure["details"]["workdir"]).is_dir()
