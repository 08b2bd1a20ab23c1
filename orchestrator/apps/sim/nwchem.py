"""NWChem on a worker: SCF/DFT energies and vertical ionization potentials.

Each call writes one input with ASE's NWChem writer (``ase.io.nwchem.write_nwchem_in``: geometry
as given, ``nocenter noautosym noautoz``; permanent and scratch directories inside the fresh
working directory) and runs the ``nwchem`` program once; the site's ``commands: {nwchem: ...}``
decides how it is launched. A vertical IP is one job with two tasks (neutral, then cation at the
same geometry); each task prints one ``Total SCF energy =``/``Total DFT energy =`` line, read with
all the digits NWChem prints (12 decimals).

Open shells use unrestricted references: ``uhf`` for SCF, and DFT's default (unrestricted) for a
multiplicity above 1.

Failures (``SimulationError.reason``). NWChem's own errors are printed as a block (message,
``current input line``, a category line); it exits 255 for non-convergence, an unknown basis or a
bad keyword, 10 for an impossible multiplicity, 1 for some other input errors, and still prints an
energy line for an unconverged task, so both the exit status and the text are checked:

=============================================  ===================  ===========================
condition                                      reason               how it is detected
=============================================  ===================  ===========================
``nwchem`` (or the site's command) not found   ``binary_missing``   before launch (``run_code``)
bad settings: theory, basis/xc names, element  ``bad_input``        before launch (this module)
without a basis, charge, multiplicity that
the electron count cannot have, pbc
run longer than ``walltime``                   ``timeout``          process group killed
SCF/DFT not converged in ``max_iterations``    ``not_converged``    ``Calculation failed to
                                                                    converge`` or the category
                                                                    ``...not reaching
                                                                    convergence criteria``
unknown basis set (no such library file)       ``code_error``       error block (exit 255)
multiplicity NWChem rejects (exit 10), or one  ``code_error``       error block, or an
the basis cannot hold (ARMCI error)                                 ``ARMCI Error`` line
any other NWChem error block                   ``code_error``       error block
other non-zero exit                            ``nonzero_exit``     exit status
fewer energy lines than tasks after exit 0     ``output_missing``   energy lines
=============================================  ===================  ===========================

An unknown basis is a ``code_error``, not ``bad_input``: only NWChem knows which basis files its
installation (or container image) has, so it is found out by running it.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ase import Atoms
from ase.data import chemical_symbols
from ase.io.nwchem import write_nwchem_in
from ase.units import Hartree

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
from orchestrator.apps.sim.structures import check_molecule, spin_state, to_atoms

CODE = "nwchem"
DEFAULT_COMMAND = ("nwchem",)

Theory = Literal["scf", "dft"]
THEORIES = ("scf", "dft")

_INPUT_FILE = "nwchem.nw"
_LABEL = "nwchem"

_FLOAT = r"[-+]?\d+\.\d+(?:[eEdD][-+]?\d+)?"
_ENERGY_RE = re.compile(rf"^\s*Total (SCF|DFT) energy\s*=\s*({_FLOAT})\s*$", re.M)
_NPROC_RE = re.compile(r"^\s*nproc\s*=\s*(\d+)\s*$", re.M)
"""The rank count in NWChem's "Job information" block."""
_VERSION_RE = re.compile(r"Northwest Computational Chemistry Package \(NWChem\)\s+(\S+)")
_DASHES = r"[ \t]*-{20,}[ \t]*\n"
_ERROR_RE = re.compile(
    rf"^{_DASHES}(?P<message>[^\n]*\S)[ \t]*\n{_DASHES}{_DASHES}"
    rf"[ \t]*current input line :[^\n]*\n(?P<line>[^\n]*)\n{_DASHES}{_DASHES}"
    rf"(?P<category>[^\n]*)\n",
    re.M,
)
"""NWChem's error report: message (and code), the input line it was at, a category line."""
_NOT_CONVERGED_TEXT = ("Calculation failed to converge", "not reaching convergence criteria")
_MISSING_FILE_RE = re.compile(r"non-existing file:\s*\n\s*(\S+)")
_ARMCI_RE = re.compile(r"^.*ARMCI Error.*$", re.M)
_NAME_RE = re.compile(r"^[A-Za-z0-9*+()',._-]+$")
_XC_RE = re.compile(r"^[A-Za-z0-9+()',._ -]+$")


