"""LAMMPS molecular dynamics: a built-in setup, an ASE structure or a LAMMPS data file.

``lammps_md(...)`` writes ``in.lammps`` (and ``input.data`` via ASE for a structure, or a copy of
the given data file) into a fresh directory and runs ``<site command for lammps> -in in.lammps
-log log.lammps -nocite`` (default ``lmp``). Thermo output is printed with 15 significant digits
(``thermo_modify format float %.15g``) and the final energies with ``print "... $(pe:%.15g)"``,
so the values returned are exact, not the ~8 digits of LAMMPS's default thermo format.

Sources (exactly one):

- ``setup="lj"``: Lennard-Jones liquid in reduced units, an fcc lattice at density 0.8442
  (``cells`` = 5 → 500 atoms), ``lj/cut`` 2.5 σ, energy-shifted, mass 1.
- ``setup="water"``: rigid SPC/E water (SHAKE), ``cells`` cubed molecules on a 3.1 Å simple cubic
  lattice (4 → 64 molecules, ~1 g/cm³), random orientations, ``lj/cut/coul/long`` 6 Å with
  PPPM, real units. A small box for smoke and throughput tests, not production water. LAMMPS
  draws the orientations on each MPI rank from its own stream (``create_atoms ... mol``), so
  this start, unlike every other source, depends on the number of ranks.
- ``structure=``: ASE ``Atoms`` with a cell, written with ``ase.io.lammpsdata``; atom types
  follow the sorted chemical symbols (``types`` in the result); ``pair_style``/``pair_coeff``
  required.
- ``data_file=``: an existing LAMMPS data file (copied into the run directory);
  ``pair_style``/``pair_coeff`` required, masses must be in the file or ``extra_commands``.

MPI: the task's resources decide how many ranks run LAMMPS (``orchestrator.apps.mpi``); the
result's ``ranks`` is the count LAMMPS itself reports. Velocities are drawn from each atom's
position (``loop geom``), not its ID, so a run gives the same trajectory on any number of ranks
up to rounding (1 vs 2 ranks: |ΔE| ≤ 1e-11 of ~2800 after 200 LJ steps; chaos doubles it about
every 60 steps from there).

Trajectory (``dump_every`` > 0): LAMMPS writes ``trajectory.lammpstrj`` (text dump: id, type,
positions, velocities) in the run directory. On success it is moved to
``trajectory_dir/<run directory name>.lammpstrj`` (a name unique per run), or stays in the run
directory when ``keep="always"``; with neither, ``bad_input`` is raised before launch, because
the file would be deleted with the directory. :meth:`LammpsResult.frames` reads it with ASE.

How a run fails (``SimulationError.reason``):

=========================================  ===================================================
condition                                  reason
=========================================  ===================================================
steps < 0, timestep <= 0, unknown setup,   ``bad_input`` (before anything is launched)
missing data file, no/two sources, ...
``ERROR:`` line (illegal command, lost      ``code_error``, message = the ERROR line and the
atoms, bad data file...)                   last command
other non-zero exit                        ``nonzero_exit``
no ``ORCH_FINAL`` line / no thermo table   ``output_missing``
wall time exceeded                         ``timeout`` (process group killed)
=========================================  ===================================================
"""

from __future__ import annotations

import math
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import ase.io
from ase import Atoms

from orchestrator.apps.sim.common import (
    CODE_ERROR,
    OUTPUT_MISSING,
    OUTPUT_UNPARSABLE,
    Keep,
    Run,
    bad_input,
    run_code,
    workdir,
)

CODE = "lammps"
DEFAULT_COMMAND = ["lmp"]
INPUT_FILE = "in.lammps"
DATA_FILE = "input.data"
LOG_FILE = "log.lammps"
TRAJECTORY_FILE = "trajectory.lammpstrj"
SETUPS = ("lj", "water")
ENSEMBLES = ("nve", "nvt")
DEFAULT_CELLS = {"lj": 5, "water": 4}
"""Lattice cells per edge of the built-in setups: 500 LJ atoms, 64 water molecules."""
THERMO_COLUMNS = ("step", "temp", "pe", "ke", "etotal", "press")
"""Thermo keywords printed every ``thermo_every`` steps (``thermo_style custom``)."""

