"""Simulation wrappers that run on workers: xTB, NWChem, CP2K and LAMMPS.

Each takes a structure (ASE ``Atoms`` or SMILES) plus keyword settings, runs the real binary in a
fresh directory with the site's launch command, and returns a dataclass; failures raise
``SimulationError`` with a machine-readable ``reason``.
"""
