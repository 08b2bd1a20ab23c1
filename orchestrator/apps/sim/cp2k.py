"""CP2K Quickstep single points: GTH pseudopotentials, a MOLOPT basis, a periodic (or open) cell.

``cp2k_energy(structure, ...)`` writes ``coords.xyz`` (ASE) and ``input.inp`` (text from
:func:`cp2k_input`) into a fresh directory, runs ``<site command for cp2k> -i input.inp -o
output.out`` (default ``cp2k.psmp``) and parses the final ``ENERGY| Total FORCE_EVAL ( QS )
energy`` line at full precision. Forces, when asked, come from a ``PRINT/FORCES`` file written
with 15 digits. ASE's CP2K calculator is not used: it drives ``cp2k_shell`` interactively.

How a run fails (``SimulationError.reason``):

=========================================  ===================================================
condition                                  reason
=========================================  ===================================================
empty structure, cutoff <= 0, bad names,   ``bad_input`` (before anything is launched)
element missing from a readable basis or
potential file, impossible multiplicity
CP2K's ``[ABORT]`` error box (unknown      ``code_error``, message = the box's text
basis/potential/file, input errors)
other non-zero exit                        ``nonzero_exit``
"SCF run NOT converged" (exit status 0)    ``not_converged``
no final energy line / no forces file      ``output_missing``
wall time exceeded                         ``timeout`` (process group killed)
=========================================  ===================================================
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import ase.io
import numpy as np
from ase import Atoms, units

from orchestrator.apps.sim.common import (
    CODE_ERROR,
    NONZERO_EXIT,
    NOT_CONVERGED,
    OUTPUT_MISSING,
    OUTPUT_UNPARSABLE,
    Keep,
    Run,
    bad_input,
    run_code,
    workdir,
)
from orchestrator.apps.sim.structures import to_atoms

CODE = "cp2k"
DEFAULT_COMMAND = ["cp2k.psmp"]
DATA_DIR = "/usr/share/cp2k"
"""Where Debian's CP2K keeps basis sets and potentials (``$CP2K_DATA_DIR`` overrides it)."""

INPUT_FILE = "input.inp"
OUTPUT_FILE = "output.out"
COORD_FILE = "coords.xyz"
FORCES_FILE = "forces.dat"
HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM = units.Hartree / units.Bohr

Periodic = Literal["XYZ", "NONE"]
CellLike = float | Sequence[float] | Sequence[Sequence[float]] | np.ndarray

_NAME = re.compile(r"^[A-Za-z0-9_.+\-/]+$")
_ENERGY = re.compile(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)")
_SCF_DONE = re.compile(r"SCF run converged in\s+(\d+) steps")
_RANKS = re.compile(r"GLOBAL\| Total number of message passing processes\s+(\d+)")
_NOT_CONVERGED = "SCF run NOT converged"
_BORDER = re.compile(r"^ \*{20,}\s*$")


@dataclass(frozen=True)
class Cp2kResult:
    """A converged CP2K single point.

    Attributes:
        energy_hartree: Total energy (Hartree), as printed by CP2K (15 decimals).
        forces_ev_per_angstrom: Forces per atom (eV/Å, input order), or ``None`` when not asked.
        scf_converged: Always ``True`` (an unconverged SCF raises ``not_converged``).
        scf_steps: SCF iterations CP2K needed.
        seconds: Wall time of the CP2K process.
        ranks: MPI ranks the run used, as CP2K reports them ("GLOBAL| Total number of message
            passing processes"); ``None`` when not printed.
    """

    energy_hartree: float
    forces_ev_per_angstrom: list[list[float]] | None
    scf_converged: bool
    scf_steps: int | None
    seconds: float
    ranks: int | None = None

    @property
    def energy_ev(self) -> float:
        """Total energy in eV (ASE's Hartree constant)."""
        return self.energy_hartree * units.Hartree


