"""xTB (GFN-xTB tight binding) on a worker: energies, optimisations, vertical IP/EA.

Each call runs the ``xtb`` program once, in a fresh directory, with ``--norestart`` (a leftover
``xtbrestart``, ``.CHRG`` or ``.UHF`` file would otherwise be used silently) and explicit
``--chrg``/``--uhf``. The site's ``commands: {xtb: ...}`` decides how it is launched.

Values come from ``xtbout.json`` (``--json``) where it has them; the total energy is read from
the final ``TOTAL ENERGY`` box on stdout, which keeps 12 decimals where the JSON keeps 8, and is
cross-checked against the JSON value. The vertical IP/EA are only printed on stdout.

Failures (``SimulationError.reason``):

============================================  ==================  ================================
condition                                     reason              how it is detected
============================================  ==================  ================================
``xtb`` (or the site's command) not found     ``binary_missing``  before launch (``run_code``)
charge/multiplicity/settings/elements absurd  ``bad_input``       before launch (this module)
run longer than ``walltime``                  ``timeout``         process group killed
SCC or geometry optimisation not converged    ``not_converged``   ``did not converge`` in the
                                                                  ``[ERROR]`` block (exit 1), or
                                                                  ``FAILED TO CONVERGE GEOMETRY
                                                                  OPTIMIZATION`` (exit 0)
any other ``[ERROR]`` block                   ``code_error``      ``[ERROR]`` on stdout
other non-zero exit                           ``nonzero_exit``    exit status
no ``xtbout.json``/energy/IP/optimised xyz    ``output_missing``  after a clean exit
JSON or xyz that cannot be read, or the JSON  ``output_unparsable``
and stdout energies disagree
============================================  ==================  ================================
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ase.io
from ase import Atoms

from orchestrator.apps.sim.common import (
    CODE_ERROR,
    NONZERO_EXIT,
    NOT_CONVERGED,
    OUTPUT_MISSING,
    OUTPUT_UNPARSABLE,
    Keep,
    Run,
    bad_input,
    resolve_command,
    run_code,
    workdir,
)
from orchestrator.apps.sim.structures import check_molecule, spin_state, to_atoms

CODE = "xtb"
DEFAULT_COMMAND = ("xtb",)
DATA_DIR = "/usr/share/xtb"
"""Where Debian's xtb keeps its parameter files; ``XTBPATH`` defaults to it (``--vipea`` and
GFN0 do not find their parameters without it)."""

MAX_Z = 86
"""xTB's GFN1/GFN2 parametrisations cover H to Rn."""

OptLevel = Literal["crude", "sloppy", "loose", "lax", "normal", "tight", "vtight", "extreme"]
OPT_LEVELS = ("crude", "sloppy", "loose", "lax", "normal", "tight", "vtight", "extreme")

_STRUCTURE_FILE = "structure.xyz"
_JSON_FILE = "xtbout.json"
_OPT_FILE = "xtbopt.xyz"

_FLOAT = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eEdD][-+]?\d+)?"
_TOTAL_ENERGY_RE = re.compile(rf"^\s*\|\s*TOTAL ENERGY\s+({_FLOAT})\s+Eh\s*\|", re.M)
_IP_RE = re.compile(rf"^\s*delta SCC IP \(eV\):\s*({_FLOAT})\s*$", re.M)
_EA_RE = re.compile(rf"^\s*delta SCC EA \(eV\):\s*({_FLOAT})\s*$", re.M)
_VERSION_RE = re.compile(r"^\s*\*\s*xtb version\s+(\S+)", re.M)
_OPT_FAILED_RE = re.compile(r"FAILED TO CONVERGE GEOMETRY OPTIMIZATION[^\n]*")
_ENERGY_AGREEMENT_HARTREE = 1e-7
"""The JSON keeps 8 decimals: its energy and the 12-decimal stdout one agree to 5e-9 Eh."""


@dataclass(frozen=True)
class XtbResult:
    """An xTB energy (and geometry, when optimised).

    Attributes:
        energy_hartree: Total energy (Eh) at ``atoms``' geometry.
        homo_lumo_gap_ev: HOMO-LUMO gap (eV), when xtb reports one.
        atoms: The geometry the energy belongs to: the optimised one when ``optimized``, else a
            copy of the input. ``atoms.info["charge"]`` holds the charge used.
        optimized: Whether a geometry optimisation was run (and converged).
        charge: Total charge (e).
        multiplicity: Spin multiplicity (unpaired electrons + 1).
        method: The Hamiltonian, as xtb names it (``GFN2-xTB``).
        seconds: Wall time of the xtb process (s).
        xtb_version: The program's version string, when printed.
    """

    energy_hartree: float
    homo_lumo_gap_ev: float | None
    atoms: Atoms
    optimized: bool
    charge: int
    multiplicity: int
    method: str
    seconds: float
    xtb_version: str | None


