#!/usr/bin/env python
"""Regenerate ``tests/data/xtb_ip.csv``: xTB vertical ionization potentials of small molecules.

Each molecule below is made 3-D by RDKit (ETKDG, seed 0, MMFF relaxation) and run through this
repository's own wrapper, :func:`orchestrator.apps.sim.xtb.xtb_ip_ea` (``xtb --vipea``,
IPEA-xTB, default settings, one thread). The CSV has two columns, ``smiles`` (RDKit canonical)
and ``value`` (the vertical IP in eV, xtb's 4 decimals), in the order of the list below.
Molecules whose calculation fails are reported on stderr and left out.

Usage::

    .venv/bin/python scripts/make_ml_dataset.py [--output tests/data/xtb_ip.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from rdkit import Chem

from orchestrator.apps.sim.common import SimulationError
from orchestrator.apps.sim.xtb import xtb_ip_ea

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "xtb_ip.csv"

GROUPS: dict[str, str] = {
    "alkanes and cycloalkanes": (
        "C CC CCC CCCC CC(C)C CCCCC CC(C)(C)C CCCCCC CCCCCCCC C1CC1 C1CCCC1 C1CCCCC1 CC1CCCCC1 "
        "C1CC2CCC1C2 C1C2CC3CC1CC(C2)C3 C1CCC2CCCCC2C1"
    ),
    "alkenes, dienes, alkynes, cumulenes": (
        "C=C CC=C C=CC=C CC(C)=C C/C=C/C C1=CCCCC1 C1=CCC=C1 C=C=C C1=CC=CC=CC=C1 C#C CC#C "
        "CC(C)=C(C)C"
    ),
    "alcohols, ethers, peroxides": (
        "O CO CCO CCCO CC(C)O CC(C)(C)O OCCO OCC(O)CO OC1CCCCC1 COC CCOCC C1CO1 C1CCOC1 "
        "C1COCCO1 COCCOC OO"
    ),
    "aldehydes and ketones": (
        "C=O CC=O CC(C)=O CCC(C)=O O=C1CCCCC1 CC(=O)C(C)=O O=CC=O C=CC=O CC(=O)CC(C)=O"
    ),
    "acids, esters, anhydrides, carbonates, lactones": (
        "OC=O CC(=O)O CCC(=O)O COC(C)=O CCOC(C)=O CC(=O)OC=C CC(=O)OC(C)=O COC(=O)OC O=C1OCCO1 "
        "O=C1CCCO1 OC(=O)C(F)(F)F OC(=O)CC(=O)O"
    ),
    "amides, ureas, amino acids": (
        "NC=O CC(N)=O CN(C)C=O CNC(C)=O NC(N)=O O=C1CCCN1 NCC(=O)O CC(N)C(=O)O CN1CCCC1=O"
    ),
    "amines, hydrazine, isocyanate": (
        "N CN CNC CN(C)C CCN CCNCC CCN(CC)CC C1CCNCC1 C1CCNC1 C1COCCN1 NCCN C1CN2CCN1CC2 NN CN=C=O"
    ),
    "nitriles and nitro compounds": (
        "CC#N CCC#N N#CCC#N C=CC#N N#CC(C#N)=C(C#N)C#N C[N+](=O)[O-] CC[N+](=O)[O-]"
    ),
    "halides": (
        "CF CCl CBr CI ClCCl ClC(Cl)Cl ClC(Cl)(Cl)Cl FC(F)F FC(F)(F)F CCCl CCBr CC(F)(F)F ClC=C "
        "FC=C ClC(Cl)=C(Cl)Cl FC(F)=C(F)F"
    ),
    "sulfur and phosphorus": (
        "S CS CSC CCS CSSC C1CCSC1 CS(C)=O CS(C)(=O)=O S=C=S NC(N)=S CP(C)C COP(=O)(OC)OC"
    ),
    "small inorganics": ("N#N O=C=O O=S=O"),
    "benzenes": (
        "c1ccccc1 Cc1ccccc1 Cc1ccccc1C Cc1cccc(C)c1 Cc1ccc(C)cc1 CCc1ccccc1 CC(C)c1ccccc1 "
        "Cc1cc(C)cc(C)c1 C=Cc1ccccc1 C#Cc1ccccc1 Oc1ccccc1 COc1ccccc1 Cc1ccc(O)cc1 Oc1ccc(O)cc1 "
        "Oc1cccc(O)c1 COc1ccc(OC)cc1 Nc1ccccc1 CNc1ccccc1 CN(C)c1ccccc1 NCc1ccccc1 Cc1ccc(N)cc1 "
        "Nc1ccc(N)cc1 CN(C)c1ccc(N(C)C)cc1 Nc1ccc(Cl)cc1 Nc1ccc(F)cc1 COc1ccc(N)cc1 "
        "O=[N+]([O-])c1ccccc1 Nc1ccc([N+](=O)[O-])cc1 Oc1ccc([N+](=O)[O-])cc1 N#Cc1ccccc1 "
        "N#Cc1ccc(C#N)cc1 O=Cc1ccccc1 COc1ccc(C=O)cc1 CC(=O)c1ccccc1 O=C(c1ccccc1)c1ccccc1 "
        "OC(=O)c1ccccc1 O=C(O)c1ccccc1O CC(=O)Oc1ccccc1C(=O)O CC(=O)Nc1ccc(O)cc1 Fc1ccccc1 "
        "Clc1ccccc1 Brc1ccccc1 Ic1ccccc1 FC(F)(F)c1ccccc1 Clc1ccc(Cl)cc1 Oc1ccc(Cl)cc1 "
        "Fc1c(F)c(F)c(F)c(F)c1F Sc1ccccc1 CSc1ccccc1 O=C1C=CC(=O)C=C1 c1ccc(-c2ccccc2)cc1 "
        "C(=C/c1ccccc1)\\c1ccccc1 c1ccc(N(c2ccccc2)c2ccccc2)cc1"
    ),
    "fused and non-benzenoid carbocycles": (
        "c1ccc2ccccc2c1 Cc1ccc2ccccc2c1 Oc1ccc2ccccc2c1 Nc1cccc2ccccc12 c1ccc2cc3ccccc3cc2c1 "
        "c1ccc2c(c1)ccc1ccccc12 c1cc2ccc3cccc4ccc(c1)c2c34 c1ccc2c(c1)Cc1ccccc1-2 "
        "c1ccc2c(c1)CCCC2 c1ccc2c(c1)CCC2 c1ccc2cccc-2cc1"
    ),
    "heteroaromatics": (
        "c1ccncc1 Cc1ccccn1 Cc1ccncc1 Nc1ccccn1 N#Cc1ccccn1 [O-][n+]1ccccc1 c1ccc(-c2ccccn2)nc1 "
        "c1cnccn1 c1cncnc1 c1ccnnc1 c1ncncn1 c1ccc2ncccc2c1 c1ccc2cnccc2c1 c1ccc2nccnc2c1 "
        "c1cc[nH]c1 Cn1cccc1 c1ccoc1 Cc1ccco1 c1ccsc1 Cc1cccs1 c1cn[nH]c1 c1c[nH]cn1 Cn1ccnc1 "
        "c1cocn1 c1cscn1 c1ccc2[nH]ccc2c1 c1ccc2occc2c1 c1ccc2sccc2c1 c1ccc2[nH]cnc2c1 "
        "c1ccc2c(c1)[nH]c1ccccc12 c1ccc2c(c1)oc1ccccc12 c1ccc2c(c1)sc1ccccc12 "
        "Cn1c(=O)c2c(ncn2C)n(C)c1=O Cc1c[nH]c(=O)[nH]c1=O O=c1cc[nH]c(=O)[nH]1 "
        "Nc1ncnc2[nH]cnc12 O=c1cccc[nH]1"
    ),
    "sulfur-rich donors": ("C1=CSC(=C2SC=CS2)S1"),
}
"""Molecules by family, as whitespace-separated SMILES."""

MOLECULES: tuple[str, ...] = tuple(s for group in GROUPS.values() for s in group.split())


def canonical(smiles: str) -> str:
    """RDKit's canonical SMILES of ``smiles``.

    Raises:
        ValueError: If RDKit cannot parse it.
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"invalid SMILES in the list: {smiles!r}")
    return str(Chem.MolToSmiles(mol))


def main(argv: list[str] | None = None) -> int:
    """Compute the IPs and write the CSV; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="CSV to write")
    args = parser.parse_args(argv)

    seen: set[str] = set()
    unique: list[str] = []
    for smiles in MOLECULES:
        key = canonical(smiles)
        if key in seen:
            print(f"duplicate left out: {smiles} ({key})", file=sys.stderr)
            continue
        seen.add(key)
        unique.append(key)

    rows: list[tuple[str, str]] = []
    started = time.perf_counter()
    for smiles in unique:
        try:
            result = xtb_ip_ea(smiles, keep="never")
        except SimulationError as exc:
            print(f"failed, left out: {smiles}: {exc}", file=sys.stderr)
            continue
        rows.append((smiles, f"{result.ip_ev:.4f}"))

    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("smiles", "value"))
        writer.writerows(rows)
    seconds = time.perf_counter() - started
    print(
        f"wrote {len(rows)} of {len(unique)} molecules to {args.output} in {seconds:.1f} s",
        file=sys.stderr,
    )
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
