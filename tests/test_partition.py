"""Network partitions: a local site whose workers are another host, and the link to it cut.

The "far" site's worker pool runs in a network namespace (``tests/support/netns.py``), started
through the site's ``launcher`` (``ip netns exec <ns>``) and connecting over a veth link to
its interchange, which listens on orch's end of the link (the site's ``address``). A second
site, "near", runs as usual. In the middle of a campaign the link is cut: "far" must be marked
down (the spec: within 5 s), its tasks re-placed on "near"; once the link is back "far" comes
up again and takes tasks. Every task ends with exactly one result. The second case puts the
"far" site's Redis data store on the far side of the link too.

The first tests here are quick checks of the pieces (configuration, launcher, Redis client
timeouts); the partition cases are ``slow`` and need root and ``ip netns``.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS_DIR, read_results
from support import netns
from support.netns import FarHost, far_host

from orchestrator.config.sites import SiteConfig, load_site_file
from orchestrator.data import DataConfig
from orchestrator.dispatch import Method, MethodRegistry
from orchestrator.dispatch.journal import Journal
from orchestrator.exceptions import ConfigError, TimeoutException
from orchestrator.models import Result
from orchestrator.queues import Queues
from orchestrator.runner import open_session
from orchestrator.sites.launchers import PrefixLauncher


def nap(index: int, payload: bytes, pause: float, calls_dir: str) -> tuple[int, int]:
    """The task (on a worker): log the call, sleep ``pause`` s, return (index, payload size)."""
    with open(os.path.join(calls_dir, f"calls-{os.getpid()}.log"), "a") as log:
        log.write(f"{index}\n")
    time.sleep(pause)
    return index, len(payload)


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; seconds it took (AssertionError after ``timeout``)."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


# --- configuration and launcher --------------------------------------------------------------


def _site_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "far.yaml"
    path.write_text(text)
    return path


def test_address_and_launcher_defaults_and_forms(tmp_path: Path) -> None:
    plain = SiteConfig(name="a", kind="cpu", backend="local", capacity=1)
    assert plain.address == "127.0.0.1" and plain.launcher == []
    path = _site_file(
        tmp_path,
        "kind: cpu\nbackend: local\ncapacity: 2\naddress: 198.18.0.1\n"
        "launcher: ip netns exec 'far side'\n",
    )
    site = load_site_file(path)
    assert site.address == "198.18.0.1"
    assert site.launcher == ["ip", "netns", "exec", "far side"]
    listed = SiteConfig(
        name="b", kind="cpu", backend="local", capacity=1, address="::1", launcher=["ssh", "n7"]
    )
    assert listed.launcher == ["ssh", "n7"]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "address: node7\n",
            "address: must be an IPv4 or IPv6 address, not a host name (got 'node7'); "
            "give the IP address of this machine",
        ),
        ("launcher: [ip, '']\n", "launcher: word 2 is empty"),
        ('launcher: "ssh \'node7"\n', "launcher: cannot split it into words: No closing"),
        ("launcher: [ssh, 7]\n", "launcher[1]: must be text, got 7"),
    ],
)
def test_bad_address_or_launcher_is_one_clear_line(
    tmp_path: Path, lines: str, expected: str
) -> None:
    path = _site_file(tmp_path, "kind: cpu\nbackend: local\ncapacity: 1\n" + lines)
    with pytest.raises(ConfigError) as info:
        load_site_file(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert expected in message, message


@pytest.mark.parametrize("field", ["address: 127.0.0.1", "launcher: [ssh, node7]"])
def test_globus_site_must_not_set_address_or_launcher(tmp_path: Path, field: str) -> None:
    path = _site_file(
        tmp_path,
        "kind: cpu\nbackend: globus\ncapacity: 4\n"
        f"endpoint_id: 4b116d3c-1703-4f8f-9f6f-39921e5864df\n{field}\n",
    )
    with pytest.raises(ConfigError) as info:
        load_site_file(path)
    name = field.split(":")[0]
    assert str(info.value).startswith(f"{path}: {name}: only used by backend 'local'; remove it")
    assert "\n" not in str(info.value)


def test_prefix_launcher_runs_the_command_behind_the_quoted_prefix(tmp_path: Path) -> None:
    out = tmp_path / "argv.json"
    code = "import json, sys; open(sys.argv[1], 'w').write(json.dumps(sys.argv[2:]))"
    launcher = PrefixLauncher([sys.executable, "-c", code, str(out), "one word; $HOME"])
    script = launcher(f"{shlex.quote('a b')} c", tasks_per_node=1, nodes_per_block=1)
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == ["one word; $HOME", "a b", "c"]


def test_prefix_launcher_without_prefix_is_the_single_node_launcher() -> None:
    from parsl.launchers import SingleNodeLauncher

    command = "process_worker_pool.py --max_workers_per_node=2"
    assert PrefixLauncher([])(command, 2, 1) == SingleNodeLauncher()(command, 2, 1)
    assert PrefixLauncher(["ip", "netns", "exec", "far"])(command, 2, 1) == (
        SingleNodeLauncher()(f"ip netns exec far {command}", 2, 1)
    )


# --- Redis client timeouts ---------------------------------------------------------------------


@pytest.fixture
def stalling_redis(tmp_path: Path) -> Iterator[tuple[int, list[socket.socket]]]:
    """A port where the first connection reaches a real Redis and later ones get no answer.

    The first connection is the store's start-up probe (relayed to a throw-away
    redis-server); every later one (the store's own client) is accepted and then ignored,
    as by a server behind a dead link. Yields the port and the ignored connections.
    """
    from redis_server import REDIS_SERVER, redis_server

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/setup installs it)")
    stop = threading.Event()
    held: list[socket.socket] = []

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            dst.close()

    with redis_server(tmp_path) as real_port:
        server = socket.create_server(("127.0.0.1", 0))

        def serve() -> None:
            first = True
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                if first:
                    first = False
                    real = socket.create_connection(("127.0.0.1", real_port), timeout=10)
                    real.settimeout(None)
                    threading.Thread(target=pump, args=(conn, real), daemon=True).start()
                    threading.Thread(target=pump, args=(real, conn), daemon=True).start()
                else:
                    held.append(conn)  # read by nobody, answered never

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1], held
        finally:
            stop.set()
            server.close()
            for conn in held:
                conn.close()
            thread.join(timeout=10)


def test_put_to_a_silent_redis_fails_instead_of_hanging(monkeypatch, stalling_redis) -> None:
    import redis

    from orchestrator.data import stores

    port, ignored = stalling_redis
    monkeypatch.setattr(stores, "REDIS_TIMEOUT_S", 0.5)
    managed = stores.build_store(
        DataConfig(connector="redis", host="127.0.0.1", port=port), "orch-t-silent"
    )
    try:
        started = time.monotonic()
        with pytest.raises(redis.exceptions.TimeoutError):
            managed.store.put(b"x" * 4096)
        took = time.monotonic() - started
        print(f"put to a silent Redis failed after {took:.2f} s")
        # one connection per try, each given up after the timeout: 1 + the retries
        assert len(ignored) == 1 + stores.REDIS_RETRIES
    finally:
        managed.store.connector._redis_client.close()
        from proxystore.store import unregister_store

        unregister_store(managed.store)


# --- the partition cases -----------------------------------------------------------------------

BATCH_1 = 40
BATCH_2 = 20
PAUSE_S = 1.0
PAYLOAD = 20_000
THRESHOLD = 1024
TOPIC = "nap"


@pytest.fixture
def far() -> Iterator[FarHost]:
    reason = netns.unavailable()
    if reason is not None:
        pytest.skip(f"network partition tests: {reason}")
    with far_host() as host:
        yield host


def _payload(index: int, size: int) -> bytes:
    """A distinct object per task (so each is put in the store for its task alone)."""
    return bytes([index % 251]) * size


def _collect(queues: Queues, count: int, timeout: float) -> list[Result]:
    """The next ``count`` results; fails saying how many came when some do not in ``timeout`` s."""
    got: list[Result] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        try:
            got.append(queues.get_result(TOPIC, timeout=max(0.0, deadline - time.monotonic())))
        except TimeoutException:
            raise AssertionError(
                f"only {len(got)} of {count} results within {timeout:g} s (lost tasks?)"
            ) from None
    return got


def _inputs(result: Result) -> int:
    """Bytes that travelled with the task (its proxies instead of the objects they stand for)."""
    assert result.sizes.inputs is not None
    return result.sizes.inputs


def _events(run_dir: Path, site: str) -> list[tuple[float, str]]:
    with sqlite3.connect(run_dir / "journal.sqlite") as db:
        rows = db.execute(
            "SELECT time, state FROM events WHERE site = ? AND state IN ('site_down', 'site_up') "
            "ORDER BY time",
            (site,),
        ).fetchall()
    return [(float(t), str(s)) for t, s in rows]


def _run_partition(
    far: FarHost, tmp_path: Path, data: DataConfig | None, payload: int, extra_pids: set[int]
) -> dict[str, Any]:
    """One campaign on "far" (behind the link) and "near"; cut and restore. Returns figures."""
    run_dir = tmp_path / "run"
    calls = tmp_path / "calls"
    calls.mkdir()
    run_dir.mkdir()
    sites = [
        SiteConfig(
            name="far",
            kind="cpu",
            backend="local",
            capacity=2,
            address=far.host_address,
            launcher=far.prefix,
            data=data,
        ),
        SiteConfig(name="near", kind="cpu", backend="local", capacity=2),
    ]
    methods = MethodRegistry([Method(nap, max_retries=4)])
    figures: dict[str, Any] = {}
    submitted: list[str] = []
    revives: list[bool] = []
    with open_session(
        sites, methods, {TOPIC}, run_dir, [str(TESTS_DIR)], journal=Journal(run_dir)
    ) as session:
        q, d = session.queues, session.dispatcher
        site = next(s for s in session.sites if s.name == "far")
        real_revive = site.try_revive

        def counting_revive() -> bool:
            revived = real_revive()
            revives.append(revived)
            return revived

        site.try_revive = counting_revive  # type: ignore[method-assign]

        def submit(first: int, count: int) -> None:
            for i in range(first, first + count):
                submitted.append(
                    q.send_inputs(
                        i, _payload(i, payload), PAUSE_S, str(calls), method="nap", topic=TOPIC
                    )
                )

        submit(0, BATCH_1)
        wait_for(
            lambda: d.stats["far"].done >= 2 and d.stats["far"].running >= 1,
            180,
            "the far site finished tasks and runs more",
        )
        figures["far_in_flight_at_cut"] = d.stats["far"].in_flight
        far.cut()
        cut_at, cut_mono = time.time(), time.monotonic()
        wait_for(lambda: d.stats["far"].down is not None, 20, "the far site marked down")
        figures["cut_to_down_s"] = round(time.monotonic() - cut_mono, 2)
        figures["down_reason"] = d.stats["far"].down

        if data is not None:  # orch's put into the store behind the cut link fails, bounded
            import redis

            store = session.data.store_for("far").store
            started = time.monotonic()
            with pytest.raises((redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
                store.put(b"y" * PAYLOAD)
            figures["put_while_cut_fails_after_s"] = round(time.monotonic() - started, 2)

        first = _collect(q, BATCH_1, 180)
        assert all(r.success for r in first), [r.failure_info for r in first if not r.success]
        moved = [r for r in first if any(m.site == "far" for m in r.moves)]
        assert moved, "no task moved off the far site"
        assert all(r.site == "near" for r in moved), [(r.site, r.moves) for r in moved]
        figures["moved_far_to_near"] = len(moved)
        figures["batch_1_on"] = dict(Counter(r.site for r in first))

        # Behind the cut link the far site stays down: a revive attempt fails meanwhile.
        wait_for(lambda: False in revives, 180, "a revive attempt while the link is cut")
        assert d.stats["far"].down is not None and site.is_down
        figures["revives_failed_while_cut"] = revives.count(False)

        far.restore()
        restore_mono = time.monotonic()
        wait_for(lambda: d.stats["far"].down is None, 240, "the far site up after the restore")
        figures["restore_to_up_s"] = round(time.monotonic() - restore_mono, 2)

        submit(BATCH_1, BATCH_2)
        second = _collect(q, BATCH_2, 180)
        assert all(r.success for r in second), [r.failure_info for r in second if not r.success]
        on_far = [r for r in second if r.site == "far"]
        assert on_far, "the far site took no task after it came back"
        figures["batch_2_on"] = dict(Counter(r.site for r in second))
        for r in first + second:
            index, size = r.value
            assert size == payload and r.args is not None and r.args[0] == index
        if data is not None:  # the far site's arguments went through its Redis, both times
            far_first = [r for r in first if r.site == "far"]
            assert far_first and all(_inputs(r) < payload for r in far_first)
            assert all(_inputs(r) < payload for r in on_far)
            assert all(_inputs(r) > payload for r in first + second if r.site == "near")
            figures["store_puts"] = session.data.puts
        assert session.journal is not None
        session.journal.flush()
        events = _events(run_dir, "far")
        states = [s for _, s in events]
        assert states[:2] == ["site_down", "site_up"], events
        figures["cut_to_journal_site_down_s"] = round(events[0][0] - cut_at, 2)

    # Everything the far site started in the namespace ended with the session.
    wait_for(
        lambda: not set(far.pids()) - extra_pids, 30, "no worker process left in the namespace"
    )
    records = read_results(run_dir, TOPIC)
    ids = [r["task_id"] for r in records]
    assert len(ids) == len(set(ids)) == len(submitted) == BATCH_1 + BATCH_2
    assert set(ids) == set(submitted)
    runs = Counter(int(line) for log in calls.iterdir() for line in log.read_text().split() if line)
    assert set(runs) == set(range(BATCH_1 + BATCH_2))
    figures["tasks"] = len(ids)
    figures["executions"] = sum(runs.values())
    figures["ran_more_than_once"] = sum(1 for n in runs.values() if n > 1)
    return figures


def _report(name: str, figures: dict[str, Any], record_property: Any) -> None:
    print(f"\n{name}: " + json.dumps(figures))
    for key, value in figures.items():
        record_property(key, value)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cut_link_moves_tasks_and_the_site_comes_back(far, tmp_path, record_property) -> None:
    figures = _run_partition(far, tmp_path, data=None, payload=0, extra_pids=set())
    _report("partition", figures, record_property)


@pytest.fixture
def far_redis(far: FarHost, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """redis-server in the namespace, on the far address; yields (port, pid)."""
    from redis_server import REDIS_SERVER, until_ready

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/setup installs it)")
    port = 6379  # the namespace has its own ports
    workdir = tmp_path / "redis"
    workdir.mkdir()
    argv = [REDIS_SERVER, "--bind", far.far_address, "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"]
    argv += ["--protected-mode", "no"]  # reached over the link; only this host can reach it
    proc = far.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with until_ready(proc):
        yield port, proc.pid


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cut_link_with_the_data_store_behind_it(far, far_redis, tmp_path, record_property) -> None:
    port, redis_pid = far_redis
    data = DataConfig(connector="redis", host=far.far_address, port=port, threshold_bytes=THRESHOLD)
    figures = _run_partition(far, tmp_path, data=data, payload=PAYLOAD, extra_pids={redis_pid})
    _report("partition with Redis behind the link", figures, record_property)
