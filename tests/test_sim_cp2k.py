"""CP2K wrapper against the real ``cp2k.psmp``: physics, failure classes, work directories."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import ase.io
import numpy as np
import psutil
import pytest
from ase import Atoms, units

from orchestrator.apps.runtime import run_task
from orchestrator.apps.sim import cp2k
from orchestrator.apps.sim.common import (
    BAD_INPUT,
    BINARY_MISSING,
    CODE_ERROR,
    NONZERO_EXIT,
    NOT_CONVERGED,
    OUTPUT_MISSING,
    WALLTIME,
    SimulationError,
)
from orchestrator.apps.sim.cp2k import Cp2kResult, cp2k_energy, cp2k_input

pytestmark = pytest.mark.skipif(
    shutil.which("cp2k.psmp") is None, reason="cp2k not installed: apt-get install cp2k cp2k-data"
)

FAST = {"basis": "SZV-MOLOPT-SR-GTH", "cutoff_ry": 200, "rel_cutoff_ry": 30, "eps_scf": 1e-8}
"""Small basis and grid: H2 in a 6 Å box takes ~1 s."""


def run_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("cp2k-*")) if root.exists() else []


def h2(stretch: float = 0.0, bond: float = 0.74, box: float = 6.0) -> Atoms:
    """H2 along z, centred in a cubic box; ``stretch`` moves the second atom only."""
    centre = box / 2
    positions = [(centre, centre, centre - bond / 2), (centre, centre, centre + bond / 2 + stretch)]
    return Atoms("H2", positions=positions, cell=[box] * 3, pbc=True)


@pytest.fixture(scope="module")
def h2_forces(tmp_path_factory) -> Cp2kResult:
    root = tmp_path_factory.mktemp("sim")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORCH_SIM_ROOT", str(root))
        result = cp2k_energy(h2(), forces=True, **FAST)
    assert run_dirs(root) == []  # success: the run directory is gone
    return result


def test_energy_equals_a_direct_cp2k_run(h2_forces, tmp_path):
    direct = tmp_path / "direct"
    direct.mkdir()
    ase.io.write(direct / "coords.xyz", h2(), format="xyz")
    (direct / "input.inp").write_text(cp2k_input(h2(), forces=True, **FAST))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMPI_MCA_ess_singleton_isolated": "1"}
    subprocess.run(
        ["cp2k.psmp", "-i", "input.inp", "-o", "output.out"],
        cwd=direct, env=env, check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    output = (direct / "output.out").read_text()
    energies = re.findall(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)", output)
    assert len(energies) == 1 and "SCF run converged" in output
    assert abs(h2_forces.energy_hartree - float(energies[0])) <= 1e-10
    assert -1.2 < h2_forces.energy_hartree < -1.1  # H2 with PBE: about -1.16 Ha
    assert h2_forces.scf_converged is True and h2_forces.scf_steps is not None


def test_forces_on_symmetric_h2_are_equal_and_opposite(h2_forces):
    forces = np.array(h2_forces.forces_ev_per_angstrom)
    assert forces.shape == (2, 3)
    assert abs(forces[0, 2]) > 0.1  # 0.74 Å is not this basis's minimum: a real force
    assert forces[0, 2] == pytest.approx(-forces[1, 2], rel=1e-6)
    assert np.abs(forces[:, :2]).max() < 1e-6  # nothing across the bond


def test_forces_are_minus_the_energy_gradient(h2_forces):
    step = 0.005  # Å, second atom along the bond
    plus = cp2k_energy(h2(+step), **FAST).energy_hartree
    minus = cp2k_energy(h2(-step), **FAST).energy_hartree
    gradient = (plus - minus) / (2 * step) * units.Hartree  # eV/Å
    # agrees to ~0.3 % (grid noise at 200 Ry); a Hartree/Bohr slip would be off by 50x
    assert h2_forces.forces_ev_per_angstrom[1][2] == pytest.approx(-gradient, rel=1e-2)


def test_smiles_molecule_in_a_vacuum_box_isolated(sim_root):
    result = cp2k_energy("[H][H]", periodic="NONE", vacuum=2.5, **FAST)
    # RDKit's H2 (about 0.74 Å), isolated (wavelet Poisson solver): about -1.16 Ha, like the
    # same molecule in the periodic 6 Å box
    assert result.energy_hartree == pytest.approx(-1.16, abs=0.01)
    assert result.forces_ev_per_angstrom is None and run_dirs(sim_root) == []


def test_unconverged_scf_exits_zero_but_is_not_converged():
    record = run_task(cp2k_energy, (h2(),), {**FAST, "max_scf": 2})
    failure = record["failure"]
    assert record["ok"] is False and failure["reason"] == NOT_CONVERGED
    details = failure["details"]
    assert details["returncode"] == 0 and "output.out" in details["output_tail"]
    output = (Path(details["workdir"]) / "output.out").read_text()
    assert "SCF run NOT converged" in output and "ENERGY| Total FORCE_EVAL" in output


def test_unknown_basis_reported_by_cp2k_is_a_code_error(monkeypatch):
    # As on a site whose data files live only inside the image: no local check, CP2K decides.
    monkeypatch.setattr(cp2k, "find_data_file", lambda name: None)
    with pytest.raises(SimulationError) as info:
        cp2k_energy(h2(), **{**FAST, "basis": "NO-SUCH-BASIS"})
    err = info.value
    assert err.reason == CODE_ERROR and err.returncode != 0
    assert "requested basis set <NO-SUCH-BASIS> for element <H> was not found" in err.message
    assert err.workdir is not None and (Path(err.workdir) / "output.out").is_file()
    assert "[ABORT]" in err.output_tail


def test_unknown_functional_is_a_code_error():
    with pytest.raises(SimulationError, match="invalid value for enumeration:NOPE") as info:
        cp2k_energy(h2(), **{**FAST, "xc": "NOPE"})
    assert info.value.reason == CODE_ERROR


def test_run_task_success_and_keep_always(sim_root):
    record = run_task(cp2k_energy, (h2(),), {**FAST, "keep": "always"})
    assert record["ok"] is True
    result = record["value"]
    assert isinstance(result, Cp2kResult) and result.energy_ev == pytest.approx(
        result.energy_hartree * units.Hartree
    )
    (kept,) = run_dirs(sim_root)
    assert {"input.inp", "coords.xyz", "output.out"} <= {p.name for p in kept.iterdir()}


def test_walltime_kills_cp2k_quickly():
    water = Atoms("OH2", positions=[(0, 0, 0), (0.76, 0.59, 0), (-0.76, 0.59, 0)])
    started = time.monotonic()
    with pytest.raises(SimulationError) as info:  # DZVP at 400 Ry in a 12 Å box: ~20 s
        cp2k_energy(water, cell=12.0, walltime=1)
    assert info.value.reason == WALLTIME and time.monotonic() - started < 10
    workdir = info.value.workdir
    assert workdir is not None
    left = [
        p.info["name"]
        for p in psutil.process_iter(["cwd", "status", "name"])
        if p.info["cwd"] == workdir and p.info["status"] != psutil.STATUS_ZOMBIE
    ]
    assert left == []


@pytest.mark.parametrize(
    ("command", "reason"),
    [(["no-such-cp2k"], BINARY_MISSING), (["false"], NONZERO_EXIT), (["true"], OUTPUT_MISSING)],
)
def test_site_command_failures(command, reason):
    record = run_task(cp2k_energy, (h2(),), FAST, {"commands": {"cp2k": command}})
    assert record["ok"] is False and record["failure"]["reason"] == reason
    assert record["failure"]["details"]["code"] == "cp2k"


def test_keep_never_removes_a_failed_run(sim_root):
    record = run_task(
        cp2k_energy, (h2(),), {**FAST, "keep": "never"}, {"commands": {"cp2k": ["false"]}}
    )
    assert record["failure"]["reason"] == NONZERO_EXIT
    assert record["failure"]["details"]["workdir"] is None and run_dirs(sim_root) == []


@pytest.mark.parametrize(
    ("structure", "kwargs", "message"),
    [
        (h2(), {"cutoff_ry": 0}, "cutoff_ry must be > 0"),
        (h2(), {"rel_cutoff_ry": -5}, "rel_cutoff_ry must be > 0"),
        (Atoms(), {}, "no atoms"),
        (h2(), {"basis": "NO-SUCH-BASIS"}, "has no entry for \\['H'\\]"),
        (h2(), {"potential": "GTH-NOPE"}, "potential GTH-NOPE has no entry for H"),
        (Atoms("La", cell=[6, 6, 6]), {"basis": "SZV-MOLOPT-SR-GTH"}, "no entry for \\[.La.\\]"),
        (h2(), {"multiplicity": 2}, "multiplicity 2 is impossible"),
        (h2(), {"periodic": "XY"}, "periodic must be"),
        (h2(), {"periodic": "NONE", "cell": [6, 6, 7]}, "needs a cubic cell"),
        (h2(), {"max_scf": 0}, "max_scf"),
        (h2(), {"xc": "PBE\n&GLOBAL"}, "one word"),
        (h2(), {"keep": "sometimes"}, "keep must be"),
    ],
)
def test_bad_input_is_rejected_before_launch(structure, kwargs, message, sim_root):
    with pytest.raises(SimulationError, match=message) as info:
        cp2k_energy(structure, **kwargs)
    assert info.value.reason == BAD_INPUT and info.value.returncode is None
    assert run_dirs(sim_root) == []  # no directory, so nothing was launched
