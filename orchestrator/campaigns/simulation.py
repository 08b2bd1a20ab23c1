"""The simulation wrappers as campaign methods, with defaults suited to CPU sites.

A campaign lists them in its class attribute: ``methods = simulation_methods()`` registers
``xtb_energy``, ``xtb_ip_ea``, ``nwchem_energy``, ``nwchem_ip``, ``cp2k_energy`` and
``lammps_md``; ``simulation_methods(["xtb_energy"])`` picks some.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from orchestrator.apps.sim.cp2k import cp2k_energy
from orchestrator.apps.sim.lammps import lammps_md
from orchestrator.apps.sim.nwchem import nwchem_energy, nwchem_ip
from orchestrator.apps.sim.xtb import xtb_energy, xtb_ip_ea
from orchestrator.dispatch import Method

SIMULATIONS: dict[str, Callable[..., Any]] = {
    "xtb_energy": xtb_energy,
    "xtb_ip_ea": xtb_ip_ea,
    "nwchem_energy": nwchem_energy,
    "nwchem_ip": nwchem_ip,
    "cp2k_energy": cp2k_energy,
    "lammps_md": lammps_md,
}
"""Method name → worker-side wrapper."""


def simulation_methods(
    names: Iterable[str] | None = None, *, max_retries: int = 1, slots: int = 1
) -> list[Method]:
    """Campaign methods (kind ``cpu``) for the simulation wrappers.

    Args:
        names: Which of :data:`SIMULATIONS` to include (default: all).
        max_retries: Retries after a site failure or timeout (the ``Method`` default policy;
            a simulation that failed on its own fails again, so it is final).
        slots: Site slots one simulation occupies (raise it for MPI launch commands that use
            several cores per task).

    Returns:
        One ``Method`` per wrapper, named as in :data:`SIMULATIONS`. Wall time and threads are
        keyword arguments of each wrapper (``walltime=``, ``threads=``), passed per task.
    """
    chosen = list(SIMULATIONS) if names is None else list(names)
    unknown = sorted(set(chosen) - set(SIMULATIONS))
    if unknown:
        raise ValueError(f"unknown simulation(s) {unknown}; choose from {sorted(SIMULATIONS)}")
    return [
        Method(
            SIMULATIONS[name],
            name=name,
            kind="cpu",
            slots=slots,
            max_retries=max_retries,
        )
        for name in chosen
    ]
