"""Functions the tests run on real workers (imported there by module name from tests/)."""

import os
from pathlib import Path


def square(x: float) -> float:
    return x * x


def add(a: float, b: float = 0.0) -> float:
    return a + b


def fail_always(message: str) -> None:
    raise ValueError(message)


def gpu_visible() -> str | None:
    """What a GPU task sees: the accelerator its worker was pinned to."""
    return os.environ.get("CUDA_VISIBLE_DEVICES")


def fail_first(counter: str, failures: int) -> int:
    """Fail the first ``failures`` calls (counted in a file), then return the call number."""
    path = Path(counter)
    calls = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(calls))
    if calls <= failures:
        raise RuntimeError(f"call {calls} fails on purpose")
    return calls


def halve(y: float) -> float:
    return y / 2 + 1


def pinned_worker(barrier: str, parties: int, deadline_s: float = 60.0) -> tuple[int, str | None]:
    """Wait until ``parties`` workers are inside at once; report (pid, visible accelerators).

    Each call drops a file named after its pid in ``barrier`` and waits for ``parties`` files,
    so the calls that return have run concurrently on different workers.
    """
    import time

    folder = Path(barrier)
    (folder / str(os.getpid())).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    end = time.monotonic() + deadline_s
    while len(list(folder.iterdir())) < parties:
        if time.monotonic() > end:
            raise TimeoutError(f"only {len(list(folder.iterdir()))} of {parties} workers arrived")
        time.sleep(0.01)
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES")


def describe(value) -> tuple[str, int]:
    """What the worker received: the type's name and the length."""
    return type(value).__name__, len(value)


def make_bytes(n: int) -> bytes:
    return b"x" * n


def stores_seen(value: bytes, names: list[str]) -> tuple[int, dict[str, bool]]:
    """The argument's length, and which of the named ProxyStore stores this worker has used."""
    from proxystore.store import get_store

    return len(value), {name: get_store(name) is not None for name in names}


def nap(seconds: float, x: int) -> int:
    """Sleep, then return ``x`` (a task that is running when a fault hits)."""
    import time

    time.sleep(seconds)
    return x


def nap_marked(seconds: float, x: int, marker: str) -> int:
    """Write ``marker`` (the worker's pid) once running, sleep, return ``x``."""
    import os
    import time

    with open(marker, "w") as out:
        out.write(str(os.getpid()))
    time.sleep(seconds)
    return x


def nodes_given(seconds: float) -> list[str]:
    """Sleep, then name the nodes the MPI engine gave this task (``PARSL_MPI_NODELIST``)."""
    import os
    import time

    time.sleep(seconds)
    listed = os.environ.get("PARSL_MPI_NODELIST", "")
    return listed.split(",") if listed else []


def resources_seen() -> dict:
    """The resources this task's context carries to the worker."""
    from orchestrator.apps.runtime import task_context

    return dict(task_context().get("resources") or {})


def hold_until(release: str, limit_s: float = 120.0) -> list[str]:
    """Run until the file ``release`` exists (the test creates it); name the nodes given."""
    import os
    import time

    deadline = time.monotonic() + limit_s
    while not os.path.exists(release):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared")
        time.sleep(0.02)
    listed = os.environ.get("PARSL_MPI_NODELIST", "")
    return listed.split(",") if listed else []
