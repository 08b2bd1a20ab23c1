"""Structures for simulation wrappers: ASE ``Atoms`` as given, or SMILES made 3-D by RDKit."""

from __future__ import annotations

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
    atoms.info["smiles"] = structure
    return atoms
