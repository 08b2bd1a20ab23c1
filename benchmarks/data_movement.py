"""Large-object movement: orch's proxying vs the ProxyStore connector's own put/resolve.

One local HTEX site (``capacity`` workers, ``data: file`` connector in a temporary directory,
threshold 1 MB) is started once with ``open_session``. Two cases, each run through orch and
raw in the same process, on the same engine and workers:

* **A, shared input**: one ``--mb`` MiB float64 array sent to ``--tasks`` (8) tasks that each
  resolve it and sum it. Timed from the first send to the last result.
  *orch*: ``send_inputs(arr, method="checksum")`` x 8 (the data plane serializes the array
  once for the size check, puts it once and reuses the proxy for the other 7 tasks).
  *raw*: ``store.proxy(arr)`` (one put) in a ProxyStore ``Store`` over a ``FileConnector``
  in its own directory, then 8 tasks submitted straight to the same engine
  (``engine.submit``, packed as the SDK packs them, like ``throughput.py``) running a bare
  function that ``extract``\\ s the proxy and sums the array.
* **B, result**: one task makes a ``--mb`` MiB array (``np.ones``) and returns it; the
  thinker resolves it and reads one element. Timed from the send to the value in hand.
  *orch*: ``send_inputs(n, method="make_array")``; the worker's ``run_task`` proxies the
  result (single-use, evicted once resolved); the thinker resolves it with
  ``DataPlane.resolve``.
  *raw*: a bare function on the same engine makes the array and returns
  ``store.proxy(arr, evict=True)`` from the raw store (rebuilt on the worker from its
  config, as orch does); the parent ``extract``\\ s it.

Why this baseline: both sides use the same connector type, serializer, cache size, file
system, worker processes and engine, and both pay the same engine round trips, so the
difference is what orch adds over the connector's own put + resolve (size check, sharing
bookkeeping, ``run_task`` wrapping, dispatch, result routing). Note that ProxyStore stores keep
a per-process cache (16 objects) on both sides: with 2 workers, 2 of the 8 resolves of case A
read the file and the others hit the worker's cache, for raw and orch alike.

Rounds alternate which side goes first; medians and minimums are reported. Single timings
on a small VM vary 2-3x between rounds (memory allocation of the 100 MB buffers), on both
sides alike: the minimums show the floor, compare several runs before reading the ratio.

Everything is torn down at the end: the session closes orch's store (removing its directory)
and stops the engine, the raw store is closed and the temporary directory removed.

    python benchmarks/data_movement.py [--mb 100] [--rounds 7] [--tasks 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
MODULE = Path(__file__).stem
"""Workers import the task functions from this module by name (``BENCH_DIR`` on PYTHONPATH)."""

# numpy asks for transparent huge pages for large arrays (madvise); on this kind of VM that
# makes a 100 MB allocation take 0.1 s or 0.4 s at random (direct compaction), on both sides
# alike, which swamps the comparison. Off by default, here and (inherited) on the workers;
# export NUMPY_MADVISE_HUGEPAGE=1 to measure with it. Set before numpy is imported.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

TOPIC = "bench"
THRESHOLD = 1_000_000


# --- task functions (run on the workers) -------------------------------------------------


def checksum(arr: Any) -> float:
    """Orch task: ``arr`` arrives resolved (``run_task`` resolves proxied arguments)."""
    return float(arr.sum())


def make_array(n_bytes: int) -> Any:
    """Orch task: a large result, proxied by ``run_task`` on the way back."""
    import numpy

    return numpy.ones(n_bytes // 8)


def raw_checksum(proxy: Any) -> float:
    """Raw task: resolve the proxy with ProxyStore itself and sum the array."""
    from proxystore.proxy import extract

    return float(extract(proxy).sum())


def raw_make_array(n_bytes: int, store_config: dict[str, Any]) -> Any:
    """Raw task: make the array and put it in the raw store; return a single-use proxy."""
    import numpy
    from proxystore.store import get_or_create_store
    from proxystore.store.config import StoreConfig

    store = get_or_create_store(StoreConfig.model_validate(store_config), register=True)
    return store.proxy(numpy.ones(n_bytes // 8), evict=True)


# --- the benchmark (parent process) ------------------------------------------------------


def task_module() -> Any:
    """This module imported by its name (not ``__main__``), as the workers import it."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(MODULE)


