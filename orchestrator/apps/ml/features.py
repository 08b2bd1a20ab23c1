"""Molecular features for the surrogate: RDKit Morgan fingerprints as float tensors.

A SMILES is valid when it is a non-empty string that RDKit parses (with sanitisation) into a
molecule with at least one atom. Invalid inputs are collected and reported all at once, before
any work is done, by :class:`InvalidSmilesError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

MAX_NAMED = 10
"""How many invalid SMILES an error message names (all are in ``details``)."""


class InvalidSmilesError(ValueError):
    """Some inputs are not valid SMILES.

    Attributes:
        invalid: The offending inputs, in input order (as given, ``repr``-able).
        positions: Their positions in the input list.
        reason: ``bad_input`` (read by :func:`orchestrator.apps.runtime.run_task`).
        details: ``{"invalid_smiles": [...], "positions": [...]}`` (ditto).
    """

    reason = "bad_input"

    def __init__(self, invalid: Sequence[Any], positions: Sequence[int]):
        self.invalid = [s if isinstance(s, str) else repr(s) for s in invalid]
        self.positions = list(positions)
        self.details = {"invalid_smiles": list(self.invalid), "positions": list(self.positions)}
        named = ", ".join(
            f"{s!r} (#{i})" for s, i in zip(self.invalid[:MAX_NAMED], self.positions, strict=False)
        )
        more = len(self.invalid) - MAX_NAMED
        suffix = f" and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.invalid)} invalid SMILES: {named}{suffix}")

    def __reduce__(self) -> tuple[type[InvalidSmilesError], tuple[list[str], list[int]]]:
        """Pickle with the constructor's arguments (engines ship exceptions between processes)."""
        return type(self), (self.invalid, self.positions)


def parse_smiles(smiles: Sequence[str]) -> list[Any]:
    """RDKit molecules for ``smiles``, in order.

    Args:
        smiles: SMILES strings.

    Returns:
        One ``rdkit.Chem.Mol`` per input.

    Raises:
        InvalidSmilesError: Naming every input that is not a string, is empty, does not parse
            or has no atoms.
        TypeError: If ``smiles`` is a single string rather than a sequence of them.
    """
    if isinstance(smiles, str | bytes):
        raise TypeError("give a list of SMILES strings, not a single string")
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # its parse errors go to stderr; ours are raised
    mols: list[Any] = []
    bad: list[Any] = []
    where: list[int] = []
    for i, text in enumerate(smiles):
        mol = Chem.MolFromSmiles(text) if isinstance(text, str) and text.strip() else None
        if mol is None or mol.GetNumAtoms() == 0:
            bad.append(text)
            where.append(i)
        mols.append(mol)
    if bad:
        raise InvalidSmilesError(bad, where)
    return mols


@lru_cache(maxsize=8)
def _morgan_generator(radius: int, n_bits: int) -> Any:
    from rdkit.Chem import rdFingerprintGenerator

    return rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)


def morgan_features(
    smiles: Sequence[str], *, radius: int = 2, n_bits: int = 2048, counts: bool = True
) -> torch.Tensor:
    """Morgan fingerprints of ``smiles`` as a float32 CPU tensor of shape ``[n, n_bits]``.

    Args:
        smiles: SMILES strings (all validated first).
        radius: Morgan radius (2 is ECFP4-like).
        n_bits: Fingerprint length (folded).
        counts: Use ``log1p`` of the substructure counts; else 0/1 bits.

    Returns:
        The feature matrix (``[0, n_bits]`` for an empty list).

    Raises:
        InvalidSmilesError: Naming every invalid SMILES.
    """
    return mol_features(parse_smiles(smiles), radius=radius, n_bits=n_bits, counts=counts)


def mol_features(
    mols: Sequence[Any], *, radius: int = 2, n_bits: int = 2048, counts: bool = True
) -> torch.Tensor:
    """Like :func:`morgan_features`, for molecules from :func:`parse_smiles`."""
    generator = _morgan_generator(radius, n_bits)
    rows = np.zeros((len(mols), n_bits), dtype=np.float32)
    for i, mol in enumerate(mols):
        if counts:
            rows[i] = np.log1p(generator.GetCountFingerprintAsNumPy(mol).astype(np.float32))
        else:
            rows[i] = generator.GetFingerprintAsNumPy(mol)
    return torch.from_numpy(rows)