ASE_UNITS = ("real", "metal", "si", "cgs", "electron", "micro", "nano")
"""LAMMPS unit styles ASE converts to and from (structures need one of these)."""
DEFAULT_TIMESTEP = {"lj": 0.005, "real": 1.0, "metal": 0.001}
"""Timestep used when none is given (LAMMPS's own defaults: τ, fs, ps)."""
MAX_SEED = 900_000_000

Setup = Literal["lj", "water"]
Ensemble = Literal["nve", "nvt"]

_FINAL = re.compile(r"^ORCH_FINAL (.*)$", re.MULTILINE)
_ERROR = re.compile(r"^ERROR(?: on proc \d+)?: .*$", re.MULTILINE)
_LAST_COMMAND = re.compile(r"^Last command: (.*)$", re.MULTILINE)
_BOUNDARY = re.compile(r"^[pfsm]{1,2}( [pfsm]{1,2}){2}$")
_LOOP = re.compile(r"^Loop time of (\S+) on (\d+) procs", re.MULTILINE)

WATER_MOLECULE = """# SPC/E water: O at the origin, O-H 1.0 Å, H-O-H 109.47°

3 atoms
2 bonds
1 angles

Coords

1    0.00000  -0.05774   0.00000
2    0.81650   0.51966   0.00000
3   -0.81650   0.51966   0.00000

Types

1        1
2        2
3        2

Charges

1       -0.8476
2        0.4238
3        0.4238

Bonds

1   1      1      2
2   1      1      3

Angles

1   1      2      1      3

Shake Flags

1 1
2 1
3 1

Shake Atoms

1 1 2 3
2 1 2 3
3 1 2 3

Shake Bond Types

1 1 1 1
2 1 1 1
3 1 1 1
"""


@dataclass(frozen=True)
class LammpsResult:
    """A finished MD run. Energies are totals (not per atom) in the run's ``units``.

    Attributes:
        potential_energy: Final potential energy (``pe``).
        kinetic_energy: Final kinetic energy (``ke``).
        total_energy: Final total energy (``etotal``).
        temperature: Final temperature (``temp``).
        natoms: Number of atoms.
        steps: MD steps run.
        units: LAMMPS unit style (``lj``, ``real``, ``metal``...).
        types: Chemical symbol of each atom type (``types[0]`` is type 1), when known.
        thermo: Thermo table by column (:data:`THERMO_COLUMNS`), one value per thermo output:
            step 0, every ``thermo_every`` steps, and the last step, at 15 significant digits.
        trajectory: Path of the kept trajectory file, or ``None`` when none was asked.
        seconds: Wall time of the LAMMPS process.
        loop_seconds: LAMMPS's own "Loop time" of the MD run (without start-up).
        ranks: MPI ranks the run used, as LAMMPS reports them ("Loop time of ... on N
            procs"); ``None`` when not printed.
    """

    potential_energy: float
    kinetic_energy: float
    total_energy: float
    temperature: float
    natoms: int
    steps: int
    units: str
    types: tuple[str, ...] | None
    thermo: dict[str, list[float]]
    trajectory: str | None
    seconds: float
    loop_seconds: float | None
    ranks: int | None = None

    def frames(self) -> list[Atoms]:
        """The trajectory's frames as ASE ``Atoms`` (ASE's ``lammps-dump-text`` reader).

        Positions are converted from the run's units when ASE knows them; in LJ units they
        are read as they are (σ), and atoms are labelled by type number (type 1 → H).

        Raises:
            ValueError: The run wrote no trajectory.
        """
        if self.trajectory is None:
            raise ValueError("this run wrote no trajectory (dump_every=0)")
        units = self.units if self.units in ASE_UNITS else "metal"
        frames = ase.io.read(self.trajectory, index=":", format="lammps-dump-text", units=units)
        return list(frames) if isinstance(frames, list) else [frames]