@dataclass(frozen=True)
class XtbIpEaResult:
    """Vertical ionization potential and electron affinity from IPEA-xTB (``xtb --vipea``).

    Attributes:
        ip_ev: Vertical ionization potential (eV), xtb's "delta SCC IP" (4 decimals).
        ea_ev: Vertical electron affinity (eV), xtb's "delta SCC EA" (4 decimals).
        charge: Charge of the reference state (e).
        multiplicity: Spin multiplicity of the reference state.
        method: ``IPEA-xTB`` (xtb switches to its IPEA parametrisation for ``--vipea``).
        seconds: Wall time of the xtb process (s).
        xtb_version: The program's version string, when printed.
    """

    ip_ev: float
    ea_ev: float
    charge: int
    multiplicity: int
    method: str
    seconds: float
    xtb_version: str | None


def xtb_energy(
    structure: Atoms | str,
    *,
    optimize: bool = False,
    charge: int | None = None,
    multiplicity: int | None = None,
    gfn: Literal[1, 2] = 2,
    accuracy: float = 1.0,
    max_iterations: int = 250,
    opt_level: OptLevel = "normal",
    max_opt_cycles: int | None = None,
    walltime: float = 300.0,
    threads: int | None = None,
    keep: Keep = "failed",
) -> XtbResult:
    """GFN-xTB total energy of a molecule, optionally after a geometry optimisation.

    Args:
        structure: ASE ``Atoms`` (non-periodic) or a SMILES string (made 3-D by RDKit).
        optimize: Relax the geometry first (``--opt``); the result carries the final geometry.
        charge: Total charge; default ``atoms.info["charge"]`` (a SMILES' formal charge), else 0.
        multiplicity: Spin multiplicity (``--uhf multiplicity-1``); default the lowest one the
            electron count allows (1 or 2).
        gfn: GFN parametrisation, 2 (default) or 1.
        accuracy: xtb's ``--acc`` (smaller is tighter), 1e-4 to 1e3.
        max_iterations: Most SCC iterations (``--iterations``).
        opt_level: Optimisation convergence level (``--opt LEVEL``).
        max_opt_cycles: Most optimisation cycles (``--cycles``); default xtb's own choice.
        walltime: Seconds before the run is killed.
        threads: OpenMP threads; default the task's ``threads_per_rank`` (1 outside a task).
            xtb is not an MPI code: a task's ranks never put a launcher before it.
        keep: When to keep the working directory: ``failed`` (default), ``never``, ``always``.

    Returns:
        The energy, HOMO-LUMO gap and geometry.

    Raises:
        SimulationError: With ``reason`` as in this module's table.
    """
    atoms = to_atoms(structure, code=CODE)
    charge, multiplicity = _check_inputs(atoms, charge, multiplicity)
    if gfn not in (1, 2):
        raise bad_input(CODE, f"gfn must be 1 or 2 (got {gfn!r})")
    if not (isinstance(accuracy, int | float) and 1e-4 <= accuracy <= 1e3):
        raise bad_input(CODE, f"accuracy must be between 1e-4 and 1e3 (got {accuracy!r})")
    _check_count("max_iterations", max_iterations)
    if opt_level not in OPT_LEVELS:
        raise bad_input(
            CODE, f"opt_level must be one of {', '.join(OPT_LEVELS)} (got {opt_level!r})"
        )
    if max_opt_cycles is not None:
        _check_count("max_opt_cycles", max_opt_cycles)

    args = [
        "--gfn",
        str(gfn),
        "--acc",
        repr(float(accuracy)),
        "--iterations",
        str(max_iterations),
    ]
    if optimize:
        args += ["--opt", opt_level]
        if max_opt_cycles is not None:
            args += ["--cycles", str(max_opt_cycles)]

    with workdir(CODE, keep=keep) as path:
        run = _run(path, atoms, charge, multiplicity, args, walltime=walltime, threads=threads)
        if optimize:
            failed = _OPT_FAILED_RE.search(run.stdout)
            if failed:
                raise run.failure(NOT_CONVERGED, failed.group(0).strip(" *"))
        data = _read_json(run)
        energy = _total_energy(run, data)
        final = _read_optimized(run, len(atoms)) if optimize else atoms
        final.info["charge"] = charge
        gap = data.get("HOMO-LUMO gap/eV")
        return XtbResult(
            energy_hartree=energy,
            homo_lumo_gap_ev=float(gap) if isinstance(gap, int | float) else None,
            atoms=final,
            optimized=optimize,
            charge=charge,
            multiplicity=multiplicity,
            method=str(data.get("method") or f"GFN{gfn}-xTB"),
            seconds=run.seconds,
            xtb_version=_version(run, data),
        )