@dataclass(frozen=True)
class NWChemResult:
    """An NWChem SCF or DFT energy.

    Attributes:
        energy_hartree: Total energy (Eh), as NWChem prints it (12 decimals).
        converged: Always ``True``: unconverged runs raise ``not_converged`` instead.
        theory: ``scf`` or ``dft``.
        basis: The basis set: one name for all elements, or element → name.
        xc: The exchange-correlation functional (``dft``), else ``None``.
        charge: Total charge (e).
        multiplicity: Spin multiplicity.
        seconds: Wall time of the nwchem process (s).
        nwchem_version: The program's version, when printed.
        ranks: MPI ranks the run used, as NWChem reports them (``nproc`` in its job
            information); ``None`` when not printed.
    """

    energy_hartree: float
    converged: bool
    theory: str
    basis: str | dict[str, str]
    xc: str | None
    charge: int
    multiplicity: int
    seconds: float
    nwchem_version: str | None
    ranks: int | None = None


@dataclass(frozen=True)
class NWChemIpResult:
    """A vertical ionization potential from one NWChem job (neutral and cation tasks).

    Attributes:
        ip_ev: ``(cation_energy_hartree - neutral_energy_hartree)`` in eV (``ase.units``).
        neutral_energy_hartree: Energy of the reference state (Eh).
        cation_energy_hartree: Energy with one electron removed, same geometry (Eh).
        theory: ``scf`` or ``dft``.
        basis: The basis set: one name for all elements, or element → name.
        xc: The exchange-correlation functional (``dft``), else ``None``.
        charge: Charge of the reference state (the cation's is ``charge + 1``).
        multiplicity: Spin multiplicity of the reference state.
        cation_multiplicity: Spin multiplicity of the cation.
        seconds: Wall time of the nwchem process (s).
        nwchem_version: The program's version, when printed.
        ranks: MPI ranks the run used, as NWChem reports them (``nproc`` in its job
            information); ``None`` when not printed.
    """

    ip_ev: float
    neutral_energy_hartree: float
    cation_energy_hartree: float
    theory: str
    basis: str | dict[str, str]
    xc: str | None
    charge: int
    multiplicity: int
    cation_multiplicity: int
    seconds: float
    nwchem_version: str | None
    ranks: int | None = None


def nwchem_energy(
    structure: Atoms | str,
    *,
    basis: str | Mapping[str, str] = "6-31g*",
    theory: Theory = "scf",
    xc: str = "b3lyp",
    charge: int | None = None,
    multiplicity: int | None = None,
    max_iterations: int = 100,
    walltime: float = 600.0,
    threads: int | None = None,
    keep: Keep = "failed",
) -> NWChemResult:
    """SCF (Hartree-Fock) or DFT total energy of a molecule at the given geometry.

    Args:
        structure: ASE ``Atoms`` (non-periodic) or a SMILES string (made 3-D by RDKit).
        basis: A basis set name from NWChem's library for every element, or element → name.
        theory: ``scf`` (Hartree-Fock: RHF for singlets, else UHF) or ``dft``.
        xc: Exchange-correlation functional for ``dft`` (NWChem's name, or ASE's ``pbe``/``lda``
            shorthands); ignored for ``scf``.
        charge: Total charge; default ``atoms.info["charge"]`` (a SMILES' formal charge), else 0.
        multiplicity: Spin multiplicity; default the lowest the electron count allows (1 or 2).
        max_iterations: Most SCF iterations (``maxiter`` for scf, ``iterations`` for dft).
        walltime: Seconds before the run is killed.
        threads: OpenMP threads per rank; default the task's ``threads_per_rank`` (1 outside
            a task). MPI ranks come from the task's resources (see ``orchestrator.apps.mpi``).
        keep: When to keep the working directory: ``failed`` (default), ``never``, ``always``.

    Returns:
        The converged energy.

    Raises:
        SimulationError: With ``reason`` as in this module's table.
    """
    atoms = to_atoms(structure, code=CODE)
    basis_, xc_ = _check_settings(atoms, basis, theory, xc, max_iterations)
    charge, multiplicity = spin_state(CODE, atoms, charge, multiplicity)
    with workdir(CODE, keep=keep) as path:
        text = _render(atoms, path, theory, basis_, xc_, charge, multiplicity, max_iterations)
        run = _run(path, text, walltime=walltime, threads=threads)
        (energy,) = _energies(run, tasks=("energy",))
        return NWChemResult(
            energy_hartree=energy,
            converged=True,
            theory=theory,
            basis=basis_,
            xc=xc_,
            charge=charge,
            multiplicity=multiplicity,
            seconds=run.seconds,
            nwchem_version=_version(run),
            ranks=_ranks(run),
        )