def lammps_md(
    *,
    setup: Setup | str | None = None,
    structure: Atoms | None = None,
    data_file: str | Path | None = None,
    cells: int | None = None,
    units: str | None = None,
    atom_style: str = "atomic",
    boundary: str = "p p p",
    pair_style: str | None = None,
    pair_coeff: Sequence[str] = (),
    extra_commands: Sequence[str] = (),
    ensemble: Ensemble | str = "nve",
    steps: int = 1000,
    timestep: float | None = None,
    temperature: float | None = None,
    create_velocities: bool = True,
    thermo_every: int = 100,
    dump_every: int = 0,
    seed: int = 12345,
    trajectory_dir: str | Path | None = None,
    walltime: float = 3600.0,
    threads: int | None = None,
    keep: Keep = "failed",
) -> LammpsResult:
    """Run molecular dynamics with LAMMPS and return final energies and the thermo table.

    Args:
        setup: Built-in system: ``"lj"`` or ``"water"`` (see the module's description).
        structure: ASE ``Atoms`` with a 3-D cell (periodic axes → ``p``, others ``s``).
        data_file: Path of a LAMMPS data file.
        cells: Lattice cells per edge of a built-in setup (lj: 5 → 500 atoms; water: 4 → 64
            molecules).
        units: LAMMPS units for a structure or data file (default ``metal``; setups fix
            their own: ``lj``, ``real``).
        atom_style: Atom style of a structure or data file (``atomic``, ``charge``, ``full``).
        boundary: LAMMPS ``boundary`` of a data file (a structure's follows its ``pbc``).
        pair_style: ``pair_style`` arguments for a structure or data file (e.g.
            ``"lj/cut 8.5"``).
        pair_coeff: ``pair_coeff`` argument lines (e.g. ``["1 1 0.0104 3.4"]``).
        extra_commands: Further input lines placed after the force field (kspace, bonds, fixes).
        ensemble: ``"nve"`` or ``"nvt"`` (Nosé-Hoover, damping 100 timesteps).
        steps: MD steps (0: evaluate the energy of the starting configuration only).
        timestep: Timestep in the run's units (default: 0.005 τ, 1 fs, 0.001 ps).
        temperature: Initial velocities and NVT target (default 1.0 in LJ units, else 300 K).
        create_velocities: Draw Gaussian velocities at ``temperature`` (zero total momentum);
            ``False`` keeps those of the structure or data file.
        thermo_every: Thermo output interval in steps (0: first and last step only).
        dump_every: Trajectory interval in steps (0: no trajectory).
        seed: Random seed for velocities and water orientations (1..900000000).
        trajectory_dir: Directory the trajectory is moved to on success.
        walltime: Seconds before the run is killed.
        threads: OpenMP threads per rank (only used by OpenMP-enabled LAMMPS styles); default
            the task's ``threads_per_rank`` (1 outside a task). MPI ranks come from the task's
            resources (see ``orchestrator.apps.mpi``).
        keep: When the working directory is kept (``failed``: only after a failure).

    Returns:
        Final energies, the thermo table and the trajectory's path.

    Raises:
        SimulationError: See the module's table of reasons.
    """
    sources = [x for x in (setup, structure, data_file) if x is not None]
    if len(sources) != 1:
        raise bad_input(CODE, "give exactly one of setup=, structure= or data_file=")
    if setup is not None:
        if setup not in SETUPS:
            raise bad_input(CODE, f"unknown setup {setup!r}; built-in setups: {list(SETUPS)}")
        if pair_style is not None or pair_coeff or units is not None:
            raise bad_input(CODE, f"setup {setup!r} has its own units and force field; omit those")
        units = "lj" if setup == "lj" else "real"
        cells = DEFAULT_CELLS[setup] if cells is None else cells
        if not isinstance(cells, int) or cells < 1:
            raise bad_input(CODE, f"cells must be an integer >= 1 (got {cells!r})")
    else:
        if cells is not None:
            raise bad_input(CODE, "cells= sizes a built-in setup; not used with this source")
        units = units or "metal"
        if not pair_style:
            raise bad_input(CODE, "a structure or data file needs pair_style= and pair_coeff=")
    source_path = _check_source(structure, data_file, units)
    timestep = DEFAULT_TIMESTEP.get(units) if timestep is None else timestep
    temperature = (1.0 if units == "lj" else 300.0) if temperature is None else temperature
    _check_run(
        units=units,
        ensemble=ensemble,
        steps=steps,
        timestep=timestep,
        temperature=temperature,
        thermo_every=thermo_every,
        dump_every=dump_every,
        seed=seed,
        lines=[atom_style, pair_style or "", *pair_coeff, *extra_commands],
    )
    if not isinstance(boundary, str) or not _BOUNDARY.match(boundary):
        raise bad_input(CODE, f"boundary must be three of p/f/s/m, e.g. 'p p f' (got {boundary!r})")
    assert timestep is not None  # checked above
    if dump_every and trajectory_dir is None and keep != "always":
        raise bad_input(
            CODE,
            "dump_every > 0 needs trajectory_dir= (where the trajectory is kept) or "
            "keep='always' (it stays in the run directory)",
        )

    types: tuple[str, ...] | None = None
    with workdir(CODE, keep=keep) as path:
        if setup == "lj":
            system = _lj_system(cells or DEFAULT_CELLS["lj"])
        elif setup == "water":
            (path / "water.mol").write_text(WATER_MOLECULE)
            system = _water_system(cells or DEFAULT_CELLS["water"], seed)
            types = ("O", "H")
        else:
            if structure is not None:
                types = _write_structure(structure, path / DATA_FILE, units, atom_style)
                boundary = " ".join("p" if p else "s" for p in structure.pbc)
            else:
                assert source_path is not None
                shutil.copyfile(source_path, path / DATA_FILE)
            system = _data_system(units, atom_style, boundary, pair_style or "", pair_coeff)
        text = _input(
            system=system,
            units=units,
            extra_commands=extra_commands,
            ensemble=ensemble,
            steps=steps,
            timestep=timestep,
            temperature=temperature,
            create_velocities=create_velocities,
            thermo_every=thermo_every,
            dump_every=dump_every,
            seed=seed,
            elements=types,
        )
        (path / INPUT_FILE).write_text(text)
        run = run_code(
            CODE,
            ["-in", INPUT_FILE, "-log", LOG_FILE, "-nocite"],
            workdir=path,
            walltime=walltime,
            default_command=DEFAULT_COMMAND,
            threads=threads,
        )
        result = _parse(run, steps=steps, units=units, types=types)
        trajectory = None
        if dump_every:
            produced = path / TRAJECTORY_FILE
            if not produced.is_file():
                raise run.failure(OUTPUT_MISSING, f"no trajectory file {TRAJECTORY_FILE}")
            if trajectory_dir is not None:
                target_dir = Path(trajectory_dir).resolve()
                target_dir.mkdir(parents=True, exist_ok=True)
                target = target_dir / f"{path.name}.lammpstrj"
                shutil.move(produced, target)
                trajectory = str(target)
            else:
                trajectory = str(produced)
        return replace(result, trajectory=trajectory)


