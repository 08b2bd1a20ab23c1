"""Candidate pools of the molecular-design campaign: the shipped QM9 sample or a user's file.

A pool file holds one molecule per line: its SMILES is the line's first field (fields are
separated by whitespace or a comma), anything after it is ignored (a name, an index). Blank
lines and lines starting with ``#`` are skipped, and so is a first line whose first field is
``smiles`` (a CSV header). Duplicate SMILES are kept once.

:func:`lookup_ip` is the benchmark's stand-in simulation: it reads a molecule's IP from a
reference CSV made with the real xTB method (``benchmarks/make_ip_reference.py``) instead of
running xTB. It only imports the standard library, so any CPU worker can run it.
"""

from __future__ import annotations

import csv
import functools
import os
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

DEFAULT_POOL = "qm9_pool.smi"
"""File name of the shipped pool under ``orchestrator/campaigns/data/`` (see its README)."""

MAX_NAMED = 5
"""How many invalid lines an error message names."""


class PoolError(ValueError):
    """A pool or reference file is missing, unreadable or invalid (one line, with the fix)."""


def default_pool_path() -> Path:
    """Where the shipped pool lies (10,000 QM9 molecules)."""
    return Path(str(resources.files("orchestrator.campaigns") / "data" / DEFAULT_POOL))


def _read_text(path: Path, what: str) -> str:
    if not path.exists():
        raise PoolError(f"{what} {path}: no such file")
    if not path.is_file():
        raise PoolError(f"{what} {path}: not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PoolError(f"{what} {path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise PoolError(f"{what} {path}: cannot read it ({exc.strerror})") from None


def _first_field(line: str) -> str:
    return line.replace(",", " ").split()[0]


@functools.lru_cache(maxsize=4)
def _read_pool_cached(path: str, mtime_ns: int) -> tuple[str, ...]:
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")  # RDKit prints parse errors to stderr; ours are raised
    text = _read_text(Path(path), "pool file")
    smiles: list[str] = []
    seen: set[str] = set()
    bad: list[str] = []
    first = True
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        field = _first_field(stripped)
        if first and field.lower() == "smiles":
            first = False
            continue
        first = False
        if Chem.MolFromSmiles(field) is None:
            bad.append(f"line {number}: {field!r}")
            continue
        if field not in seen:
            seen.add(field)
            smiles.append(field)
    if bad:
        more = f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
        raise PoolError(
            f"pool file {path}: {len(bad)} invalid SMILES ({'; '.join(bad[:MAX_NAMED])}{more}); "
            "give one SMILES per line"
        )
    if not smiles:
        raise PoolError(f"pool file {path}: no molecules in it; give one SMILES per line")
    return tuple(smiles)


def read_pool(path: Path | str | None = None) -> list[str]:
    """The molecules of a pool file (default: the shipped QM9 sample), in file order.

    Raises:
        PoolError: The file is missing, unreadable, empty, or has invalid SMILES (the message
            names the first few offending lines).
    """
    target = Path(path).expanduser() if path is not None else default_pool_path()
    try:
        mtime = target.stat().st_mtime_ns
    except OSError:
        mtime = -1  # reported by the reader, with the reason
    return list(_read_pool_cached(str(target.resolve()), mtime))


# -- the benchmark's reference lookup ---------------------------------------------------------


@dataclass(frozen=True)
class ReferenceIp:
    """A vertical IP read from a reference table instead of computed.

    Attributes:
        ip_ev: The IP (eV), as the reference's xTB run computed it.
        seconds: Wall time of that xTB run (what the lookup waited, times its scale).
        method: Always ``reference lookup``: results say they were not simulated here.
    """

    ip_ev: float
    seconds: float
    method: str = "reference lookup"


class ReferenceMissError(LookupError):
    """The molecule is absent from the reference, or its reference calculation failed."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@functools.lru_cache(maxsize=2)
def read_reference(path: str) -> dict[str, tuple[float | None, float, str]]:
    """``smiles -> (ip_ev or None, seconds, error)`` from a reference CSV.

    Raises:
        PoolError: The file is missing, unreadable or lacks the columns
            ``smiles, ip_ev, seconds, error``.
    """
    text = _read_text(Path(path), "reference file")
    rows = csv.DictReader(text.splitlines())
    needed = {"smiles", "ip_ev", "seconds", "error"}
    if not needed <= set(rows.fieldnames or ()):
        raise PoolError(
            f"reference file {path}: needs the columns {', '.join(sorted(needed))} "
            "(made by benchmarks/make_ip_reference.py)"
        )
    table: dict[str, tuple[float | None, float, str]] = {}
    for row in rows:
        ip = float(row["ip_ev"]) if row["ip_ev"] else None
        table[row["smiles"]] = (ip, float(row["seconds"] or 0.0), row["error"])
    return table


def lookup_ip(smiles: str, reference: str, time_scale: float = 1.0) -> ReferenceIp:
    """Read ``smiles``'s vertical IP from ``reference`` (benchmarks only: xTB does not run).

    The call waits the recorded xTB wall time times ``time_scale``, so that a campaign that
    uses it keeps the timing of one that runs xTB.

    Raises:
        ReferenceMissError: ``reason`` ``bad_input`` (not in the reference) or the reason the
            reference calculation failed with.
    """
    table = read_reference(os.path.abspath(reference))
    if smiles not in table:
        raise ReferenceMissError(f"{smiles!r} is not in the reference {reference}", "bad_input")
    ip, seconds, error = table[smiles]
    if time_scale > 0:
        time.sleep(seconds * time_scale)
    if ip is None:
        raise ReferenceMissError(
            f"the reference calculation of {smiles!r} failed ({error})", error or "failed"
        )
    return ReferenceIp(ip_ev=ip, seconds=seconds * time_scale)
