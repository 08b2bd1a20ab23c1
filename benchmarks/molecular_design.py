#!/usr/bin/env python
"""Benchmark: steered vs random vs batch-retrain molecular design, same simulation budget.

For each seed and policy it runs the built-in ``molecular-design`` campaign through ``orch
launch`` on the default local sites (``sites/``: CPU site and mock GPU site, real engines, real
surrogate training and inference, real MLflow) and counts how many of the pool's top-1 %
molecules by vertical IP it simulated.

**What is not simulated here.** To fit several seeds x 3 policies in minutes, the simulations
use ``-o simulation=reference``: a ``lookup_ip`` task, still placed by orch on the CPU site,
reads the molecule's IP from ``benchmarks/ip_reference.csv`` (made by
``benchmarks/make_ip_reference.py`` with the campaign's own xTB method over the whole pool) and
waits the wall time that xTB run took (times ``--time-scale``). The top-1 % is taken from the
same table, so "found" means the campaign chose that molecule.

Besides the hits at the end of the budget, the table gives each run's wall time and the hits
each policy had by the time the steered run of the same seed had finished (equal time).

Usage::

    .venv/bin/python benchmarks/molecular_design.py [--seeds 3] [--budget 250]
        [--retrain-every 25] [--time-scale 1.0] [--kappa 0.25] [--policies steered,random,batch]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "benchmarks" / "ip_reference.csv"


def top_set(reference: Path, fraction: float) -> tuple[set[str], float]:
    """The top ``fraction`` of the reference's molecules by IP, and the IP threshold."""
    with reference.open(newline="") as handle:
        rows = [(r["smiles"], float(r["ip_ev"])) for r in csv.DictReader(handle) if r["ip_ev"]]
    rows.sort(key=lambda r: r[1], reverse=True)
    n = max(1, math.ceil(fraction * len(rows)))
    return {s for s, _ in rows[:n]}, rows[n - 1][1]


def run(policy: str, seed: int, args: argparse.Namespace, run_dir: Path) -> dict:
    """One campaign; returns its simulations (smiles, success, time since start)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    options = {
        "policy": policy,
        "seed": seed,
        "budget": args.budget,
        "retrain_every": args.retrain_every,
        "simulation": "reference",
        "reference": str(args.reference),
        "time_scale": args.time_scale,
        "epochs": args.epochs,
        "kappa": args.kappa,
        "plots": "false",
    }
    command = [
        sys.executable, "-m", "orchestrator.cli", "launch", "--sites", str(REPO / "sites"),
        "molecular-design", "--run-dir", str(run_dir), "--no-progress",
        *[f"-o{k}={v}" for k, v in options.items()],
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.exit(f"{policy} seed {seed} failed ({done.returncode}): {done.stderr[-2000:]}")
    records = [
        json.loads(line)
        for line in (run_dir / "results" / "simulate.jsonl").read_text().splitlines()
    ]
    first = min(r["timestamps"]["created"] for r in records)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "sims": [
            (r["args"][0], r["success"], (r["timestamps"]["received"] or 0.0) - first)
            for r in records
        ],
        "campaign_s": summary["wall_seconds"],
        "versions": len(summary["versions"]),
        "process_s": time.monotonic() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=250)
    parser.add_argument("--retrain-every", type=int, default=25)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--kappa", type=float, default=0.25, help="UCB weight of the uncertainty")
    parser.add_argument("--policies", default="steered,random,batch")
    parser.add_argument("--reference", type=Path, default=REFERENCE)
    parser.add_argument("--run-root", type=Path, default=REPO / "runs" / "bench-molecular-design")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    args = parser.parse_args()
    policies = args.policies.split(",")
    top, threshold = top_set(args.reference, 0.01)
    print(
        f"pool {args.reference.name}: top-1% = {len(top)} molecules (IP >= {threshold:.3f} eV); "
        f"budget {args.budget} simulations, retrain every {args.retrain_every}, "
        f"kappa {args.kappa}, "
        f"{args.seeds} seeds; simulations are REFERENCE LOOKUPS (xTB values and timings "
        f"x{args.time_scale}), not xTB runs",
        flush=True,
    )
    results: dict[str, list[dict]] = {p: [] for p in policies}
    for seed in range(args.seeds):
        for policy in policies:
            outcome = run(policy, seed, args, args.run_root / f"{policy}-{seed}")
            outcome["hits"] = sum(1 for s, ok, _ in outcome["sims"] if ok and s in top)
            results[policy].append(outcome)
            print(
                f"  seed {seed} {policy:8s} hits {outcome['hits']:3d}  "
                f"campaign {outcome['campaign_s']:6.1f} s  versions {outcome['versions']}",
                flush=True,
            )
    # Equal time: hits each run had when the steered run of its seed had finished
    if "steered" in results:
        for seed in range(args.seeds):
            sims = results["steered"][seed]["sims"]
            horizon = max(t for *_, t in sims)
            for policy in policies:
                mine = results[policy][seed]["sims"]
                results[policy][seed]["hits_at_steered_time"] = sum(
                    1 for s, ok, t in mine if ok and s in top and t <= horizon
                )

    def mean_sd(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):5.1f} ± {sd:4.1f}"

    print()
    header = (
        f"{'policy':8s} | {'top-1% found (mean ± sd)':24s} | {'per seed':14s} | "
        f"{'x random':8s} | {'campaign s':10s} | {'found by steered end':20s}"
    )
    print(header)
    print("-" * len(header))
    base = (
        statistics.mean(r["hits"] for r in results.get("random", [])) if "random" in results else 0
    )
    for policy in policies:
        runs = results[policy]
        hits = [float(r["hits"]) for r in runs]
        ratio = f"{statistics.mean(hits) / base:8.1f}" if base else f"{'-':>8s}"
        equal = (
            mean_sd([float(r["hits_at_steered_time"]) for r in runs])
            if "hits_at_steered_time" in runs[0]
            else "-"
        )
        print(
            f"{policy:8s} | {mean_sd(hits):24s} | {','.join(str(int(h)) for h in hits):14s} | "
            f"{ratio} | {statistics.mean(r['campaign_s'] for r in runs):10.1f} | {equal:20s}"
        )
    if "steered" in results and "batch" in results:
        s = statistics.mean(r["hits"] for r in results["steered"])
        b = statistics.mean(r["hits"] for r in results["batch"])
        print(f"\nsteered / batch-retrain (same budget): {s / b:.2f}" if b else "")
    if not args.keep:
        shutil.rmtree(args.run_root, ignore_errors=True)


if __name__ == "__main__":
    main()