def _check_source(structure: Atoms | None, data_file: str | Path | None, units: str) -> Path | None:
    if structure is not None:
        if not isinstance(structure, Atoms) or len(structure) == 0:
            raise bad_input(CODE, "structure must be ASE Atoms with at least one atom")
        if structure.cell.rank != 3 or structure.cell.volume <= 0:
            raise bad_input(CODE, "the structure needs a 3-D cell (LAMMPS needs a box)")
        if units not in ASE_UNITS:
            raise bad_input(CODE, f"structures need units ASE converts: {list(ASE_UNITS)}")
        return None
    if data_file is not None:
        path = Path(data_file)
        if not path.is_file():
            raise bad_input(CODE, f"data file {str(path)!r} does not exist")
        return path.resolve()
    return None


def _check_run(
    *,
    units: str,
    ensemble: str,
    steps: int,
    timestep: float | None,
    temperature: float,
    thermo_every: int,
    dump_every: int,
    seed: int,
    lines: Sequence[str],
) -> None:
    if ensemble not in ENSEMBLES:
        raise bad_input(CODE, f"ensemble must be one of {list(ENSEMBLES)} (got {ensemble!r})")
    for name, value in (
        ("steps", steps),
        ("thermo_every", thermo_every),
        ("dump_every", dump_every),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad_input(CODE, f"{name} must be an integer >= 0 (got {value!r})")
    if timestep is None:
        raise bad_input(CODE, f"no default timestep for units {units!r}; give timestep=")
    if not (isinstance(timestep, int | float) and math.isfinite(timestep) and timestep > 0):
        raise bad_input(CODE, f"timestep must be > 0 (got {timestep!r})")
    if not (
        isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0
    ):
        raise bad_input(CODE, f"temperature must be > 0 (got {temperature!r})")
    if not isinstance(seed, int) or not 1 <= seed <= MAX_SEED:
        raise bad_input(CODE, f"seed must be an integer in 1..{MAX_SEED} (got {seed!r})")
    for line in lines:
        if not isinstance(line, str) or "\n" in line or "\r" in line:
            raise bad_input(CODE, f"input settings must be single lines of text (got {line!r})")


def _write_structure(atoms: Atoms, path: Path, units: str, atom_style: str) -> tuple[str, ...]:
    from ase.io.lammpsdata import write_lammps_data

    species = sorted(set(atoms.get_chemical_symbols()))
    try:
        write_lammps_data(
            path,
            atoms,
            specorder=species,
            masses=True,
            velocities=atoms.has("momenta"),
            units=units,
            atom_style=atom_style,
        )
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise bad_input(CODE, f"cannot write the structure as a LAMMPS data file: {exc}") from None
    return tuple(species)


def _lj_system(cells: int) -> str:
    return f"""units lj
atom_style atomic
boundary p p p
lattice fcc 0.8442
region box block 0 {cells} 0 {cells} 0 {cells}
create_box 1 box
create_atoms 1 box
mass 1 1.0
pair_style lj/cut 2.5
pair_modify shift yes
pair_coeff 1 1 1.0 1.0 2.5
neighbor 0.3 bin
"""


def _water_system(cells: int, seed: int) -> str:
    return f"""units real
atom_style full
boundary p p p
lattice sc 3.1
region box block 0 {cells} 0 {cells} 0 {cells}
create_box 2 box bond/types 1 angle/types 1 extra/bond/per/atom 2 extra/angle/per/atom 1 \
extra/special/per/atom 2
molecule water water.mol
create_atoms 0 box mol water {seed}
mass 1 15.9994
mass 2 1.008
pair_style lj/cut/coul/long 6.0
pair_modify tail yes
kspace_style pppm 1.0e-4
pair_coeff 1 1 0.1553 3.166
pair_coeff 1 2 0.0 1.0
pair_coeff 2 2 0.0 1.0
bond_style zero
bond_coeff 1 1.0
angle_style zero
angle_coeff 1 109.47
neighbor 2.0 bin
fix orch_shake all shake 1.0e-5 100 0 b 1 a 1 mol water
"""


def _data_system(
    units: str, atom_style: str, boundary: str, pair_style: str, pair_coeff: Sequence[str]
) -> str:
    coeffs = "".join(f"pair_coeff {line}\n" for line in pair_coeff)
    skin = "0.3" if units == "lj" else "2.0"
    return f"""units {units}
atom_style {atom_style}
boundary {boundary}
read_data {DATA_FILE}
pair_style {pair_style}
{coeffs}neighbor {skin} bin
"""


def _input(
    *,
    system: str,
    units: str,
    extra_commands: Sequence[str],
    ensemble: str,
    steps: int,
    timestep: float,
    temperature: float,
    create_velocities: bool,
    thermo_every: int,
    dump_every: int,
    seed: int,
    elements: tuple[str, ...] | None,
) -> str:
    lines = [system.rstrip("\n"), "neigh_modify every 1 delay 0 check yes", *extra_commands]
    if create_velocities:
        # loop geom: each velocity follows from its atom's position, not its ID (create_atoms
        # numbers atoms per rank), so a run gives the same result on any number of ranks
        lines.append(f"velocity all create {temperature!r} {seed} mom yes dist gaussian loop geom")
    if ensemble == "nvt":
        damp = 100 * timestep
        lines.append(f"fix orch_md all nvt temp {temperature!r} {temperature!r} {damp!r}")
    else:
        lines.append("fix orch_md all nve")
    lines += [
        f"thermo_style custom {' '.join(THERMO_COLUMNS)}",
        "thermo_modify norm no lost error format float %.15g",
        f"thermo {thermo_every}",
    ]
    if dump_every:
        columns = "id type element x y z vx vy vz" if elements else "id type x y z vx vy vz"
        lines.append(f"dump orch_dump all custom {dump_every} {TRAJECTORY_FILE} {columns}")
        if elements:
            lines.append(f"dump_modify orch_dump element {' '.join(elements)}")
    lines += [
        f"timestep {timestep!r}",
        f"run {steps}",
        'print "ORCH_FINAL natoms=$(atoms) step=$(step) pe=$(pe:%.15g) ke=$(ke:%.15g) '
        'etotal=$(etotal:%.15g) temp=$(temp:%.15g)"',
    ]
    return "\n".join(lines) + "\n"


def _code_error(stdout: str) -> str | None:
    match = _ERROR.search(stdout)
    if match is None:
        return None
    message = match.group(0).strip()
    last = _LAST_COMMAND.search(stdout, match.end())
    return f"{message} (last command: {last.group(1).strip()})" if last else message


def _thermo_table(stdout: str) -> dict[str, list[float]] | None:
    """The last thermo table (header ``Step Temp ...`` to ``Loop time``), by column."""
    lines = stdout.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.split()[:1] == ["Step"]]
    if not starts:
        return None
    table: dict[str, list[float]] = {name: [] for name in THERMO_COLUMNS}
    for line in lines[starts[-1] + 1 :]:
        if line.startswith("Loop time of"):
            break
        words = line.split()
        if len(words) != len(THERMO_COLUMNS):
            continue  # a WARNING line between thermo rows
        try:
            values = [float(w) for w in words]
        except ValueError:
            continue
        for name, value in zip(THERMO_COLUMNS, values, strict=True):
            table[name].append(value)
    return table


