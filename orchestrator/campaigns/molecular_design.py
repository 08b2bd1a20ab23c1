"""Molecular design: find the pool's molecules with the highest ionization potential.

The flagship campaign (``orch launch --sites sites/ molecular-design``). Simulations (xTB
vertical IP by default) run on ``cpu`` sites while the surrogate (an MLP ensemble) is trained
and queried on ``gpu`` sites at the same time. Each policy is its own Colmena-style agent:

- ``submit_simulation`` (task submitter, ``simulate`` slots): the moment a slot frees, submit
  the best-ranked molecule not simulated yet, tagged with the model version that ranked it;
- ``store_simulation`` (result processor): record the value, free the slot, wake the trainer
  (and end the campaign when the budget is in);
- ``retrain`` (agent): once ``retrain_every`` new values are in, train a new version on the
  GPU site, log it to MLflow, move the ``champion`` alias when its validation error improves,
  and hand it to ``rank``; when the budget is in, train a last version on every value;
- ``rank`` (event responder): score the whole pool with the new version, in ``infer_chunk``
  chunks fanned out on the GPU site, and re-rank by the upper confidence bound
  ``mean + kappa * std``.

Slots: a ``ResourceCounter`` with one slot per CPU and per GPU worker, in pools ``simulate``
and ``ml``. While the ML side idles its slots are lent to simulation (one more simulation
waits at the CPU site, so a worker never waits for orch); ``retrain`` and ``rank`` gather them
back into ``ml`` while they run and return them after.

Policies (``-o policy=``): ``steered`` (above), ``random`` (random order, no model) and
``batch`` (simulate ``retrain_every`` molecules, stop, retrain, re-rank, resume), so the value
of steering is measured in the same code. ``-o simulation=reference`` reads IPs from a
reference table instead of running xTB (benchmarks only; see :func:`~.pool.lookup_ip`).

At the end the run directory holds ``results/<topic>.jsonl``, the MLflow store (``mlflow/``),
``report.html`` (``orch report``: the best IP found against simulations and time, through the
campaign's ``objective``, and every worker's timeline, utilization, latency...) and
``summary.json``; :meth:`MolecularDesign.summary` is the terminal table.

After ``--resume``, results replayed from the journal count as values found but not as slot
time of this session (the summary shows them as ``(+N replayed)``; the report's timelines and
latency hold only what ran), and a replayed training result returns the MLflow version it made
the first time (``ModelRegistry.log_training`` is idempotent by task id).
"""

from __future__ import annotations

import io
import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.apps.ml import to_module
from orchestrator.campaigns.ml import ml_methods
from orchestrator.campaigns.pool import lookup_ip, read_pool, read_reference
from orchestrator.campaigns.simulation import simulation_methods
from orchestrator.context import CampaignContext, Objective
from orchestrator.dispatch import Method
from orchestrator.exceptions import TimeoutException
from orchestrator.models import Result
from orchestrator.registry.tags import provenance_tags
from orchestrator.thinker import (
    BaseThinker,
    ReallocatorThread,
    ResourceCounter,
    ThinkerQueues,
    agent,
    event_responder,
    result_processor,
    task_submitter,
)

logger = logging.getLogger(__name__)

SIMULATION_METHODS = {"xtb": "xtb_ip_ea", "nwchem": "nwchem_ip", "reference": "lookup_ip"}
"""``-o simulation=`` value → the method that computes a vertical IP."""

POLL_S = 0.1
"""How often an agent waiting for a result re-checks whether the campaign ended."""


