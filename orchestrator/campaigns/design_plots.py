"""Plots of a molecular-design run (PNG, matplotlib's Agg backend: no display needed).

Each function takes plain records (one dict per task: ``method``, ``site``, ``success``,
``timestamps`` as in the results files, ``ip_ev`` for simulations, and ``replayed`` when the
result came from the journal of an earlier session) and writes one file. Replayed records
count as values found, but not as worker time or latency: they ran in another session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HOPS = (
    ("created", "sent", "waiting in orch"),
    ("sent", "started", "to worker (queue, transfer)"),
    ("started", "finished", "running"),
    ("finished", "returned", "back to orch"),
    ("returned", "received", "to the thinker"),
)
"""Latency segments between consecutive ``Result`` timestamps."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def plot_best_found(
    simulations: Sequence[Mapping[str, Any]], start: float, path: Path, title: str
) -> Path:
    """Best IP found so far (and the mean of the 10 best) against simulations and time."""
    import heapq

    plt = _pyplot()
    done = sorted(
        (r for r in simulations if r.get("ip_ev") is not None),
        key=lambda r: r["timestamps"]["received"] or r["timestamps"]["returned"] or 0.0,
    )
    counts, times, best, top10 = [], [], [], []
    leaders: list[float] = []  # a min-heap of the 10 best so far
    for n, record in enumerate(done, 1):
        value = float(record["ip_ev"])
        if len(leaders) < 10:
            heapq.heappush(leaders, value)
        else:
            heapq.heappushpop(leaders, value)
        stamps = record["timestamps"]
        counts.append(n)
        times.append((stamps["received"] or stamps["returned"] or start) - start)
        best.append(max(leaders))
        top10.append(sum(leaders) / len(leaders))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, xs in ((left, counts), (right, times)):
        ax.step(xs, best, where="post", label="best")
        ax.step(xs, top10, where="post", label="mean of the 10 best")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    left.set_xlabel("successful simulations")
    left.set_ylabel("vertical IP found (eV)")
    right.set_xlabel("time since start (s)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_utilization(
    records: Sequence[Mapping[str, Any]],
    capacity: Mapping[str, int],
    start: float,
    path: Path,
    bins: int = 200,
) -> Path:
    """Share of each site's workers running a task over time, split by method."""
    plt = _pyplot()
    runs = [
        (r["site"], r["method"], r["timestamps"]["started"], r["timestamps"]["finished"])
        for r in records
        if r.get("site")
        and not r.get("replayed")
        and r["timestamps"].get("started")
        and r["timestamps"].get("finished")
    ]
    sites = sorted({site for site, *_ in runs} | set(capacity))
    end = max((f for *_, f in runs), default=start + 1.0)
    width = max(end - start, 1e-6) / bins
    edges = [i * width for i in range(bins + 1)]
    fig, axes = plt.subplots(
        len(sites), 1, figsize=(10, 2.6 * len(sites)), squeeze=False, sharex=True
    )
    for ax, site in zip(axes[:, 0], sites, strict=True):
        methods = sorted({m for s, m, *_ in runs if s == site})
        slots = max(capacity.get(site, 1), 1)
        stacks = []
        for method in methods:
            busy = [0.0] * bins
            for s, m, t0, t1 in runs:
                if s != site or m != method:
                    continue
                a, b = t0 - start, t1 - start
                first, last = int(a // width), min(int(b // width), bins - 1)
                for i in range(max(first, 0), last + 1):
                    overlap = min(b, edges[i + 1]) - max(a, edges[i])
                    if overlap > 0:
                        busy[i] += overlap / width
            stacks.append([100.0 * v / slots for v in busy])
        if stacks:
            ax.stackplot(edges[:-1], *stacks, labels=methods, step="post")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xlim(0, end - start)
        ax.set_ylim(0, 110)
        ax.set_ylabel(f"{site}\n% of {slots} worker(s)")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time since start (s)")
    fig.suptitle("Per-site utilization (workers running a task)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def latency_breakdown(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean seconds of each hop (see :data:`HOPS`) per method, over tasks that have both ends.

    Replayed records are left out (their hops were in another session).
    """
    table: dict[str, dict[str, float]] = {}
    records = [r for r in records if not r.get("replayed")]
    for method in sorted({r["method"] for r in records}):
        mine = [r["timestamps"] for r in records if r["method"] == method]
        row: dict[str, float] = {}
        for first, second, label in HOPS:
            spans = [t[second] - t[first] for t in mine if t.get(first) and t.get(second)]
            row[label] = sum(spans) / len(spans) if spans else 0.0
        table[method] = row
    return table


def plot_latency(records: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Mean task latency per method, split into the hops between the result's timestamps."""
    plt = _pyplot()
    table = latency_breakdown(records)
    methods = list(table)
    fig, ax = plt.subplots(figsize=(10, 1.8 + 0.7 * max(len(methods), 1)))
    left = [0.0] * len(methods)
    for _, _, label in HOPS:
        values = [table[m][label] for m in methods]
        ax.barh(methods, values, left=left, label=label)
        left = [a + b for a, b in zip(left, values, strict=True)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.2f} s", va="center", fontsize=8)
    ax.set_xlabel("mean seconds per task")
    ax.set_title(
        "Task latency breakdown (created → sent → started → finished → returned → received)"
    )
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=len(HOPS))
    ax.grid(alpha=0.3, axis="x")
    ax.set_xlim(0, max(left, default=1.0) * 1.15 or 1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