class RawEngine:
    """Submits bare functions straight to a local site's engine, packed as the SDK does."""

    def __init__(self, site: Any) -> None:
        from orchestrator.sites.local import _SERIALIZER

        self._site = site
        self._serializer = _SERIALIZER
        self._packed: dict[Callable[..., Any], str] = {}

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        from globus_compute_endpoint.engines.base import GCFuture

        from orchestrator.sites.local import pack_call

        packed_fn = self._packed.get(fn)
        if packed_fn is None:  # the bare function, serialized once (as the SDK does)
            packed_fn = self._packed[fn] = self._serializer.serialize(fn)
        task_id = uuid.uuid4()
        future = GCFuture(task_id)
        engine = self._site._engine
        assert engine is not None
        engine.submit(future, pack_call(task_id, fn, args, {}, packed_fn), {})
        return future

    def value(self, future: Future[Any], timeout: float = 300) -> Any:
        """The function's return value (raises with the remote traceback on failure)."""
        from globus_compute_common import messagepack

        result = messagepack.unpack(future.result(timeout=timeout))
        if result.is_error:
            raise RuntimeError(f"raw task failed: {result.data}")
        return self._serializer.deserialize(result.data)


def raw_shared(raw: RawEngine, store: Any, mod: Any, arr: Any, n_tasks: int) -> float:
    """Case A raw: 1 put + ``n_tasks`` resolves on the workers; seconds."""
    start = time.perf_counter()
    proxy = store.proxy(arr)
    futures = [raw.submit(mod.raw_checksum, proxy) for _ in range(n_tasks)]
    sums = [raw.value(f) for f in futures]
    elapsed = time.perf_counter() - start
    assert sums == [sums[0]] * n_tasks, sums
    store.evict(store_key(proxy))  # free the disk, outside the timing
    return elapsed


def orch_shared(session: Any, arr: Any, n_tasks: int) -> tuple[float, int]:
    """Case A orch: ``send_inputs`` x ``n_tasks``; seconds and puts made."""
    queues = session.queues
    before = session.data.puts
    start = time.perf_counter()
    for _ in range(n_tasks):
        queues.send_inputs(arr, method="checksum", topic=TOPIC)
    results = [queues.get_result(TOPIC, timeout=300) for _ in range(n_tasks)]
    elapsed = time.perf_counter() - start
    for result in results:
        assert result.success, result.failure_info
    assert len({r.value for r in results}) == 1, [r.value for r in results]
    puts = session.data.puts - before
    session.data.release(arr)  # free the disk, outside the timing
    return elapsed, puts


def raw_result(raw: RawEngine, store: Any, mod: Any, n_bytes: int) -> float:
    """Case B raw: worker-side put + parent resolve; seconds."""
    from proxystore.proxy import extract, is_resolved

    config = store.config().model_dump()
    start = time.perf_counter()
    proxy = raw.value(raw.submit(mod.raw_make_array, n_bytes, config))
    assert not is_resolved(proxy)
    value = extract(proxy)
    last = float(value[-1])
    elapsed = time.perf_counter() - start
    assert last == 1.0 and value.nbytes == n_bytes // 8 * 8
    return elapsed


def orch_result(session: Any, n_bytes: int) -> float:
    """Case B orch: ``send_inputs`` -> ``get_result`` -> resolved value; seconds."""
    from orchestrator.apps.proxies import is_proxy

    start = time.perf_counter()
    session.queues.send_inputs(n_bytes, method="make_array", topic=TOPIC)
    result = session.queues.get_result(TOPIC, timeout=300)
    assert result.success, result.failure_info
    assert is_proxy(result.value), "the result did not travel by proxy"
    value = session.data.resolve(result.value)
    last = float(value[-1])
    elapsed = time.perf_counter() - start
    assert last == 1.0 and value.nbytes == n_bytes // 8 * 8
    return elapsed