def nwchem_ip(
    structure: Atoms | str,
    *,
    basis: str | Mapping[str, str] = "6-31g*",
    theory: Theory = "scf",
    xc: str = "b3lyp",
    charge: int | None = None,
    multiplicity: int | None = None,
    cation_multiplicity: int | None = None,
    max_iterations: int = 100,
    walltime: float = 600.0,
    threads: int | None = None,
    keep: Keep = "failed",
) -> NWChemIpResult:
    """Vertical ionization potential: neutral and cation energies at one geometry, one job.

    Args:
        structure: ASE ``Atoms`` (non-periodic) or a SMILES string (made 3-D by RDKit).
        basis: A basis set name from NWChem's library for every element, or element → name.
        theory: ``scf`` (Hartree-Fock) or ``dft``.
        xc: Exchange-correlation functional for ``dft``; ignored for ``scf``.
        charge: Charge of the reference state; default ``atoms.info["charge"]``, else 0.
        multiplicity: Multiplicity of the reference state; default the lowest allowed.
        cation_multiplicity: Multiplicity of the cation; default one less unpaired electron
            for an open-shell reference, else a doublet (closed-shell reference).
        max_iterations: Most SCF iterations per task.
        walltime: Seconds before the whole job is killed.
        threads: OpenMP threads per rank; default the task's ``threads_per_rank`` (1 outside
            a task). MPI ranks come from the task's resources (see ``orchestrator.apps.mpi``).
        keep: When to keep the working directory: ``failed`` (default), ``never``, ``always``.

    Returns:
        The IP (eV) and both energies (Eh).

    Raises:
        SimulationError: With ``reason`` as in this module's table.
    """
    atoms = to_atoms(structure, code=CODE)
    basis_, xc_ = _check_settings(atoms, basis, theory, xc, max_iterations)
    charge, multiplicity = spin_state(CODE, atoms, charge, multiplicity)
    if cation_multiplicity is None:
        cation_multiplicity = 2 if multiplicity == 1 else multiplicity - 1
    _, cation_multiplicity = spin_state(CODE, atoms, charge + 1, cation_multiplicity, what="cation")
    with workdir(CODE, keep=keep) as path:
        text = _render(atoms, path, theory, basis_, xc_, charge, multiplicity, max_iterations)
        text += _cation_task(theory, charge + 1, cation_multiplicity)
        run = _run(path, text, walltime=walltime, threads=threads)
        neutral, cation = _energies(run, tasks=("neutral", "cation"))
        return NWChemIpResult(
            ip_ev=(cation - neutral) * Hartree,
            neutral_energy_hartree=neutral,
            cation_energy_hartree=cation,
            theory=theory,
            basis=basis_,
            xc=xc_,
            charge=charge,
            multiplicity=multiplicity,
            cation_multiplicity=cation_multiplicity,
            seconds=run.seconds,
            nwchem_version=_version(run),
            ranks=_ranks(run),
        )


# -- inputs -----------------------------------------------------------------------------------


def _check_settings(
    atoms: Atoms, basis: Any, theory: Any, xc: Any, max_iterations: Any
) -> tuple[str | dict[str, str], str | None]:
    """Validate everything but charge and multiplicity; return (basis, xc or None)."""
    check_molecule(CODE, atoms)
    symbols = atoms.get_chemical_symbols()
    if theory not in THEORIES:
        raise bad_input(CODE, f"theory must be one of {', '.join(THEORIES)} (got {theory!r})")
    if (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, int)
        or max_iterations < 1
    ):
        raise bad_input(CODE, f"max_iterations must be a positive integer (got {max_iterations!r})")

    basis_: str | dict[str, str]
    if isinstance(basis, str):
        names = [basis]
        basis_ = basis
    elif isinstance(basis, Mapping):
        basis_ = {str(k): v for k, v in basis.items()}
        names = list(basis_.values())
        unknown = sorted(k for k in basis_ if k not in chemical_symbols[1:])
        if unknown:
            raise bad_input(CODE, f"basis names unknown element(s): {', '.join(unknown)}")
        missing = sorted(set(symbols) - set(basis_))
        if missing:
            raise bad_input(CODE, f"no basis set given for element(s) {', '.join(missing)}")
    else:
        raise bad_input(CODE, f"basis must be a name or element → name (got {basis!r})")
    for name in names:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise bad_input(CODE, f"invalid basis set name {name!r}")

    if theory != "dft":
        return basis_, None
    if not isinstance(xc, str) or not _XC_RE.match(xc) or not xc.strip():
        raise bad_input(CODE, f"invalid exchange-correlation functional {xc!r}")
    return basis_, xc.strip()


