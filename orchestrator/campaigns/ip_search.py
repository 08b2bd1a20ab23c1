"""IP search: find molecules with a low ionization potential by active learning.

xTB computes vertical IPs on ``cpu`` sites; an ensemble surrogate is trained and queried on
``gpu`` sites; every trained version is logged to MLflow by the orchestrator and the ``champion``
alias follows the best validation error. Each round the surrogate (version *v*) ranks the
unexplored pool by ``mean - kappa * std`` (optimistic for a minimum) and the top ``batch_size``
molecules are simulated next: their results carry ``model_version = "<model>/<v>"``, and the
version's MLflow run gets a lineage artifact listing them.
"""

from __future__ import annotations

import random
from typing import Any

from pydantic import BaseModel, Field

from orchestrator.apps.ml import to_module
from orchestrator.campaigns.ml import ml_methods
from orchestrator.campaigns.molecules import POOL
from orchestrator.campaigns.simulation import simulation_methods
from orchestrator.models import Result
from orchestrator.registry.tags import provenance_tags
from orchestrator.thinker import BaseThinker, ThinkerQueues, agent


class IpSearchOptions(BaseModel):
    """Options of the IP search (``-o key=value``)."""

    seed_size: int = Field(default=16, ge=4, description="Random molecules simulated first")
    batch_size: int = Field(default=8, ge=1, description="Molecules chosen per round")
    rounds: int = Field(default=2, ge=1, le=100, description="Train / choose / simulate rounds")
    pool_size: int = Field(default=120, ge=8, le=len(POOL), description="Candidate molecules")
    epochs: int = Field(default=60, ge=1, description="Training epochs per version")
    kappa: float = Field(default=1.0, ge=0, description="Weight of the uncertainty")
    seed: int = Field(default=0, description="Seed of the random choices")
    walltime: float = Field(default=120.0, gt=0, description="Seconds allowed per xTB run")


class IpSearch(BaseThinker):
    """Active learning for low vertical IPs: xTB on CPU sites, surrogate on GPU sites, MLflow."""

    methods = simulation_methods(["xtb_ip_ea"]) + ml_methods()
    topics = ["xtb_ip_ea", "train_surrogate", "infer_surrogate"]
    registry_model = "ip-surrogate"
    Options = IpSearchOptions

    def __init__(
        self,
        queues: ThinkerQueues,
        options: IpSearchOptions | None = None,
        registry: Any = None,
    ):
        super().__init__(queues)
        self.last: dict[str, Result] = {}
        """The latest result of each GPU method (its provenance tags the model version)."""
        self.options = options or IpSearchOptions()
        self.registry = registry
        rng = random.Random(self.options.seed)
        self.pool = rng.sample(POOL, self.options.pool_size)
        self.data: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.versions: list[tuple[int, dict[str, float]]] = []
        self.steered: dict[str, int] = {}
        self.weights: dict[str, Any] | None = None

    def _simulate(self, smiles: list[str], model_version: str | None) -> list[Result]:
        """Run xTB on each molecule (concurrently) and wait for all of them."""
        for s in smiles:
            self.queues.send_inputs(
                s,
                method="xtb_ip_ea",
                topic="xtb_ip_ea",
                model_version=model_version,
                walltime=self.options.walltime,
            )
        results = [self.queues.get_result("xtb_ip_ea") for _ in smiles]
        for r in results:
            key = str((r.args or ("?",))[0])
            if r.success:
                self.data[key] = float(r.value.ip_ev)
            else:
                self.failed[key] = (r.failure_info.reason or "failed") if r.failure_info else "?"
        return results

    def _call(self, method: str, *args: Any, model_version: str | None = None) -> Any:
        """Run one GPU task and return its value (raise with the reason if it failed)."""
        self.queues.send_inputs(*args, method=method, topic=method, model_version=model_version)
        result = self.queues.get_result(method)
        self.last[method] = result
        if not result.success:
            info = result.failure_info
            raise RuntimeError(f"{method} failed: {info.message if info else 'unknown'}")
        return result.value

    @agent
    def search(self) -> None:
        """Seed, then alternate: train a version, rank the pool with it, simulate its picks."""
        opts = self.options
        self._simulate(self.pool[: opts.seed_size], model_version=None)
        for round_ in range(1, opts.rounds + 1):
            if self.done.is_set():
                return
            training_set = sorted(self.data.items())
            train_options = {"epochs": opts.epochs, "seed": opts.seed + round_}
            self.weights, metrics = self._call(
                "train_surrogate", self.weights, training_set, train_options
            )
            label, version = self._register(round_, metrics, train_options)
            candidates = [s for s in self.pool if s not in self.data and s not in self.failed]
            if not candidates:
                break
            means, stds = self._call(
                "infer_surrogate", self.weights, candidates, model_version=label
            )
            predicted = dict(zip(candidates, means, strict=True))
            score = {
                s: predicted[s] - opts.kappa * sd for s, sd in zip(candidates, stds, strict=True)
            }
            picks = sorted(candidates, key=score.__getitem__)[: opts.batch_size]
            results = self._simulate(picks, model_version=label)
            self.steered[label] = len(picks)
            if self.registry is not None and version is not None:
                rows = [
                    {
                        "task_id": r.task_id,
                        "smiles": smiles,
                        "predicted_ip_ev": predicted[smiles],
                        "ip_ev": getattr(r.value, "ip_ev", None),
                        "success": r.success,
                    }
                    for r, smiles in zip(results, picks, strict=True)
                ]
                self.registry.log_lineage(version, rows)

    def _register(
        self, round_: int, metrics: dict[str, Any], train_options: dict[str, Any]
    ) -> tuple[str, int | None]:
        """Log the new weights to MLflow (orchestrator side) and move ``champion`` by policy."""
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        if self.registry is None:  # running without MLflow: label versions by round
            self.versions.append((round_, numbers))
            return f"{self.registry_model}/round-{round_}", None
        assert self.weights is not None
        info = self.registry.log_training(
            to_module(self.weights),
            params={**train_options, "round": round_, "n_train": len(self.data)},
            metrics=numbers,
            tags={
                "orch.campaign": "ip-search",
                "orch.round": round_,
                **provenance_tags(self.last.get("train_surrogate")),
            },
        )
        self.registry.promote(info.version, metric="val_rmse")
        self.versions.append((info.version, numbers))
        return f"{info.name}/{info.version}", info.version

    def summary(self) -> str:
        """Versions trained (and the champion), simulations, the lowest IP found."""
        text = f"simulations: {len(self.data)} ok, {len(self.failed)} failed"
        if self.versions:
            listed = ", ".join(
                f"v{v} (val_rmse {m.get('val_rmse', float('nan')):.3f})" for v, m in self.versions
            )
            text += f"; model versions: {listed}"
        if self.registry is not None:
            text += f"; champion: v{self.registry.alias_version('champion')}"
        if self.data:
            best = min(self.data, key=self.data.__getitem__)
            text += f"; lowest vertical IP: {self.data[best]:.3f} eV ({best})"
        if self.steered:
            text += "; steered: " + ", ".join(f"{k}: {n}" for k, n in self.steered.items())
        return text