def xtb_ip_ea(
    structure: Atoms | str,
    *,
    charge: int | None = None,
    multiplicity: int | None = None,
    accuracy: float = 1.0,
    max_iterations: int = 250,
    walltime: float = 300.0,
    threads: int | None = None,
    keep: Keep = "failed",
) -> XtbIpEaResult:
    """Vertical ionization potential and electron affinity (``xtb --vipea``, IPEA-xTB).

    Args:
        structure: ASE ``Atoms`` (non-periodic) or a SMILES string (made 3-D by RDKit).
        charge: Charge of the reference state; default ``atoms.info["charge"]``, else 0.
        multiplicity: Spin multiplicity of the reference state; default the lowest allowed.
        accuracy: xtb's ``--acc`` (smaller is tighter), 1e-4 to 1e3.
        max_iterations: Most SCC iterations (``--iterations``).
        walltime: Seconds before the run is killed.
        threads: OpenMP threads; default the task's ``threads_per_rank`` (1 outside a task).
            xtb is not an MPI code: a task's ranks never put a launcher before it.
        keep: When to keep the working directory: ``failed`` (default), ``never``, ``always``.

    Returns:
        The vertical IP and EA in eV.

    Raises:
        SimulationError: With ``reason`` as in this module's table.
    """
    atoms = to_atoms(structure, code=CODE)
    charge, multiplicity = _check_inputs(atoms, charge, multiplicity)
    if not (isinstance(accuracy, int | float) and 1e-4 <= accuracy <= 1e3):
        raise bad_input(CODE, f"accuracy must be between 1e-4 and 1e3 (got {accuracy!r})")
    _check_count("max_iterations", max_iterations)
    args = ["--vipea", "--acc", repr(float(accuracy)), "--iterations", str(max_iterations)]
    with workdir(CODE, keep=keep) as path:
        run = _run(path, atoms, charge, multiplicity, args, walltime=walltime, threads=threads)
        ip, ea = _IP_RE.search(run.stdout), _EA_RE.search(run.stdout)
        if ip is None or ea is None:
            missing = " and ".join(n for n, m in (("IP", ip), ("EA", ea)) if m is None)
            raise run.failure(OUTPUT_MISSING, f"no 'delta SCC {missing} (eV)' line on stdout")
        data = _read_json(run, required=False)
        return XtbIpEaResult(
            ip_ev=_to_float(run, ip.group(1), "IP"),
            ea_ev=_to_float(run, ea.group(1), "EA"),
            charge=charge,
            multiplicity=multiplicity,
            method="IPEA-xTB",
            seconds=run.seconds,
            xtb_version=_version(run, data),
        )


# -- inputs -----------------------------------------------------------------------------------


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_input(CODE, f"{name} must be a positive integer (got {value!r})")


def _check_inputs(atoms: Atoms, charge: Any, multiplicity: Any) -> tuple[int, int]:
    """Validate the molecule, its elements, charge and multiplicity; return (charge, mult)."""
    check_molecule(CODE, atoms)
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(
        {s for s, z in zip(symbols, atoms.numbers, strict=True) if not 1 <= z <= MAX_Z}
    )
    if unknown:
        raise bad_input(CODE, f"xTB has no parameters for element(s) {', '.join(unknown)} (H-Rn)")
    return spin_state(CODE, atoms, charge, multiplicity)


def _xtbpath(command: list[str]) -> str:
    """``XTBPATH`` for the run.

    The caller's, else a ``share/xtb`` next to the ``xtb`` binary, else Debian's data directory.
    """
    if os.environ.get("XTBPATH"):
        return os.environ["XTBPATH"]
    found = shutil.which(command[0]) if command else None
    if found and Path(command[0]).name == "xtb":
        share = Path(found).resolve().parent.parent / "share" / "xtb"
        if share.is_dir():
            return str(share)
    return DATA_DIR


# -- running and reading ----------------------------------------------------------------------