def cp2k_energy(
    structure: Atoms | str,
    *,
    cell: CellLike | None = None,
    periodic: Periodic = "XYZ",
    vacuum: float = 5.0,
    xc: str = "PBE",
    basis: str = "DZVP-MOLOPT-SR-GTH",
    potential: str = "GTH-PBE",
    basis_file: str = "BASIS_MOLOPT",
    potential_file: str = "GTH_POTENTIALS",
    cutoff_ry: float = 400.0,
    rel_cutoff_ry: float = 50.0,
    charge: int | None = None,
    multiplicity: int = 1,
    max_scf: int = 50,
    eps_scf: float = 1e-6,
    forces: bool = False,
    walltime: float = 3600.0,
    threads: int | None = None,
    keep: Keep = "failed",
) -> Cp2kResult:
    """Quickstep (GPW) single-point energy, and forces when asked.

    Args:
        structure: ASE ``Atoms`` or a SMILES string (made 3-D by RDKit).
        cell: Cell in Å: a cube edge, three edges, or a 3x3 matrix. Default: the structure's
            own cell if it has one, else a box around it with ``vacuum`` Å on every side
            (cubic for ``periodic="NONE"``). A structure without a cell is centred in it.
        periodic: ``"XYZ"`` (periodic images) or ``"NONE"`` (isolated; wavelet Poisson
            solver, which needs a cubic cell).
        vacuum: Padding (Å) of the default box.
        xc: CP2K ``XC_FUNCTIONAL`` shortcut (``PBE``, ``BLYP``, ``PADE``...).
        basis: Basis set name in ``basis_file`` (``SZV-MOLOPT-SR-GTH`` is the fast one).
        potential: GTH pseudopotential name in ``potential_file``; match it to ``xc``.
        basis_file: Basis set file (name in CP2K's data directory, or a path).
        potential_file: Potential file (name in CP2K's data directory, or a path).
        cutoff_ry: Plane-wave cutoff of the finest grid (Ry).
        rel_cutoff_ry: Relative cutoff deciding which grid a Gaussian maps to (Ry).
        charge: Total charge; default the SMILES's formal charge, else 0.
        multiplicity: Spin multiplicity (2S+1); above 1 runs unrestricted (UKS).
        max_scf: Most SCF iterations.
        eps_scf: SCF convergence threshold.
        forces: Also compute forces (``RUN_TYPE ENERGY_FORCE``).
        walltime: Seconds before the run is killed.
        threads: OpenMP threads per rank; default the task's ``threads_per_rank`` (1 outside
            a task). MPI ranks come from the task's resources (see ``orchestrator.apps.mpi``).
        keep: When the working directory is kept (``failed``: only for inspection after a
            failure).

    Returns:
        The energy (and forces) of a converged SCF.

    Raises:
        SimulationError: See the module's table of reasons.
    """
    atoms = to_atoms(structure, code=CODE)
    charge = int(atoms.info.get("charge", 0)) if charge is None else charge
    atoms = place_in_cell(atoms, cell=cell, periodic=periodic, vacuum=vacuum)
    text = cp2k_input(
        atoms,
        periodic=periodic,
        xc=xc,
        basis=basis,
        potential=potential,
        basis_file=basis_file,
        potential_file=potential_file,
        cutoff_ry=cutoff_ry,
        rel_cutoff_ry=rel_cutoff_ry,
        charge=charge,
        multiplicity=multiplicity,
        max_scf=max_scf,
        eps_scf=eps_scf,
        forces=forces,
    )
    with workdir(CODE, keep=keep) as path:
        ase.io.write(path / COORD_FILE, atoms, format="xyz")
        (path / INPUT_FILE).write_text(text)
        run = run_code(
            CODE,
            ["-i", INPUT_FILE, "-o", OUTPUT_FILE],
            workdir=path,
            walltime=walltime,
            default_command=DEFAULT_COMMAND,
            threads=threads,
            output_files=[OUTPUT_FILE],
        )
        return _parse(run, natoms=len(atoms), forces=forces, max_scf=max_scf)