class MolecularDesignOptions(BaseModel):
    """Options of the molecular-design campaign (``-o key=value``)."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["steered", "random", "batch"] = Field(
        default="steered",
        description="steered: retrain and re-rank while simulating; random: no model; "
        "batch: stop simulating while retraining",
    )
    budget: int = Field(default=3000, ge=1, description="Simulations to run (capped at the pool)")
    retrain_every: int = Field(default=300, ge=4, description="New results between retrains")
    kappa: float = Field(default=0.25, ge=0, description="UCB weight of the uncertainty")
    infer_chunk: int = Field(default=1250, ge=1, description="Molecules per inference task")
    epochs: int = Field(default=40, ge=1, description="Training epochs per version")
    simulation: Literal["xtb", "nwchem", "reference"] = Field(
        default="xtb",
        description="xtb: xTB vertical IP; nwchem: NWChem SCF IP (slow); reference: read "
        "the IP from the `reference` CSV (benchmarks only: nothing is simulated)",
    )
    pool: Path | None = Field(
        default=None, description="Your pool file (one SMILES per line); default: 10,000 QM9"
    )
    pool_size: int | None = Field(default=None, ge=2, description="Use the first N molecules")
    reference: Path | None = Field(default=None, description="CSV for simulation=reference")
    time_scale: float = Field(
        default=1.0, ge=0, description="simulation=reference: wait this times the xTB time"
    )
    seed: int = Field(default=0, ge=0, description="Seed of the random choices and training")
    walltime: float = Field(default=300.0, gt=0, description="Seconds allowed per simulation")
    cpu_slots: int | None = Field(default=None, ge=1, description="Default: CPU sites' workers")
    gpu_slots: int | None = Field(default=None, ge=1, description="Default: GPU sites' workers")
    final_retrain: bool = Field(
        default=True, description="Train a last version on every result when the budget is in"
    )
    plots: bool = Field(
        default=True,
        description="Write the run's report (report.html: best found, utilization, latency...) "
        "at the end",
    )

    @field_validator("pool")
    @classmethod
    def _readable_pool(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_pool(value)  # PoolError (a ValueError): one line naming the file and fault
        return value

    @model_validator(mode="after")
    def _reference_given(self) -> MolecularDesignOptions:
        if self.simulation == "reference":
            if self.reference is None:
                raise ValueError(
                    "simulation=reference needs -o reference=FILE.csv "
                    "(made by benchmarks/make_ip_reference.py)"
                )
            read_reference(str(self.reference.expanduser().resolve()))
        return self


def _kekule(smiles: str) -> str:
    """A display form without lower-case bracket atoms (``[nH]``), which rich reads as markup."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return smiles
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
        return str(Chem.MolToSmiles(mol, kekuleSmiles=True))
    except Exception:  # noqa: BLE001 - display only
        return smiles


def _record(result: Result, ip_ev: float | None = None) -> dict[str, Any]:
    """What the plots and ``summary.json`` keep of a result.

    ``replayed``: the result came from the journal of an earlier session (``--resume``); its
    timestamps are that session's, and it used no slot in this one.
    """
    return {
        "method": result.method,
        "site": result.site,
        "success": bool(result.success),
        "model_version": result.model_version,
        "timestamps": result.timestamps.model_dump(),
        "ip_ev": ip_ev,
        "replayed": bool(result.replayed),
    }