def _parse(run: Run, *, steps: int, units: str, types: tuple[str, ...] | None) -> LammpsResult:
    error = _code_error(run.stdout)
    if error is not None:
        raise run.failure(CODE_ERROR, error)
    run.check_exit()
    finals = _FINAL.findall(run.stdout)
    if not finals:
        raise run.failure(OUTPUT_MISSING, "no final-energy line (ORCH_FINAL) in the output")
    try:
        values = dict(item.split("=", 1) for item in finals[-1].split())
        final = {k: float(values[k]) for k in ("pe", "ke", "etotal", "temp")}
        natoms, last_step = int(values["natoms"]), int(values["step"])
    except (KeyError, ValueError) as exc:
        raise run.failure(
            OUTPUT_UNPARSABLE, f"bad final-energy line {finals[-1]!r}: {exc}"
        ) from None
    if last_step != steps:
        raise run.failure(OUTPUT_UNPARSABLE, f"the run ended at step {last_step}, not {steps}")
    table = _thermo_table(run.stdout)
    if table is None or not table["step"]:
        raise run.failure(OUTPUT_MISSING, "no thermo table in the output")
    loop = _LOOP.findall(run.stdout)
    return LammpsResult(
        potential_energy=final["pe"],
        kinetic_energy=final["ke"],
        total_energy=final["etotal"],
        temperature=final["temp"],
        natoms=natoms,
        steps=steps,
        units=units,
        types=types,
        thermo=table,
        trajectory=None,
        seconds=run.seconds,
        loop_seconds=float(loop[-1][0]) if loop else None,
        ranks=int(loop[-1][1]) if loop else None,
    )