def place_in_cell(
    atoms: Atoms, *, cell: CellLike | None = None, periodic: str = "XYZ", vacuum: float = 5.0
) -> Atoms:
    """A copy of ``atoms`` with the cell CP2K will use (see :func:`cp2k_energy`'s ``cell``).

    Raises:
        SimulationError: ``bad_input`` for a degenerate cell, or with ``periodic="NONE"`` a
            non-cubic cell or atoms outside it.
    """
    if periodic not in ("XYZ", "NONE"):
        raise bad_input(CODE, f"periodic must be 'XYZ' or 'NONE' (got {periodic!r})")
    atoms = atoms.copy()
    had_cell = atoms.cell.rank == 3
    if cell is not None:
        try:
            atoms.set_cell(_cell_matrix(cell), scale_atoms=False)
        except (ValueError, TypeError) as exc:
            raise bad_input(CODE, f"cell must be an edge, 3 edges or a 3x3 matrix: {exc}") from None
        if atoms.cell.volume <= 1e-6:
            raise bad_input(CODE, f"cell has no volume: {atoms.cell.tolist()}")
        if not had_cell:
            atoms.center()
    elif not had_cell:
        if not vacuum > 0:
            raise bad_input(CODE, f"vacuum must be > 0 Å (got {vacuum})")
        extent = np.ptp(atoms.positions, axis=0) + 2 * vacuum
        if periodic == "NONE":
            extent = np.full(3, extent.max())
        atoms.set_cell(extent)
        atoms.center()
    atoms.pbc = periodic == "XYZ"
    if periodic == "NONE":
        lengths_angles = atoms.cell.cellpar()
        if not (
            np.allclose(lengths_angles[:3], lengths_angles[0])
            and np.allclose(lengths_angles[3:], 90)
        ):
            raise bad_input(
                CODE,
                "periodic='NONE' uses CP2K's wavelet Poisson solver, which needs a cubic cell "
                f"(got lengths/angles {np.round(lengths_angles, 4).tolist()})",
            )
        scaled = atoms.get_scaled_positions(wrap=False)
        if (scaled < 0).any() or (scaled >= 1).any():
            raise bad_input(CODE, "periodic='NONE' needs every atom inside the cell")
    return atoms


def _cell_matrix(cell: CellLike) -> np.ndarray:
    array = np.asarray(cell, dtype=float)
    if array.ndim == 0:
        return np.eye(3) * float(array)
    if array.shape == (3,):
        return np.diag(array)
    if array.shape == (3, 3):
        return array
    raise ValueError(f"shape {array.shape}")


def cp2k_input(
    atoms: Atoms,
    *,
    periodic: Periodic = "XYZ",
    xc: str = "PBE",
    basis: str = "DZVP-MOLOPT-SR-GTH",
    potential: str = "GTH-PBE",
    basis_file: str = "BASIS_MOLOPT",
    potential_file: str = "GTH_POTENTIALS",
    cutoff_ry: float = 400.0,
    rel_cutoff_ry: float = 50.0,
    charge: int = 0,
    multiplicity: int = 1,
    max_scf: int = 50,
    eps_scf: float = 1e-6,
    forces: bool = False,
    coord_file: str = COORD_FILE,
) -> str:
    """The CP2K input text for ``atoms`` (whose cell is used as is), after checking settings.

    Coordinates are read from ``coord_file`` (XYZ, written next to the input, e.g. with
    ``ase.io.write(..., format="xyz")``). Arguments are those of :func:`cp2k_energy`.

    Raises:
        SimulationError: ``bad_input`` for settings CP2K would reject or run wrongly.
    """
    _check_settings(
        atoms,
        periodic=periodic,
        names={"xc": xc, "basis": basis, "potential": potential},
        files={"basis_file": basis_file, "potential_file": potential_file},
        cutoff_ry=cutoff_ry,
        rel_cutoff_ry=rel_cutoff_ry,
        max_scf=max_scf,
        eps_scf=eps_scf,
        charge=charge,
        multiplicity=multiplicity,
    )
    symbols = sorted(set(atoms.get_chemical_symbols()))
    valence = _valence(symbols, basis, potential, basis_file, potential_file)
    if valence is not None:
        electrons = sum(valence[s] for s in atoms.get_chemical_symbols()) - charge
        if electrons <= 0:
            raise bad_input(CODE, f"charge {charge} leaves {electrons} valence electrons")
        if (electrons + multiplicity - 1) % 2:
            raise bad_input(
                CODE,
                f"multiplicity {multiplicity} is impossible with {electrons} valence electrons "
                f"(charge {charge})",
            )
    vectors = "\n".join(
        f"      {axis} {v[0]:.15f} {v[1]:.15f} {v[2]:.15f}"
        for axis, v in zip("ABC", atoms.cell.array, strict=True)
    )
    kinds = "\n".join(
        f"    &KIND {s}\n      BASIS_SET {basis}\n      POTENTIAL {potential}\n    &END KIND"
        for s in symbols
    )
    poisson = (
        "    &POISSON\n      PERIODIC NONE\n      POISSON_SOLVER WAVELET\n    &END POISSON\n"
        if periodic == "NONE"
        else ""
    )
    print_forces = (
        "  &PRINT\n    &FORCES ON\n"
        f"      FILENAME ={FORCES_FILE}\n      NDIGITS 15\n"
        "    &END FORCES\n  &END PRINT\n"
        if forces
        else ""
    )
    return f"""&GLOBAL
  PROJECT orch
  RUN_TYPE {"ENERGY_FORCE" if forces else "ENERGY"}
  PRINT_LEVEL LOW
&END GLOBAL
&FORCE_EVAL
  METHOD QS
  &DFT
    BASIS_SET_FILE_NAME {basis_file}
    POTENTIAL_FILE_NAME {potential_file}
    CHARGE {charge}
    MULTIPLICITY {multiplicity}
    UKS {".TRUE." if multiplicity != 1 else ".FALSE."}
    &MGRID
      CUTOFF {cutoff_ry!r}
      REL_CUTOFF {rel_cutoff_ry!r}
    &END MGRID
    &SCF
      MAX_SCF {max_scf}
      EPS_SCF {eps_scf!r}
      SCF_GUESS ATOMIC
    &END SCF
    &XC
      &XC_FUNCTIONAL {xc}
      &END XC_FUNCTIONAL
    &END XC
{poisson}  &END DFT
  &SUBSYS
    &CELL
{vectors}
      PERIODIC {periodic}
    &END CELL
    &TOPOLOGY
      COORD_FILE_NAME {coord_file}
      COORD_FILE_FORMAT XYZ
    &END TOPOLOGY
{kinds}
  &END SUBSYS
{print_forces}&END FORCE_EVAL
"""


