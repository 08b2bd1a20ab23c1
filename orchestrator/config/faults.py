"""Fault injection settings: ``orch launch --inject-faults SPEC``.

``SPEC`` is a comma-separated list of ``fault=rate`` pairs, plus ``seed=N`` and ``stall_s=S``::

    --inject-faults kill_worker=0.01,drop_result=0.005,seed=7

Each rate is the chance, for every task sent to a local site, that orch causes that fault at
the site right then (see ``orchestrator.dispatch.chaos``). The same seed draws the same faults
for the same sequence of sends.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from orchestrator.exceptions import ConfigError

FAULT_HELP = {
    "kill_worker": "SIGKILL one worker process (its task fails; the pool replaces the worker)",
    "kill_pool": "SIGKILL the worker pool and its workers (the site goes down; orch restarts it)",
    "kill_interchange": "SIGKILL the site's interchange (the site goes down; orch restarts it)",
    "stall_worker": "SIGSTOP one worker for stall_s seconds, then SIGCONT it",
    "drop_result": "drop the next task's result on its way back (orch finds the task lost)",
}
"""The faults, and what each does."""


class FaultSpec(BaseModel):
    """Rates (0 to 1, per task sent) of each fault, and the random seed."""

    kill_worker: float = Field(default=0.0, ge=0, le=1)
    kill_pool: float = Field(default=0.0, ge=0, le=1)
    kill_interchange: float = Field(default=0.0, ge=0, le=1)
    stall_worker: float = Field(default=0.0, ge=0, le=1)
    drop_result: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0
    stall_s: float = Field(default=5.0, gt=0, le=3600)

    def rates(self) -> dict[str, float]:
        """``{fault: rate}`` for the faults with a rate above 0."""
        return {name: getattr(self, name) for name in FAULT_HELP if getattr(self, name) > 0}


def parse_faults(text: str) -> FaultSpec:
    """Parse ``--inject-faults``; one-line :class:`ConfigError` on anything wrong."""
    values: dict[str, str] = {}
    known = [*FAULT_HELP, "seed", "stall_s"]
    for pair in (p.strip() for p in text.split(",")):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigError(
                f"--inject-faults: {pair!r} has no '='; write fault=rate pairs, e.g. "
                "kill_worker=0.01,seed=7"
            )
        if key not in known:
            raise ConfigError(f"--inject-faults: unknown {key!r}; use any of {', '.join(known)}")
        values[key] = value.strip()
    try:
        spec = FaultSpec.model_validate(values)
    except Exception as exc:  # noqa: BLE001 - pydantic's message, made one line
        errors = getattr(exc, "errors", None)
        if callable(errors):
            err = errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise ConfigError(
                f"--inject-faults: {field}={err.get('input')}: {err['msg']}; rates are "
                "numbers from 0 to 1, seed a whole number, stall_s seconds above 0"
            ) from None
        raise ConfigError(f"--inject-faults: {exc}") from None
    if not spec.rates():
        raise ConfigError(
            f"--inject-faults: no fault has a rate above 0; give at least one of "
            f"{', '.join(FAULT_HELP)}, e.g. kill_worker=0.01"
        )
    return spec
