"""Structures for simulation wrappers: ASE ``Atoms`` as given, or SMILES made 3-D by RDKit."""

from __future__ import annotations

import math
from numbers import Integral
from typing import Any

from ase import Atoms

from orchestrator.apps.sim.common import bad_input


def to_atoms(structure: Atoms | str, *, code: str, seed: int = 0) -> Atoms:
    """A copy of ``structure`` as ASE ``Atoms``.

    SMILES strings get hydrogens, an ETKDG embedding (fixed ``seed``: deterministic) and an
    MMFF relaxation. Their formal charge is stored in ``atoms.info["charge"]`` so wrappers can
    default to it.

    Raises:
        SimulationError: ``bad_input`` for an empty structure, an unparsable SMILES, or one that
            cannot be embedded in 3-D.
    """
    if isinstance(structure, Atoms):
        if len(structure) == 0:
            raise bad_input(code, "the structure has no atoms")
        return structure.copy()
    if not isinstance(structure, str) or not structure.strip():
        raise bad_input(
            code, f"structure must be ASE Atoms or a SMILES string (got {type(structure).__name__})"
        )
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")  # its parse errors go to stderr; ours are raised
    mol = Chem.MolFromSmiles(structure)
    if mol is None:
        raise bad_input(code, f"invalid SMILES {structure!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise bad_input(code, f"could not embed {structure!r} in 3-D")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol)
    positions = mol.GetConformer().GetPositions()
    atoms = Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=positions)
    atoms.info["charge"] = Chem.GetFormalCharge(mol)
    atoms.info["multiplicity"] = 1 + sum(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    atoms.info["smiles"] = structure
    return atoms


def check_molecule(code: str, atoms: Atoms) -> None:
    """Reject what molecular codes cannot run: periodic cells, dummy atoms, NaN coordinates.

    Raises:
        SimulationError: ``bad_input``.
    """
    if atoms.pbc.any():
        raise bad_input(code, "periodic structures are not supported: give a molecule (pbc=False)")
    if not all(math.isfinite(x) for x in atoms.positions.ravel()):
        raise bad_input(code, "the structure has non-finite coordinates")
    symbols = atoms.get_chemical_symbols()
    dummies = sorted({s for s, z in zip(symbols, atoms.numbers, strict=True) if z < 1})
    if dummies:
        raise bad_input(
            code,
            f"the structure has dummy atoms ({', '.join(dummies)}), which are no chemical "
            "elements: remove them",
        )


def spin_state(
    code: str, atoms: Atoms, charge: Any, multiplicity: Any, *, what: str = "molecule"
) -> tuple[int, int]:
    """Validate charge and multiplicity against the electron count; return both as ints.

    Defaults: ``charge`` from ``atoms.info["charge"]`` (SMILES formal charge) else 0;
    ``multiplicity`` from ``atoms.info["multiplicity"]`` (SMILES radicals) when it fits the
    electron count, else the lowest the electron count allows (1 or 2).

    Raises:
        SimulationError: ``bad_input`` for non-integers, no electrons left, or a multiplicity
            the electron count rules out.
    """
    if charge is None:
        charge = atoms.info.get("charge", 0)
    if isinstance(charge, bool) or not isinstance(charge, Integral):
        raise bad_input(code, f"charge must be an integer (got {charge!r})")
    charge = int(charge)
    formula = atoms.get_chemical_formula()
    electrons = int(atoms.numbers.sum()) - charge
    if electrons < 1:
        raise bad_input(code, f"the {what} ({formula}, charge {charge:+d}) has no electrons")
    if multiplicity is None:
        hinted = atoms.info.get("multiplicity")
        fits = isinstance(hinted, int) and hinted >= 1 and (electrons - hinted + 1) % 2 == 0
        multiplicity = hinted if fits else 1 + electrons % 2
    if isinstance(multiplicity, bool) or not isinstance(multiplicity, Integral):
        raise bad_input(code, f"multiplicity must be an integer >= 1 (got {multiplicity!r})")
    multiplicity = int(multiplicity)
    if multiplicity < 1:
        raise bad_input(code, f"multiplicity must be an integer >= 1 (got {multiplicity})")
    unpaired = multiplicity - 1
    if unpaired > electrons or (electrons - unpaired) % 2:
        raise bad_input(
            code,
            f"multiplicity {multiplicity} is impossible for the {what} with {electrons} "
            f"electrons ({formula}, charge {charge:+d})",
        )
    return charge, multiplicity
