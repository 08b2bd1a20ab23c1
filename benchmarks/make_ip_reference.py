#!/usr/bin/env python
"""Make the molecular-design pool and its reference xTB ionization potentials.

Two steps, both deterministic:

1. ``--make-pool QM9_DATA_DIR`` writes ``orchestrator/campaigns/data/qm9_pool.smi``: a seeded
   random sample of QM9 (Ramakrishnan et al., Sci. Data 1, 140022 (2014); data released CC0)
   as found in the ``qm9pack`` wheel on PyPI (``pip download --no-deps qm9pack==1.0.3``, unzip,
   then pass its ``qm9pack/data`` folder). Molecules are kept when RDKit parses them, they are
   neutral on every atom, have no radical, and RDKit can embed them in 3-D the way the
   simulation wrappers do (ETKDG, seed 0: some strained cages cannot be); their SMILES is
   RDKit's canonical form.
2. (default) computes the vertical IP of every pool molecule with the campaign's own simulation,
   :func:`orchestrator.apps.sim.xtb.xtb_ip_ea` with its defaults (RDKit ETKDG seed 0 + MMFF
   geometry, ``xtb --vipea``, IPEA-xTB, one thread), in ``--jobs`` processes, and writes
   ``benchmarks/ip_reference.csv`` with columns ``smiles, ip_ev, seconds, error`` (pool order;
   ``ip_ev`` empty and ``error`` set where the calculation failed). ``seconds`` is the wall
   time of that xTB run, which ``benchmarks/molecular_design.py`` can use as the cost of a
   reference lookup. Rows already in ``--output`` for a pool molecule are kept, not recomputed
   (``--fresh`` recomputes everything).

Usage (about 15 minutes on 2 cores for 10,000 molecules)::

    nice -n 19 .venv/bin/python benchmarks/make_ip_reference.py [--jobs 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
POOL_FILE = REPO / "orchestrator" / "campaigns" / "data" / "qm9_pool.smi"
REFERENCE_FILE = REPO / "benchmarks" / "ip_reference.csv"
POOL_SIZE = 10000
POOL_SEED = 7

POOL_HEADER = """\
# Candidate pool of the molecular-design campaign: {n} small organic molecules from QM9.
# Source: QM9 (R. Ramakrishnan, P. O. Dral, M. Rupp, O. A. von Lilienfeld, "Quantum chemistry
#   structures and properties of 134 kilo molecules", Sci. Data 1, 140022 (2014),
#   doi:10.1038/sdata.2014.22), released by its authors under CC0 1.0; copy read from the
#   qm9pack 1.0.3 wheel on PyPI (MIT licence, by R. Ramakrishnan).
# Selection: seeded random sample (seed {seed}) of the molecules RDKit parses that are neutral
#   on every atom, have no radical and embed in 3-D (RDKit ETKDG, seed 0); SMILES in RDKit
#   canonical form.
# Made by benchmarks/make_ip_reference.py --make-pool. Columns: smiles, QM9 index.
"""


def make_pool(data_dir: Path, output: Path, size: int, seed: int) -> None:
    from rdkit import Chem, RDLogger

    from orchestrator.apps.sim.common import SimulationError
    from orchestrator.apps.sim.structures import to_atoms

    RDLogger.DisableLog("rdApp.*")
    csv.field_size_limit(1 << 30)
    rows: list[tuple[int, str]] = []
    for part in sorted(data_dir.glob("qm9_part*.csv")):
        with part.open(newline="") as handle:
            rows.extend((int(r["Index"]), r["SMILES"]) for r in csv.DictReader(handle))
    if not rows:
        sys.exit(f"no qm9_part*.csv under {data_dir}")
    rng = random.Random(seed)
    rng.shuffle(rows)
    chosen: list[tuple[str, int]] = []
    seen: set[str] = set()
    for index, smiles in rows:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None or any(
            a.GetFormalCharge() or a.GetNumRadicalElectrons() for a in mol.GetAtoms()
        ):
            continue
        canonical = Chem.MolToSmiles(mol)
        if canonical in seen:
            continue
        try:
            to_atoms(canonical, code="xtb")
        except SimulationError:
            continue
        seen.add(canonical)
        chosen.append((canonical, index))
        if len(chosen) == size:
            break
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as handle:
        handle.write(POOL_HEADER.format(n=len(chosen), seed=seed))
        handle.writelines(f"{s} {i}\n" for s, i in chosen)
    print(f"wrote {len(chosen)} molecules (of {len(rows)} in QM9) to {output}")


def _one(smiles: str) -> tuple[str, float | None, float, str]:
    from orchestrator.apps.sim.xtb import xtb_ip_ea

    started = time.perf_counter()
    try:
        value = xtb_ip_ea(smiles, keep="never")
    except Exception as exc:  # noqa: BLE001 - a failure is a row of the reference
        reason = getattr(exc, "reason", None) or type(exc).__name__
        return smiles, None, time.perf_counter() - started, str(reason)
    return smiles, float(value.ip_ev), time.perf_counter() - started, ""


def _existing(output: Path) -> dict[str, tuple[str, float | None, float, str]]:
    if not output.is_file():
        return {}
    with output.open(newline="") as handle:
        return {
            r["smiles"]: (
                r["smiles"],
                float(r["ip_ev"]) if r["ip_ev"] else None,
                float(r["seconds"]),
                r["error"],
            )
            for r in csv.DictReader(handle)
        }


def make_reference(pool: Path, output: Path, jobs: int, fresh: bool) -> None:
    from orchestrator.campaigns.pool import read_pool

    smiles = read_pool(pool)
    known = {} if fresh else _existing(output)
    todo = [s for s in smiles if s not in known]
    os.environ.setdefault("ORCH_SIM_ROOT", tempfile.mkdtemp(prefix="orch-ipref-"))
    started = time.time()
    print(f"{len(smiles)} molecules, {len(smiles) - len(todo)} already in {output}")
    with ProcessPoolExecutor(max_workers=jobs) as workers:
        for i, row in enumerate(workers.map(_one, todo, chunksize=8), 1):
            known[row[0]] = row
            if i % 250 == 0:
                print(f"{i}/{len(todo)} ({time.time() - started:.0f} s)", flush=True)
    rows = [known[s] for s in smiles]
    with output.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["smiles", "ip_ev", "seconds", "error"])
        for s, ip, seconds, error in rows:
            writer.writerow([s, "" if ip is None else f"{ip:.4f}", f"{seconds:.3f}", error])
    failed = sum(1 for r in rows if r[1] is None)
    print(f"wrote {len(rows)} rows ({failed} failed) to {output} in {time.time() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--make-pool", type=Path, metavar="QM9_DATA_DIR")
    parser.add_argument("--size", type=int, default=POOL_SIZE)
    parser.add_argument("--seed", type=int, default=POOL_SEED)
    parser.add_argument("--pool", type=Path, default=POOL_FILE)
    parser.add_argument("--output", type=Path, default=REFERENCE_FILE)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--fresh", action="store_true", help="recompute every row")
    args = parser.parse_args()
    if args.make_pool is not None:
        make_pool(args.make_pool, args.pool, args.size, args.seed)
    else:
        make_reference(args.pool, args.output, args.jobs, args.fresh)


if __name__ == "__main__":
    main()