def store_key(proxy: Any) -> Any:
    """The store key a proxy points at (without resolving it)."""
    from proxystore.proxy import get_factory

    return get_factory(proxy).key


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="object size in MiB")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per side")
    parser.add_argument("--tasks", type=int, default=8, help="tasks sharing the input (case A)")
    parser.add_argument("--workers", type=int, default=2, help="HTEX workers")
    args = parser.parse_args()

    import numpy as np
    from proxystore.connectors.file import FileConnector
    from proxystore.store.base import Store

    from orchestrator.config.sites import SiteConfig
    from orchestrator.data import DataConfig
    from orchestrator.dispatch import Method, MethodRegistry
    from orchestrator.runner import open_session

    mod = task_module()
    n_bytes = args.mb * 2**20
    root = Path(tempfile.mkdtemp(prefix="orch-bench-data-"))
    data = DataConfig(connector="file", path=root / "orch-store", threshold_bytes=THRESHOLD)
    site = SiteConfig(name="bench", kind="cpu", backend="local", capacity=args.workers, data=data)
    methods = MethodRegistry([Method(mod.checksum), Method(mod.make_array)])
    (root / "raw-store").mkdir()
    # same connector type and cache size as orch's store; clear=False as in the configs orch
    # ships to workers (the directory is removed below)
    raw_store: Store[Any] = Store(
        f"bench-raw-{uuid.uuid4().hex[:8]}",
        FileConnector(str(root / "raw-store"), clear=False),
        cache_size=16,
        register=True,
    )
    times: dict[str, list[float]] = {k: [] for k in ("A raw", "A orch", "B raw", "B orch")}
    puts: list[int] = []
    try:
        with open_session([site], methods, {TOPIC}, root / "run", [str(BENCH_DIR)]) as session:
            raw = RawEngine(session.sites[0])

            def shared_raw() -> None:
                arr = np.random.default_rng().random(n_bytes // 8)
                times["A raw"].append(raw_shared(raw, raw_store, mod, arr, args.tasks))

            def shared_orch() -> None:
                arr = np.random.default_rng().random(n_bytes // 8)
                elapsed, n_puts = orch_shared(session, arr, args.tasks)
                times["A orch"].append(elapsed)
                puts.append(n_puts)

            def result_raw() -> None:
                times["B raw"].append(raw_result(raw, raw_store, mod, n_bytes))

            def result_orch() -> None:
                times["B orch"].append(orch_result(session, n_bytes))

            # warm up: worker imports, store registration on the workers, code paths
            for run in (shared_raw, shared_orch, result_raw, result_orch):
                run()
            for values in times.values():
                values.clear()
            puts.clear()
            for i in range(args.rounds):
                pairs = [(shared_raw, shared_orch), (result_raw, result_orch)]
                for first, second in pairs:
                    if i % 2:
                        first, second = second, first
                    first()
                    second()
                print(
                    f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()),
                    flush=True,
                )
    finally:
        raw_store.close(clear=True)
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"\n{args.mb} MiB float64 array, local HTEX site, {args.workers} workers, file "
        f"connector, {args.rounds} rounds (medians; NUMPY_MADVISE_HUGEPAGE="
        f"{os.environ.get('NUMPY_MADVISE_HUGEPAGE')})\n"
    )
    header = (
        f"{'case':<36} | {'raw s':>6} | {'orch s':>6} | {'orch/raw':>8} | "
        f"{'raw min s':>9} | {'orch min s':>10}"
    )
    print(header)
    print("-" * len(header))
    rows = [
        (f"A: 1 input shared by {args.tasks} tasks", "A raw", "A orch"),
        ("B: 1 result, send -> resolved", "B raw", "B orch"),
    ]
    for label, raw_key, orch_key in rows:
        r = statistics.median(times[raw_key])
        o = statistics.median(times[orch_key])
        print(
            f"{label:<36} | {r:>6.3f} | {o:>6.3f} | {o / r:>8.2f} | "
            f"{min(times[raw_key]):>9.3f} | {min(times[orch_key]):>10.3f}"
        )
    print(f"\nputs per orch round of case A: {puts} (must all be 1)")
    if any(n != 1 for n in puts):
        raise SystemExit("case A: the shared input was not put exactly once")


if __name__ == "__main__":
    main()