def _run(
    path: Path,
    atoms: Atoms,
    charge: int,
    multiplicity: int,
    args: list[str],
    *,
    walltime: float,
    threads: int | None,
) -> Run:
    """Write the structure, run xtb on it, and raise for errors it reported."""
    ase.io.write(path / _STRUCTURE_FILE, atoms, format="xyz")
    argv = [
        _STRUCTURE_FILE,
        "--norestart",
        "--json",
        "--chrg",
        str(charge),
        "--uhf",
        str(multiplicity - 1),
        *args,
    ]
    run = run_code(
        CODE,
        argv,
        workdir=path,
        walltime=walltime,
        default_command=DEFAULT_COMMAND,
        threads=threads,
        parallel=False,
        env={"XTBPATH": _xtbpath(resolve_command(CODE, DEFAULT_COMMAND))},
    )
    _check_errors(run)
    return run


def _check_errors(run: Run) -> None:
    """Raise for an ``[ERROR]`` block or a non-zero exit."""
    lines = run.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if line.lstrip().startswith("[ERROR]")]
    if starts:
        block = [lines[starts[0]].strip()]
        for line in lines[starts[0] + 1 :]:
            if not re.match(r"\s*-\d+-", line):
                break
            block.append(line.strip())
        # xtb prints the call stack outermost first: "-1-" is the actual cause
        causes = [re.sub(r"^-\d+-\s*", "", b) for b in block[1:]]
        message = f"{block[0]}: {causes[-1]}" if causes else block[0]
        text = "\n".join(block).lower()
        if "not converge" in text:
            raise run.failure(NOT_CONVERGED, message)
        raise run.failure(CODE_ERROR, message)
    if run.returncode != 0:
        raise run.failure(NONZERO_EXIT, f"exited with status {run.returncode}")


def _read_json(run: Run, *, required: bool = True) -> dict[str, Any]:
    path = run.workdir / _JSON_FILE
    if not path.is_file():
        if not required:
            return {}
        raise run.failure(OUTPUT_MISSING, f"xtb exited cleanly but wrote no {_JSON_FILE}")
    try:
        data = json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError as exc:
        raise run.failure(OUTPUT_UNPARSABLE, f"{_JSON_FILE} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise run.failure(OUTPUT_UNPARSABLE, f"{_JSON_FILE} does not hold a JSON object")
    return data


def _to_float(run: Run, text: str, what: str) -> float:
    try:
        value = float(text.replace("D", "E").replace("d", "e"))
    except ValueError:
        raise run.failure(OUTPUT_UNPARSABLE, f"cannot read {what} from {text!r}") from None
    if not math.isfinite(value):
        raise run.failure(OUTPUT_UNPARSABLE, f"{what} is not finite ({text})")
    return value


def _total_energy(run: Run, data: dict[str, Any]) -> float:
    """The final energy: stdout's 12-decimal value, checked against the JSON's 8 decimals."""
    from_json = data.get("total energy")
    found = _TOTAL_ENERGY_RE.findall(run.stdout)
    if not found:
        if isinstance(from_json, int | float) and math.isfinite(from_json):
            return float(from_json)
        raise run.failure(OUTPUT_MISSING, "no total energy in xtbout.json or on stdout")
    energy = _to_float(run, found[-1], "TOTAL ENERGY")
    if from_json is not None:
        if not isinstance(from_json, int | float):
            raise run.failure(OUTPUT_UNPARSABLE, f"xtbout.json total energy is {from_json!r}")
        if abs(energy - from_json) > _ENERGY_AGREEMENT_HARTREE:
            raise run.failure(
                OUTPUT_UNPARSABLE,
                f"stdout energy {energy} Eh and xtbout.json energy {from_json} Eh disagree",
            )
    return energy


def _read_optimized(run: Run, natoms: int) -> Atoms:
    path = run.workdir / _OPT_FILE
    if not path.is_file():
        raise run.failure(OUTPUT_MISSING, f"optimisation finished but wrote no {_OPT_FILE}")
    try:
        atoms = ase.io.read(path, format="xyz")
    except Exception as exc:  # noqa: BLE001 - any reader error means an unreadable file
        raise run.failure(OUTPUT_UNPARSABLE, f"cannot read {_OPT_FILE}: {exc}") from None
    if not isinstance(atoms, Atoms) or len(atoms) != natoms:
        raise run.failure(OUTPUT_UNPARSABLE, f"{_OPT_FILE} does not hold the {natoms} atoms")
    return atoms


def _version(run: Run, data: dict[str, Any]) -> str | None:
    version = data.get("xtb version")
    if isinstance(version, str) and version.strip():
        return version.split()[0]
    found = _VERSION_RE.search(run.stdout)
    return found.group(1) if found else None
