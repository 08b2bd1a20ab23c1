"""xTB screen: vertical ionization potential and electron affinity of a list of molecules.

Runs on ``cpu`` sites only. Each molecule (SMILES) becomes one ``xtb_ip_ea`` task; at most
``parallel`` are in flight; the summary names the molecule with the lowest IP.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, Field

from orchestrator.campaigns.simulation import simulation_methods
from orchestrator.models import Result
from orchestrator.thinker import (
    BaseThinker,
    ResourceCounter,
    ThinkerQueues,
    agent,
    result_processor,
)

DEFAULT_SMILES = (
    "O", "N", "C", "CO", "CCO", "CCC", "CC=O", "C=C", "C#C", "C#N", "CC#N", "CN",
    "CCN", "CC(C)=O", "OC=O", "CC(=O)O", "c1ccccc1", "c1ccncc1", "c1ccoc1", "c1ccsc1",
    "Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "FC(F)F",
)  # fmt: skip
"""24 small molecules used when no ``smiles`` option is given."""


class XtbScreenOptions(BaseModel):
    """Options of the xTB screen (``-o key=value``)."""

    smiles: str = Field(default="", description="Comma-separated SMILES (default: 24 built in)")
    parallel: int = Field(default=4, ge=1, le=1024, description="xTB tasks in flight")
    walltime: float = Field(default=120.0, gt=0, description="Seconds allowed per xTB run")


class XtbScreen(BaseThinker):
    """Compute the xTB vertical IP/EA of each molecule; report the lowest IP."""

    methods = simulation_methods(["xtb_ip_ea"])
    Options = XtbScreenOptions

    def __init__(self, queues: ThinkerQueues, options: XtbScreenOptions | None = None):
        self.options = options or XtbScreenOptions()
        given = [s.strip() for s in self.options.smiles.split(",") if s.strip()]
        self.molecules = given or list(DEFAULT_SMILES)
        self.slots = ResourceCounter(self.options.parallel)
        super().__init__(queues, self.slots)
        self.lock = threading.Lock()
        self.ip: dict[str, float] = {}
        self.failed: dict[str, str] = {}

    @agent(startup=True)
    def submit_all(self) -> None:
        """Send one task per molecule, never more than ``parallel`` at once."""
        for smiles in self.molecules:
            if not self.slots.acquire(None, 1, cancel_if=self.done):
                return
            self.queues.send_inputs(
                smiles, method="xtb_ip_ea", topic="xtb_ip_ea", walltime=self.options.walltime
            )

    @result_processor(topic="xtb_ip_ea")
    def record(self, result: Result) -> None:
        """Keep the IP (or the failure reason); stop once every molecule is back."""
        self.slots.release(None, 1)
        smiles = str((result.args or ("?",))[0])
        with self.lock:
            if result.success:
                self.ip[smiles] = float(result.value.ip_ev)
            else:
                info = result.failure_info
                self.failed[smiles] = info.reason or info.message if info else "unknown"
                self.logger.warning("xtb failed for %s: %s", smiles, info)
            finished = len(self.ip) + len(self.failed)
        if finished == len(self.molecules):
            self.done.set()

    def summary(self) -> str:
        """Molecules done and failed, and the lowest IP found."""
        text = f"molecules: {len(self.ip)} ok, {len(self.failed)} failed"
        if self.ip:
            best = min(self.ip, key=self.ip.__getitem__)
            text += f"; lowest vertical IP: {self.ip[best]:.3f} eV ({best})"
        return text