def _check_settings(
    atoms: Atoms,
    *,
    periodic: str,
    names: dict[str, str],
    files: dict[str, str],
    cutoff_ry: float,
    rel_cutoff_ry: float,
    max_scf: int,
    eps_scf: float,
    charge: int,
    multiplicity: int,
) -> None:
    if len(atoms) == 0:
        raise bad_input(CODE, "the structure has no atoms")
    if periodic not in ("XYZ", "NONE"):
        raise bad_input(CODE, f"periodic must be 'XYZ' or 'NONE' (got {periodic!r})")
    if atoms.cell.rank != 3:
        raise bad_input(CODE, "the structure needs a 3-D cell (see place_in_cell)")
    for label, value in {**names, **files}.items():
        if not isinstance(value, str) or not _NAME.match(value):
            raise bad_input(CODE, f"{label} must be one word of letters, digits, _.+-/: {value!r}")
    for label, number in (("cutoff_ry", cutoff_ry), ("rel_cutoff_ry", rel_cutoff_ry)):
        if not (isinstance(number, int | float) and math.isfinite(number) and number > 0):
            raise bad_input(CODE, f"{label} must be > 0 Ry (got {number!r})")
    if not (isinstance(eps_scf, int | float) and math.isfinite(eps_scf) and eps_scf > 0):
        raise bad_input(CODE, f"eps_scf must be > 0 (got {eps_scf!r})")
    if not isinstance(max_scf, int) or max_scf < 1:
        raise bad_input(CODE, f"max_scf must be an integer >= 1 (got {max_scf!r})")
    if not isinstance(charge, int) or isinstance(charge, bool):
        raise bad_input(CODE, f"charge must be an integer (got {charge!r})")
    if not isinstance(multiplicity, int) or multiplicity < 1:
        raise bad_input(CODE, f"multiplicity must be an integer >= 1 (got {multiplicity!r})")
    if not np.isfinite(atoms.positions).all():
        raise bad_input(CODE, "the structure has non-finite positions")


def find_data_file(name: str) -> Path | None:
    """Where the CP2K data file ``name`` is on this machine, or ``None`` if not readable here.

    A path is taken as is; a bare name is looked up in ``$CP2K_DATA_DIR`` (else Debian's
    ``/usr/share/cp2k``). In a container the file may exist only inside the image: then the
    settings are not checked here and CP2K itself reports unknown names (``code_error``).
    """
    candidate = Path(name)
    if not candidate.is_absolute() and len(candidate.parts) == 1:
        candidate = Path(os.environ.get("CP2K_DATA_DIR") or DATA_DIR) / name
    return candidate if candidate.is_file() else None