def _theory_block(theory: str, multiplicity: int, max_iterations: int) -> dict[str, Any]:
    if theory == "scf":
        reference = "rhf" if multiplicity == 1 else "uhf"
        return {"nopen": multiplicity - 1, reference: None, "maxiter": max_iterations}
    return {"mult": multiplicity, "iterations": max_iterations}


def _render(
    atoms: Atoms,
    path: Path,
    theory: str,
    basis: str | dict[str, str],
    xc: str | None,
    charge: int,
    multiplicity: int,
    max_iterations: int,
) -> str:
    """The input for one energy task, written by ASE."""
    plain = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions)  # no magmoms
    params: dict[str, Any] = {
        "label": _LABEL,
        "perm": str(path),
        "scratch": str(path),
        "theory": theory,
        "basis": basis,
        "charge": charge,
        theory: _theory_block(theory, multiplicity, max_iterations),
    }
    if xc is not None:
        params["xc"] = xc
    buffer = io.StringIO()
    write_nwchem_in(buffer, plain, **params)
    return buffer.getvalue().rstrip() + "\n"


def _cation_task(theory: str, charge: int, multiplicity: int) -> str:
    """A second task: same geometry, basis and settings; new charge and multiplicity."""
    if theory == "scf":
        reference = "rhf" if multiplicity == 1 else "uhf"
        block = f"scf\n  nopen {multiplicity - 1}\n  {reference}\nend"
    else:
        block = f"dft\n  mult {multiplicity}\nend"
    return f"\ncharge {charge}\n\n{block}\n\ntask {theory} energy\n"


# -- running and reading ----------------------------------------------------------------------


def _run(path: Path, text: str, *, walltime: float, threads: int | None) -> Run:
    (path / _INPUT_FILE).write_text(text)
    return run_code(
        CODE,
        [_INPUT_FILE],
        workdir=path,
        walltime=walltime,
        default_command=DEFAULT_COMMAND,
        threads=threads,
    )


def _energies(run: Run, *, tasks: tuple[str, ...]) -> list[float]:
    """One energy per task, after checking the exit status and NWChem's error reports."""
    found = _ENERGY_RE.findall(run.stdout)
    output = run.stdout + "\n" + run.stderr
    if any(text in output for text in _NOT_CONVERGED_TEXT):
        task = tasks[min(max(len(found) - 1, 0), len(tasks) - 1)]
        where = f" in the {task} task" if len(tasks) > 1 else ""
        method = found[-1][0] if found else "SCF"
        last = f"; last energy printed {found[-1][1]} Eh" if found else ""
        raise run.failure(
            NOT_CONVERGED, f"{method} did not converge{where} (exit {run.returncode}){last}"
        )
    error = _ERROR_RE.search(run.stdout)
    if error is not None:
        message = re.sub(r"\s+-?\d+$", "", error.group("message").strip())
        category = error.group("category").strip()
        detail = f"{message} ({category})" if category and set(category) != {"-"} else message
        missing_file = _MISSING_FILE_RE.search(run.stdout)
        if missing_file is not None:
            detail += f"; no file {missing_file.group(1)}"
        raise run.failure(CODE_ERROR, f"{detail}; at input line {error.group('line').strip()}")
    armci = _ARMCI_RE.search(output)
    if armci is not None:
        raise run.failure(CODE_ERROR, armci.group(0).strip())
    if run.returncode != 0:
        raise run.failure(NONZERO_EXIT, f"exited with status {run.returncode}")
    if len(found) < len(tasks):
        raise run.failure(
            OUTPUT_MISSING,
            f"found {len(found)} 'Total SCF/DFT energy' line(s) for {len(tasks)} task(s)",
        )
    if len(found) > len(tasks):
        raise run.failure(
            OUTPUT_UNPARSABLE,
            f"found {len(found)} 'Total SCF/DFT energy' lines for {len(tasks)} task(s)",
        )
    energies = []
    for _, text in found:
        try:
            value = float(text.replace("D", "E").replace("d", "e"))
        except ValueError:
            raise run.failure(OUTPUT_UNPARSABLE, f"cannot read an energy from {text!r}") from None
        if not math.isfinite(value):
            raise run.failure(OUTPUT_UNPARSABLE, f"energy is not finite ({text})")
        energies.append(value)
    return energies


def _version(run: Run) -> str | None:
    found = _VERSION_RE.search(run.stdout)
    return found.group(1) if found else None


def _ranks(run: Run) -> int | None:
    found = _NPROC_RE.search(run.stdout)
    return int(found.group(1)) if found else None