class MolecularDesign(BaseThinker):
    """Steer simulations on CPU sites with a surrogate trained on GPU sites, concurrently."""

    methods = [
        *simulation_methods(["xtb_ip_ea", "nwchem_ip"]),
        Method(lookup_ip, name="lookup_ip", kind="cpu", max_retries=1),
        *ml_methods(),
    ]
    topics = ["simulate", "train", "infer"]
    registry_model = "molecular-design-ip"
    Options = MolecularDesignOptions
    objective = Objective("ionization potential (eV)", goal="max")

    def __init__(
        self,
        queues: ThinkerQueues,
        options: MolecularDesignOptions | None = None,
        registry: Any = None,
        run_dir: Path | None = None,
        context: CampaignContext | None = None,
    ):
        opts = options or MolecularDesignOptions()
        sites = context.sites() if context is not None else []
        self.site_capacity = {s.name: s.capacity for s in sites}
        self.cpu_slots = opts.cpu_slots or sum(s.capacity for s in sites if s.kind == "cpu") or 2
        self.gpu_slots = opts.gpu_slots or sum(s.capacity for s in sites if s.kind == "gpu") or 1
        total = self.cpu_slots + self.gpu_slots
        rec = ResourceCounter(total, ["simulate", "ml"])
        rec.reallocate(None, "simulate", total)  # the idle ML side lends its slots at first
        super().__init__(queues, resource_counter=rec)
        self.context = context
        self.report_at_end = opts.plots
        if context is not None and not opts.cpu_slots:
            # simulation slots follow the CPU sites that take tasks (down, drained, back)
            context.follow(rec, "cpu", pool="simulate")

        self.options = opts
        self.registry = registry
        self.run_dir = run_dir
        pool = read_pool(opts.pool)
        self.pool = pool[: opts.pool_size] if opts.pool_size else pool
        self.budget = min(opts.budget, len(self.pool))
        self.method = SIMULATION_METHODS[opts.simulation]
        self.rng = random.Random(opts.seed)
        self.started = time.time()
        self.ended: float | None = None

        self.lock = threading.Lock()
        self.ranking: list[str] = self.rng.sample(self.pool, len(self.pool))
        self.ranking_label: str | None = None  # the version that made the ranking
        self.cursor = 0
        self.chosen: set[str] = set()  # submitted (in flight or done)
        self.submitted = 0
        self.received = 0
        self.values: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.chosen_by: dict[str, str | None] = {}
        self.new_values = 0  # successful results since the last training snapshot
        self.batch_submitted = 0  # batch policy: submitted since sampling last resumed
        self.sims_done = False  # every budgeted simulation came back
        self.final_started = False  # the last version (on every result) is being trained
        self.records: list[dict[str, Any]] = []  # every result taken, for plots and summary
        self.predictions: dict[str, dict[str, tuple[float, float]]] = {}
        self.lineage: dict[str, list[dict[str, Any]]] = {}
        self.versions: list[dict[str, Any]] = []
        self.latest: tuple[dict[str, Any], str, int | None] | None = None
        self.phase: dict[str, float] = {"registry": 0.0, "ranking": 0.0, "paused": 0.0}
        self.first_ranking: float | None = None
        self.paused_since: float | None = None
        self.plot_files: list[Path] = []

        self.sampling = threading.Event()  # cleared while the batch policy pauses
        self.sampling.set()
        self.wake_trainer = threading.Event()  # set on each result: is a version due?
        self.rank_needed = threading.Event()  # the trainer hands a new version to `rank`
        self.ranked = threading.Event()  # `rank` is done with it

    # -- helpers ----------------------------------------------------------------------------

    def _wait_result(self, topic: str) -> Result | None:
        """The next result of ``topic``, or None once the campaign is ending."""
        while not self.done.is_set():
            try:
                return self.queues.get_result(topic, timeout=POLL_S)
            except TimeoutException:
                continue
        return None

    def _next_candidate(self) -> tuple[str, str | None] | None:
        """Best-ranked molecule not chosen yet and the version that ranked it (lock held)."""
        if self.submitted >= self.budget:
            return None
        while self.cursor < len(self.ranking):
            smiles = self.ranking[self.cursor]
            self.cursor += 1
            if smiles not in self.chosen:
                return smiles, self.ranking_label
        return None

    def _due(self) -> Literal["retrain", "final"] | None:
        """Whether the policy wants a new version now (lock held)."""
        if self.options.policy == "random" or self.final_started:
            return None
        if self.sims_done:
            return "final"
        if self.options.policy == "steered":
            due = self.new_values >= self.options.retrain_every
        else:  # batch: the paused batch has fully come back
            due = not self.sampling.is_set() and self.received == self.submitted
        return "retrain" if due else None

    def _resume_sampling(self) -> None:
        """Batch policy: the new ranking is in, simulate the next batch."""
        with self.lock:
            if self.options.policy != "batch" or self.sampling.is_set():
                return
            self.batch_submitted = 0
            if self.paused_since is not None:
                self.phase["paused"] += time.time() - self.paused_since
                self.paused_since = None
            self.sampling.set()

    # -- agents -----------------------------------------------------------------------------

    @task_submitter(task_type="simulate")
    def submit_simulation(self) -> None:
        """Submit the best-ranked molecule not simulated yet (one ``simulate`` slot is held)."""
        while not self.sampling.wait(POLL_S):
            if self.done.is_set():
                return
        with self.lock:
            picked = self._next_candidate()
            if picked is not None:
                smiles, label = picked
                self.chosen.add(smiles)
                self.chosen_by[smiles] = label
                self.submitted += 1
                self.batch_submitted += 1
                if (
                    self.options.policy == "batch"
                    and self.batch_submitted >= self.options.retrain_every
                ):
                    self.sampling.clear()
                    self.paused_since = time.time()
        if picked is None:  # budget spent or pool exhausted: wait for the campaign to end
            assert self.rec is not None
            self.rec.release("simulate", 1)
            self.done.wait()
            return
        kwargs: dict[str, Any] = {}
        if self.method == "lookup_ip":
            assert self.options.reference is not None
            reference = str(self.options.reference.expanduser().resolve())
            kwargs = {"reference": reference, "time_scale": self.options.time_scale}
        else:
            kwargs = {"walltime": self.options.walltime}
        self.queues.send_inputs(
            smiles, method=self.method, topic="simulate", model_version=label, **kwargs
        )

    @result_processor(topic="simulate")
    def store_simulation(self, result: Result) -> None:
        """Record a simulation, free its slot, wake the trainer, end when the budget is in."""
        assert self.rec is not None
        self.rec.release("simulate", 1)
        smiles = str((result.args or ("?",))[0])
        ip = getattr(result.value, "ip_ev", None) if result.success else None
        with self.lock:
            self.received += 1
            if ip is not None:
                self.values[smiles] = float(ip)
                self.new_values += 1
            else:
                info = result.failure_info
                self.failed[smiles] = (info.reason or info.exception_type) if info else "failed"
            self.records.append(_record(result, ip))
            label = result.model_version
            if label is not None:
                mean, std = self.predictions.get(label, {}).get(smiles, (None, None))
                self.lineage.setdefault(label, []).append(
                    {
                        "task_id": result.task_id,
                        "smiles": smiles,
                        "predicted_ip_ev": mean,
                        "predicted_std": std,
                        "ip_ev": ip,
                        "success": bool(result.success),
                    }
                )
            finished = self.received >= self.budget or (
                self.received == self.submitted and self._exhausted()
            )
            self.sims_done = finished
            received, best = self.received, max(self.values.values(), default=None)
        if self.context is not None:
            if ip is not None:
                self.context.record_objective(float(ip), result.task_id)
            text = f"best IP {best:.2f} eV" if best is not None else "no value yet"
            self.context.set_progress(received, self.budget, text=text)
        if finished and (self.options.policy == "random" or not self.options.final_retrain):
            self._finish()
        else:  # the trainer decides whether a version is due (the final one included)
            self.wake_trainer.set()

    def _exhausted(self) -> bool:
        return all(s in self.chosen for s in self.ranking[self.cursor :])

    @agent
    def retrain(self) -> None:
        """Train a version whenever the policy wants one; have it ranked; finish after the last.

        The wake-up event is cleared *before* the policy is checked, so a result that arrives
        while a version trains is never lost. While the version trains, the ML pool takes its
        slots back from simulation (and returns them after), as the ``rank`` responder does.
        """
        while not self.done.is_set():
            self.wake_trainer.wait(POLL_S)
            self.wake_trainer.clear()
            with self.lock:
                due = self._due()
                if due == "final":
                    self.final_started = True
                if due is not None:
                    training_set = sorted(self.values.items())
                    self.new_values = 0
            if due is None:
                continue
            assert self.rec is not None
            lender = ReallocatorThread(
                self.rec,
                gather_from="simulate",
                gather_to="ml",
                disperse_to="simulate",
                max_slots=self.gpu_slots,
                abort_event=self.done,
                logger_name=self.logger.name + ".allocate",
            )
            lender.start()
            try:
                trained = self._train(training_set, final=due == "final")
            finally:
                lender.stop_event.set()
                lender.join()
            if self.done.is_set():
                return
            if due == "final":
                self._finish()
                return
            if trained:
                self._rank_and_wait()
            self._resume_sampling()

    def _train(self, training_set: list[tuple[str, float]], final: bool) -> bool:
        """Train one version on the GPU site and log it to MLflow; True if one came out."""
        number = len(self.versions) + 1
        if len(training_set) < 2:
            return False
        train_options = {"epochs": self.options.epochs, "seed": self.options.seed + number}
        self.queues.send_inputs(
            None,
            training_set,
            train_options,
            method="train_surrogate",
            topic="train",
            keep_inputs=False,
        )
        result = self._wait_result("train")
        if result is None:
            return False
        self.records.append(_record(result))
        if not result.success:
            info = result.failure_info
            logger.warning("training failed: %s", info.message if info else "unknown")
            return False
        weights, metrics = result.value
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        started = time.perf_counter()
        label, version = f"{self.registry_model}/round-{number}", None
        if self.registry is not None:
            info = self.registry.log_training(
                to_module(weights),
                params={
                    **train_options,
                    "n_train": len(training_set),
                    "policy": self.options.policy,
                },
                metrics=numbers,
                tags={
                    "orch.campaign": "molecular-design",
                    "orch.round": number,
                    "orch.final": final,
                    **provenance_tags(result),
                },
                task_id=result.task_id,  # a result replayed after --resume is not logged again
            )
            self.registry.promote(info.version, metric="val_rmse")
            label, version = f"{info.name}/{info.version}", info.version
        self.phase["registry"] += time.perf_counter() - started
        self.versions.append(
            {
                "label": label,
                "version": version,
                "n_train": len(training_set),
                "val_rmse": numbers.get("val_rmse", float("nan")),
                "seconds": numbers.get("seconds", float("nan")),
                "final": final,
            }
        )
        with self.lock:
            self.latest = (weights, label, version)
        return True

    def _rank_and_wait(self) -> None:
        """Hand the new version to the ``rank`` responder and wait until it re-ranked."""
        while self.rank_needed.is_set():  # the responder's last round is still closing
            if self.done.wait(POLL_S / 10):
                return
        self.ranked.clear()
        self.rank_needed.set()
        while not self.ranked.wait(POLL_S):
            if self.done.is_set():
                return

    @event_responder(
        "rank_needed",
        reallocate_resources=True,
        gather_from="simulate",
        gather_to="ml",
        disperse_to="simulate",
        max_slots="gpu_slots",
    )
    def rank(self) -> None:
        """Score every molecule not chosen yet with the newest version, in chunks; re-rank."""
        try:
            self._rank()
        finally:
            self.ranked.set()

    def _rank(self) -> None:
        with self.lock:
            latest = self.latest
            candidates = [s for s in self.pool if s not in self.chosen]
        if latest is None or not candidates or self.sims_done:
            return
        weights, label, _ = latest
        size = self.options.infer_chunk
        chunks = [candidates[i : i + size] for i in range(0, len(candidates), size)]
        for index, chunk in enumerate(chunks):
            self.queues.send_inputs(
                weights,
                chunk,
                method="infer_surrogate",
                topic="infer",
                keep_inputs=False,
                model_version=label,
                task_info={"chunk": index},
            )
        scored: dict[int, tuple[list[float], list[float]]] = {}
        failures = 0
        for _ in chunks:
            result = self._wait_result("infer")
            if result is None:
                return
            self.records.append(_record(result))
            if result.success:
                scored[int(result.task_info["chunk"])] = result.value
            else:
                failures += 1
        if failures:
            logger.warning("%d of %d inference chunks failed; ranking kept", failures, len(chunks))
            return
        started = time.perf_counter()
        predicted: dict[str, tuple[float, float]] = {}
        for index, chunk in enumerate(chunks):
            means, stds = scored[index]
            predicted.update(
                (s, (float(m), float(d))) for s, m, d in zip(chunk, means, stds, strict=True)
            )
        kappa = self.options.kappa
        order = sorted(predicted, key=lambda s: predicted[s][0] + kappa * predicted[s][1])
        order.reverse()  # highest upper confidence bound first
        with self.lock:
            self.predictions[label] = predicted
            self.ranking, self.ranking_label, self.cursor = order, label, 0
            if self.first_ranking is None:
                self.first_ranking = time.time()
        self.phase["ranking"] += time.perf_counter() - started
        self._flush_lineage(keep=label)

    # -- the end ----------------------------------------------------------------------------

    def _flush_lineage(self, keep: str | None = None) -> None:
        """Log what each version chose to its MLflow run (all but ``keep``, still choosing)."""
        if self.registry is None:
            return
        with self.lock:
            ready = {k: v for k, v in self.lineage.items() if k != keep and v}
            for key in ready:
                self.lineage[key] = []
        started = time.perf_counter()
        for label, rows in ready.items():
            version = label.rpartition("/")[2]
            if version.isdigit():
                self.registry.log_lineage(int(version), rows)
        self.phase["registry"] += time.perf_counter() - started

    def _finish(self) -> None:
        """Log the remaining lineage, write the plots and ``summary.json``, end the campaign."""
        self.ended = time.time()
        try:
            self._flush_lineage()
        finally:
            try:
                self._write_outputs()
            finally:
                self.done.set()

    def _write_outputs(self) -> None:
        if self.run_dir is None:
            return
        if self.options.plots:  # orch writes it once the run ended (see report_at_end)
            self.plot_files = [self.run_dir / "report.html"]
        (self.run_dir / "summary.json").write_text(json.dumps(self.summary_data(), indent=1))

    # -- reporting --------------------------------------------------------------------------

    def _task_seconds(self, method: str) -> tuple[int, float, int]:
        """Tasks of ``method`` run in this session and their seconds; tasks replayed."""
        mine = [r for r in self.records if r["method"] == method]
        spans = [
            r["timestamps"]["finished"] - r["timestamps"]["started"]
            for r in mine
            if not r.get("replayed")
            and r["timestamps"].get("started")
            and r["timestamps"].get("finished")
        ]
        return len(spans), sum(spans), sum(1 for r in mine if r.get("replayed"))

    def summary_data(self) -> dict[str, Any]:
        """Everything :meth:`summary` prints, as JSON-ready data (also in ``summary.json``)."""
        wall = (self.ended or time.time()) - self.started
        best = sorted(self.values, key=self.values.__getitem__, reverse=True)
        phases: dict[str, dict[str, float]] = {}
        for name, method in (
            ("simulation (cpu)", self.method),
            ("training (gpu)", "train_surrogate"),
            ("inference (gpu)", "infer_surrogate"),
        ):
            count, seconds, replayed = self._task_seconds(method)
            phases[name] = {"tasks": count, "seconds": seconds, "replayed": replayed}
        phases["registry (mlflow)"] = {
            "tasks": len(self.versions),
            "seconds": self.phase["registry"],
        }
        phases["ranking (orch)"] = {
            "tasks": len(self.predictions),
            "seconds": self.phase["ranking"],
        }
        if self.options.policy == "batch":
            phases["sampling paused"] = {"tasks": 0, "seconds": self.phase["paused"]}
        champion = None
        if self.registry is not None and self.versions:
            champion = self.registry.alias_version("champion")
        return {
            "policy": self.options.policy,
            "simulation": self.method,
            "pool": len(self.pool),
            "budget": self.budget,
            "wall_seconds": wall,
            "first_ranking_seconds": (
                None if self.first_ranking is None else self.first_ranking - self.started
            ),
            "cpu_slots": self.cpu_slots,
            "gpu_slots": self.gpu_slots,
            "simulations": {"ok": len(self.values), "failed": len(self.failed)},
            "best": [
                {"smiles": s, "ip_ev": self.values[s], "chosen_by": self.chosen_by.get(s)}
                for s in best[:5]
            ],
            "found": [
                {"smiles": s, "ip_ev": v, "chosen_by": self.chosen_by.get(s)}
                for s, v in self.values.items()
            ],
            "versions": self.versions,
            "champion": champion,
            "phases": phases,
            "plots": [str(p) for p in self.plot_files],
        }

    def summary(self) -> str:
        """The terminal report: simulations, best molecules, model versions, time per phase."""
        from rich.console import Console
        from rich.table import Table

        data = self.summary_data()
        wall = max(data["wall_seconds"], 1e-9)
        buffer = io.StringIO()
        console = Console(file=buffer, width=100, color_system=None, highlight=False)
        sims = data["simulations"]
        console.print(
            f"molecular-design: policy {data['policy']}, {self.method} on {self.cpu_slots} "
            f"CPU slot(s), surrogate on {self.gpu_slots} GPU slot(s); {sims['ok']} simulations "
            f"ok, {sims['failed']} failed, of a pool of {data['pool']} in {wall:.1f} s",
            markup=False,
        )
        best = Table(title="best molecules (vertical IP)", title_justify="left")
        for column in ("#", "IP (eV)", "SMILES", "chosen by"):
            best.add_column(column)
        for i, row in enumerate(data["best"], 1):
            best.add_row(
                str(i), f"{row['ip_ev']:.3f}", _kekule(row["smiles"]), row["chosen_by"] or "random"
            )
        console.print(best)
        if data["versions"]:
            versions = Table(
                title=f"model versions (MLflow model {self.registry_model})", title_justify="left"
            )
            for column in (
                "version",
                "trained on",
                "val RMSE (eV)",
                "train s",
                "simulations chosen",
            ):
                versions.add_column(column)
            chosen: dict[str | None, int] = {}
            for label in self.chosen_by.values():
                chosen[label] = chosen.get(label, 0) + 1
            for v in data["versions"]:
                marks = [
                    m
                    for m, on in (
                        ("final", v.get("final")),
                        ("champion", data["champion"] == v["version"]),
                    )
                    if on
                ]
                name = f"v{v['version']}" if v["version"] is not None else v["label"]
                versions.add_row(
                    name + (f" ({', '.join(marks)})" if marks else ""),
                    str(v["n_train"]),
                    f"{v['val_rmse']:.3f}",
                    f"{v['seconds']:.1f}",
                    str(chosen.get(v["label"], 0)),
                )
            if chosen.get(None):
                versions.add_row("(none: random order)", "", "", "", str(chosen[None]))
            console.print(versions)
        phases = Table(title="time per phase", title_justify="left")
        for column in ("phase", "tasks", "seconds", "share of wall time"):
            phases.add_column(column)
        for name, row in data["phases"].items():
            slots = self.cpu_slots if name.startswith("simulation") else 1
            share = 100.0 * row["seconds"] / (wall * slots)
            note = f"{share:.0f}%" + (f" of {slots} slots" if slots > 1 else "")
            tasks = str(int(row["tasks"]))
            if row.get("replayed"):  # from the journal: no slot time in this session
                tasks += f" (+{int(row['replayed'])} replayed)"
            phases.add_row(name, tasks, f"{row['seconds']:.1f}", note)
        if data["first_ranking_seconds"] is not None:
            phases.add_row(
                "until the first model ranking", "", f"{data['first_ranking_seconds']:.1f}", ""
            )
        console.print(phases)
        if data["plots"]:
            console.print("report: " + ", ".join(Path(p).name for p in data["plots"]), markup=False)
        return buffer.getvalue().rstrip()
