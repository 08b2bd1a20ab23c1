"""The remote path: a Globus site (real SDK, real RabbitMQ, real endpoint) next to a local site.

Starts the loopback stack of ``tests/loopback/`` (a stand-in for the Globus Compute cloud API on
127.0.0.1:5000, a private RabbitMQ, a real ``globus-compute-endpoint`` configured from the files
``orch deploy`` writes) and measures, through orch's own site objects:

* submission to first result on a cold endpoint (the user endpoint and its workers start on
  the first task);
* the warm round trip of one no-op task (median of ``--round-trips``);
* no-op tasks/s with ``--in-flight`` tasks outstanding (``--tasks`` in all);

and the same round trip and tasks/s for a local site (the same engine on this machine, no
service or broker), so the cost of the remote path reads as a ratio in one run.

    python benchmarks/remote_path.py [--tasks 200] [--in-flight 8] [--round-trips 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from loopback.broker import RabbitBroker, missing_reason  # noqa: E402
from loopback.endpoint import CLIENT_ID, CLIENT_SECRET, LoopbackEndpoint  # noqa: E402
from loopback.service import LoopbackService  # noqa: E402
from loopback.tasks import square  # noqa: E402

from orchestrator.config.sites import SiteConfig  # noqa: E402
from orchestrator.sites import make_site  # noqa: E402
from orchestrator.sites.base import Site  # noqa: E402


def one(site: Site, x: int, timeout: float = 300.0) -> float:
    """Seconds for one task's round trip (submit to decoded outcome)."""
    started = time.perf_counter()
    future = site.submit(square, (x,), {})
    done, _ = wait([future], timeout=timeout)
    if not done:
        raise RuntimeError(f"site {site.name}: no result within {timeout:g} s")
    outcome = site.outcome(future)
    if not outcome.ok:
        raise RuntimeError(f"site {site.name}: {outcome.failure}")
    return time.perf_counter() - started


def throughput(site: Site, n_tasks: int, in_flight: int) -> float:
    """Tasks/s with ``in_flight`` tasks outstanding until ``n_tasks`` are done."""
    pending: set[Future[Any]] = set()
    sent = 0
    started = time.perf_counter()
    while sent < n_tasks or pending:
        while sent < n_tasks and len(pending) < in_flight:
            pending.add(site.submit(square, (sent,), {}))
            sent += 1
        done, pending = wait(pending, timeout=300, return_when="FIRST_COMPLETED")
        if not done:
            raise RuntimeError(f"site {site.name}: tasks stalled")
        for future in done:
            outcome = site.outcome(future)
            if not outcome.ok:
                raise RuntimeError(f"site {site.name}: {outcome.failure}")
    return n_tasks / (time.perf_counter() - started)


def measure(site: Site, args: argparse.Namespace, cold: Callable[[], float] | None) -> dict:
    figures: dict[str, float] = {}
    if cold is not None:
        figures["cold first result s"] = cold()
    trips = [one(site, i) for i in range(args.round_trips)]
    figures["round trip s (median)"] = statistics.median(trips)
    figures["tasks/s"] = throughput(site, args.tasks, args.in_flight)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--round-trips", type=int, default=10)
    args = parser.parse_args()
    reason = missing_reason()
    if reason:
        print(f"cannot run the loopback stack here: {reason}", file=sys.stderr)
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="orch-remote-bench-"))
    endpoint_id = uuid.uuid4()
    remote_config = SiteConfig(
        name="remote", kind="cpu", backend="globus", capacity=2, endpoint_id=endpoint_id,
        user_endpoint_config={"address": "127.0.0.1"}, http_timeout=30,
    )  # fmt: skip
    local_config = SiteConfig(name="local", kind="cpu", backend="local", capacity=2)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")])
    )
    results: dict[str, dict[str, float]] = {}
    with RabbitBroker() as broker, LoopbackService(broker.url, lock_timeout=240) as service:
        endpoint = LoopbackEndpoint(
            remote_config, service, scratch / "endpoint", name="orch-bench",
            python_paths=[str(REPO / "tests")],
        )  # fmt: skip
        endpoint.start()
        try:
            os.environ.update(
                GLOBUS_SDK_SERVICE_URL_COMPUTE=service.url,
                GLOBUS_SDK_SERVICE_URL_AUTH=service.auth_url,
                GLOBUS_COMPUTE_CLIENT_ID=CLIENT_ID,
                GLOBUS_COMPUTE_CLIENT_SECRET=CLIENT_SECRET,
                GLOBUS_COMPUTE_USER_DIR=str(scratch / "client"),
            )
            os.environ.pop("GLOBUS_SDK_ENVIRONMENT", None)
            remote = make_site(remote_config, scratch / "run")
            remote.start()
            try:
                results["globus (loopback)"] = measure(remote, args, cold=lambda: one(remote, -1))
            finally:
                remote.shutdown()
        finally:
            endpoint.stop()
    local = make_site(local_config, scratch / "run")
    local.start()
    try:
        started = time.perf_counter()
        one(local, -1)
        results["local"] = {
            "cold first result s": time.perf_counter() - started,
            **measure(local, args, cold=None),
        }
    finally:
        local.shutdown()
    names = ["cold first result s", "round trip s (median)", "tasks/s"]
    print(f"{'site':20} | " + " | ".join(f"{n:>21}" for n in names))
    for site, figures in results.items():
        print(f"{site:20} | " + " | ".join(f"{figures[n]:21.3f}" for n in names))
    ratio = results["globus (loopback)"]["tasks/s"] / results["local"]["tasks/s"]
    trip = (
        results["globus (loopback)"]["round trip s (median)"]
        / results["local"]["round trip s (median)"]
    )
    print(f"globus/local tasks/s: {ratio:.2f}; round trip globus/local: {trip:.1f}x")
    print(
        f"({args.tasks} no-op tasks, {args.in_flight} in flight, 2 workers per site; the local "
        "site's cold figure includes its engine start)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