def _headers(path: Path) -> dict[str, list[list[str]]]:
    """Element → list of name lists from a CP2K basis/potential file's header lines."""
    found: dict[str, list[list[str]]] = {}
    with open(path, errors="replace") as handle:
        for line in handle:
            words = line.split("#", 1)[0].split()
            if len(words) >= 2 and words[0].isalpha() and not _is_number(words[1]):
                found.setdefault(words[0].lower(), []).append([w.upper() for w in words[1:]])
    return found


def _is_number(word: str) -> bool:
    try:
        float(word.replace("D", "E").replace("d", "e"))
    except ValueError:
        return False
    return True


def _valence(
    symbols: list[str], basis: str, potential: str, basis_file: str, potential_file: str
) -> dict[str, int] | None:
    """Check names against readable data files; valence electrons per element when known."""
    basis_path = find_data_file(basis_file)
    if basis_path is not None:
        table = _headers(basis_path)
        missing = [
            s for s in symbols if not any(basis.upper() in n for n in table.get(s.lower(), []))
        ]
        if missing:
            raise bad_input(CODE, f"basis {basis} has no entry for {missing} in {basis_path}")
    potential_path = find_data_file(potential_file)
    if potential_path is None:
        return None
    table = _headers(potential_path)
    valence: dict[str, int] = {}
    for symbol in symbols:
        entry = next((n for n in table.get(symbol.lower(), []) if potential.upper() in n), None)
        if entry is None:
            raise bad_input(
                CODE, f"potential {potential} has no entry for {symbol} in {potential_path}"
            )
        charges = [int(m.group(1)) for n in entry if (m := re.search(r"-Q(\d+)$", n))]
        if not charges:
            return None  # no -qN name: valence unknown here, CP2K will judge
        valence[symbol] = charges[0]
    return valence


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def error_box(text: str) -> str | None:
    """The message of CP2K's ``[ABORT]`` box in ``text`` (with its source location), if any."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if "[ABORT]" not in line:
            continue
        start = max((j for j in range(i) if _BORDER.match(lines[j])), default=i - 3)
        end = next((j for j in range(i + 1, len(lines)) if _BORDER.match(lines[j])), len(lines))
        words = [ln[12:].rstrip().rstrip("*").strip() for ln in lines[start + 1 : end]]
        words = [w for w in words if w]
        location = words.pop() if words and re.search(r"\.F:\d+$", words[-1]) else None
        message = " ".join(" ".join(words).split())
        return f"{message} ({location})" if location else message or "CP2K aborted"
    return None


def _parse(run: Run, *, natoms: int, forces: bool, max_scf: int) -> Cp2kResult:
    output = run.files.get(OUTPUT_FILE, "")
    abort = error_box(output) or error_box(run.stdout)
    if abort is not None:
        raise run.failure(CODE_ERROR, abort)
    if run.returncode != 0:
        raise run.failure(NONZERO_EXIT, f"exited with status {run.returncode}")
    if _NOT_CONVERGED in output:
        raise run.failure(NOT_CONVERGED, f"SCF run NOT converged within max_scf={max_scf}")
    energies = _ENERGY.findall(output)
    if not energies:
        raise run.failure(OUTPUT_MISSING, f"no final energy line in {OUTPUT_FILE}")
    try:
        energy = float(energies[-1])
    except ValueError:
        energy = math.nan
    if not math.isfinite(energy):
        raise run.failure(OUTPUT_UNPARSABLE, f"final energy is not a number: {energies[-1]!r}")
    steps = _SCF_DONE.findall(output)
    ranks = _RANKS.findall(output)
    force_list = _read_forces(run, natoms) if forces else None
    return Cp2kResult(
        energy_hartree=energy,
        forces_ev_per_angstrom=force_list,
        scf_converged=True,
        scf_steps=int(steps[-1]) if steps else None,
        seconds=run.seconds,
        ranks=int(ranks[-1]) if ranks else None,
    )


def _read_forces(run: Run, natoms: int) -> list[list[float]]:
    text = _read(run.workdir / FORCES_FILE)
    if not text:
        raise run.failure(OUTPUT_MISSING, f"no forces file {FORCES_FILE}")
    rows = []
    for line in text.splitlines():
        words = line.split()
        if len(words) == 6 and words[0].isdigit() and words[1].isdigit():
            try:
                rows.append([float(w) * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM for w in words[3:]])
            except ValueError:
                break
    if len(rows) != natoms:
        raise run.failure(
            OUTPUT_UNPARSABLE, f"{FORCES_FILE} has {len(rows)} force rows for {natoms} atoms"
        )
    return rows
