"""Moving large arguments and results by ProxyStore reference (real File and Redis stores)."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from proxystore.proxy import Proxy, get_factory, is_resolved
from proxystore.store import get_store
from pydantic import ValidationError
from redis_server import REDIS_SERVER, redis_server

from orchestrator.apps.proxies import (
    PrefixedRedisConnector,
    ProxyResolveFailed,
    is_proxy,
    maybe_proxy_result,
    resolve_arguments,
)
from orchestrator.apps.runtime import run_task
from orchestrator.data import DataConfig, DataPlane, DataStoreError

REPO = Path(__file__).resolve().parent.parent
MB = 1_000_000


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory) -> Any:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian package `redis-server`)")
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield port


@pytest.fixture
def redis_db(redis_port) -> Any:
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def file_config(base: Path, threshold: int = 100_000) -> DataConfig:
    return DataConfig(connector="file", path=base, threshold_bytes=threshold)


def redis_config(port: int, threshold: int = 100_000) -> DataConfig:
    return DataConfig(connector="redis", host="127.0.0.1", port=port, threshold_bytes=threshold)


def multi_config(base: Path, port: int, threshold: int = 100_000) -> DataConfig:
    """Objects up to 1 MB in Redis, larger ones in files."""
    return DataConfig.model_validate(
        {
            "connector": "multi",
            "connectors": [
                {"connector": "redis", "host": "127.0.0.1", "port": port, "max_bytes": MB},
                {"connector": "file", "path": str(base)},
            ],
            "threshold_bytes": threshold,
        }
    )


def stored(managed) -> dict[str, int]:
    """How many objects a managed store holds now, per backend (files, Redis keys)."""
    counts = {"file": 0, "redis": 0}
    for directory in managed.owned_dirs:
        if directory.exists():
            counts["file"] += sum(1 for f in directory.iterdir() if not f.name.endswith(".ready"))
    connector = managed.store.connector
    members = [c for c, _ in getattr(connector, "connectors", {}).values()] or [connector]
    for member in members:
        if isinstance(member, PrefixedRedisConnector):
            counts["redis"] += len(member.keys())
    return counts


@pytest.fixture(params=["file", "redis", "multi"])
def plane(request, tmp_path) -> Any:
    """A plane with one site 'a' on a File, a Redis or a multi store (threshold 100 kB)."""
    if request.param == "file":
        config = file_config(tmp_path / "store")
    else:
        port = request.getfixturevalue("redis_db").connection_pool.connection_kwargs["port"]
        if request.param == "redis":
            config = redis_config(port)
        else:
            config = multi_config(tmp_path / "store", port)
    with DataPlane({"a": config}) as data_plane:
        yield data_plane


def worker_call(fn, args, kwargs, context) -> dict:
    """What a worker will do once runtime is wired: resolve, call, proxy the result."""

    def body(*a: Any, **k: Any) -> Any:
        a2, k2 = resolve_arguments(a, k)
        return maybe_proxy_result(fn(*a2, **k2), context)

    return run_task(body, args, kwargs, context)


# --- DataConfig ---------------------------------------------------------------------------


def test_config_valid_and_defaults(tmp_path):
    f = DataConfig(connector="file", path=tmp_path)
    assert f.threshold_bytes == 1_000_000
    r = DataConfig.model_validate({"connector": "redis", "host": "h", "port": 6379})
    assert r.store_key() == ("redis", "h", 6379)
    assert DataConfig.model_fields["threshold_bytes"].description


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"connector": "file"}, "data.path: required by connector 'file'"),
        ({"connector": "redis", "host": "h"}, "data.port: required by connector 'redis'"),
        (
            {"connector": "redis", "host": "h", "port": 1, "path": "/x"},
            "data.path: not used by connector 'redis'",
        ),
        ({"connector": "file", "path": "/x", "port": 1}, "data.port: not used by connector"),
        ({"connector": "ftp"}, "literal_error"),
        ({"connector": "file", "path": "/x", "thresh": 1}, "extra_forbidden"),
        ({"connector": "file", "path": "/x", "threshold_bytes": 20 * MB}, "less_than_equal"),
        ({"connector": "redis", "host": "h", "port": 70000}, "less_than_equal"),
    ],
)
def test_config_errors(data, expected):
    with pytest.raises(ValidationError) as info:
        DataConfig.model_validate(data)
    text = str(info.value) + " ".join(e["type"] for e in info.value.errors())
    assert expected in text


def test_unreachable_redis_is_a_clear_error(tmp_path):
    from redis_server import free_port

    with pytest.raises(DataStoreError, match="does not answer"):
        DataPlane({"a": redis_config(free_port())})


# --- thresholds ---------------------------------------------------------------------------


def test_arguments_below_threshold_by_value_above_by_proxy(plane):
    small, big = np.ones(1000), np.ones(50_000)  # 8 kB, 400 kB
    args, kwargs, n = plane.proxy_arguments((small, 3, "x"), {"big": big, "s": small}, "a")
    assert n == 1 and plane.puts == 1
    assert args[0] is small and args[1:] == (3, "x") and kwargs["s"] is small
    assert is_proxy(kwargs["big"]) and not is_resolved(kwargs["big"])
    assert len(pickle.dumps(kwargs["big"])) < 2000
    copy = pickle.loads(pickle.dumps(kwargs["big"]))
    (resolved,), _ = resolve_arguments((copy,), {})
    assert isinstance(resolved, np.ndarray) and not is_proxy(resolved)
    np.testing.assert_array_equal(resolved, big)


def test_site_without_data_section_passes_everything(tmp_path):
    with DataPlane({"a": file_config(tmp_path), "plain": None}) as p:
        big = np.ones(100_000)
        args, kwargs, n = p.proxy_arguments((big,), {}, "plain")
        assert n == 0 and args[0] is big and p.result_context("plain") == {}
        assert p.uses_proxies("a") and not p.uses_proxies("plain")


def test_result_below_threshold_unchanged_above_proxied(plane):
    context = plane.result_context("a")
    pickle.dumps(context)  # it travels inside the packed TaskWrapper
    small = {"energy": 1.5, "forces": np.zeros(10)}
    assert maybe_proxy_result(small, context) is small
    assert maybe_proxy_result(None, context) is None
    assert maybe_proxy_result(b"x" * 1000, context) == b"x" * 1000
    big = np.arange(100_000)
    proxy = maybe_proxy_result(big, context)
    assert is_proxy(proxy)
    factory = get_factory(proxy)
    store = plane.store_for("a").store
    assert factory.evict and store.exists(factory.key)
    np.testing.assert_array_equal(plane.resolve(pickle.loads(pickle.dumps(proxy))), big)
    assert not store.exists(factory.key)  # single use: gone once orch resolved it
    assert maybe_proxy_result(big, {}) is big  # a site without data settings


# --- shared inputs ------------------------------------------------------------------------


def test_shared_input_put_once(tmp_path):
    sites = {"a": file_config(tmp_path / "s"), "b": file_config(tmp_path / "s", threshold=10)}
    with DataPlane(sites) as p:
        assert len(p.stores) == 1  # same connector settings: one store
        array = np.random.default_rng(0).random(10 * MB // 8)  # 10 MB
        sent = [p.proxy_arguments((array, i), {}, "a" if i % 2 else "b") for i in range(8)]
        assert p.puts == 1
        proxies = [args[0] for args, _, n in sent]
        assert all(pr is proxies[0] for pr in proxies) and all(n == 1 for *_, n in sent)
        assert p.share(array, "a") is proxies[0] and p.puts == 1
        # explicit share of a small, non weak-referable object: put once too
        blob = b"abc" * 10
        shared = p.share(blob, "a")
        assert p.share(blob, "b") is shared and p.puts == 2
        args, _, n = p.proxy_arguments((blob,), {}, "a")
        assert args[0] is shared and n == 1
        assert bytes(pickle.loads(pickle.dumps(shared))) == blob
        # a different object with equal content is a different input
        p.proxy_arguments((array.copy(),), {}, "a")
        assert p.puts == 3


def test_release_evicts_shared_input_now(tmp_path):
    with DataPlane({"a": file_config(tmp_path)}) as p:
        array = np.ones(100_000)
        proxy = p.share(array, "a")
        assert p.release(array) == 1
        assert not p.store_for("a").store.exists(get_factory(proxy).key)
        assert p.share(array, "a") is not proxy and p.puts == 2


# --- worker in another process ------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import hashlib, pickle, sys
    import numpy as np
    from orchestrator.apps.proxies import maybe_proxy_result, resolve_arguments
    from orchestrator.apps.runtime import run_task

    context, args = pickle.load(sys.stdin.buffer)

    def make(seed, n, shared):
        data = np.random.default_rng(seed).bytes(n)
        return {"data": data, "shared_sum": float(shared.sum()),
                "sha": hashlib.sha256(data).hexdigest()}

    def body(*a, **k):
        a, k = resolve_arguments(a, k)
        return maybe_proxy_result(make(*a, **k), context)

    record = run_task(body, args, {}, context)
    sys.stdout.buffer.write(pickle.dumps(record))
    """
)


def run_child(context: dict, args: tuple) -> bytes:
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=pickle.dumps((context, args)),
        capture_output=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done.stdout


def test_large_result_from_another_process_travels_by_proxy(plane):
    shared = np.ones(200_000)
    args, _, n = plane.proxy_arguments((7, 50 * MB, shared), {}, "a")
    assert n == 1
    returned = run_child(plane.result_context("a"), args)
    assert len(returned) < 10_000  # the 50 MB never went through the return channel
    record = pickle.loads(returned)
    assert record["ok"], record.get("failure")
    value = record["value"]
    assert is_proxy(value) and not is_resolved(value)
    assert plane.adopt(value)
    result = plane.resolve(value)
    assert len(result["data"]) == 50 * MB
    assert result["data"] == np.random.default_rng(7).bytes(50 * MB)
    assert hashlib.sha256(result["data"]).hexdigest() == result["sha"]
    assert result["shared_sum"] == 200_000.0
    store = plane.store_for("a").store
    assert not store.exists(get_factory(value).key)  # evicted once resolved
    # the worker used (and registered) the store but never closed it: orch's side still works
    assert store.exists(get_factory(args[2]).key)
    key = store.put("still works")
    assert store.get(key) == "still works"


def test_worker_side_use_in_process_never_closes_the_store(tmp_path):
    with DataPlane({"a": file_config(tmp_path / "s", threshold=1000)}) as p:
        context = p.result_context("a")
        managed = p.store_for("a")
        args, _, _ = p.proxy_arguments((np.ones(10_000),), {}, "a")
        record = worker_call(lambda x: x * 2, args, {}, context)
        assert record["ok"] and is_proxy(record["value"])
        assert get_store(managed.name) is managed.store  # the worker reused orch's store
        np.testing.assert_array_equal(p.resolve(record["value"]), np.full(10_000, 2.0))
        assert managed.owned_dir is not None and managed.owned_dir.is_dir()
        assert managed.store.exists(get_factory(args[0]).key)


# --- resolve failures ---------------------------------------------------------------------


def test_resolve_error_becomes_plain_picklable_exception(plane):
    array = np.ones(100_000)
    proxy = plane.share(array, "a")
    copy = pickle.loads(pickle.dumps(proxy))  # as a worker receives it
    plane.release(array)  # the object is gone before the task runs
    record = worker_call(lambda x: float(x.sum()), (copy,), {}, plane.result_context("a"))
    assert not record["ok"]
    failure = record["failure"]
    assert failure["reason"] == "proxy_resolve"
    assert failure["exception_type"] == "orchestrator.apps.proxies.ProxyResolveFailed"
    assert "argument 0" in failure["message"] and "is not in store" in failure["message"]
    assert failure["details"]["store"] == plane.store_for("a").name
    pickle.loads(pickle.dumps(record))

    with pytest.raises(ProxyResolveFailed) as info:
        resolve_arguments((), {"x": pickle.loads(pickle.dumps(proxy))})
    error = info.value
    assert error.reason == "proxy_resolve" and "argument 'x'" in str(error)
    assert error.__cause__ is None and error.__suppress_context__
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is ProxyResolveFailed and str(again) == str(error)
    assert again.details == error.details and again.reason == "proxy_resolve"

    with pytest.raises(ProxyResolveFailed, match="cannot resolve a result"):
        plane.resolve(pickle.loads(pickle.dumps(proxy)))


def test_result_put_failure_is_plain_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with DataPlane({"a": file_config(tmp_path / "s", threshold=1000)}) as p:
        context = p.result_context("a")
    settings = context["data"]["store"]  # as seen by a worker where the path is unusable
    settings["name"] += "-elsewhere"
    settings["connector"]["options"]["store_dir"] = str(blocker / "sub")
    record = worker_call(lambda: np.ones(10_000), (), {}, context)
    assert not record["ok"] and record["failure"]["reason"] == "proxy_put"
    assert "cannot open the site's data store" in record["failure"]["message"]
    assert maybe_proxy_result(3, context) == 3  # small results never touch the store


# --- clean-up at the campaign's end -------------------------------------------------------


def test_close_removes_everything_file(tmp_path):
    base = tmp_path / "store"
    base.mkdir()
    (base / "someone-elses-file").write_text("keep me")
    p = DataPlane({"a": file_config(base), "b": file_config(base, threshold=10)})
    owned = p.store_for("a").owned_dir
    assert owned is not None and owned.parent == base
    context = p.result_context("a")
    p.proxy_arguments((np.ones(100_000),), {}, "a")
    p.share([1, 2, 3], "b")
    lost = maybe_proxy_result(np.ones(100_000), context)  # result of a task never collected
    adopted = maybe_proxy_result(np.ones(100_000), context)
    p.adopt(adopted)
    assert len([f for f in owned.iterdir() if not f.name.endswith(".ready")]) == 4
    del lost
    p.close()
    p.close()  # idempotent
    assert not owned.exists()
    assert sorted(f.name for f in base.iterdir()) == ["someone-elses-file"]
    assert get_store(p.stores[0].name) is None  # unregistered
    with pytest.raises(DataStoreError, match="closed"):
        p.share(1, "a")


def test_close_removes_everything_redis(redis_db):
    port = redis_db.connection_pool.connection_kwargs["port"]
    redis_db.set("not-orchs", b"keep me")
    p = DataPlane({"a": redis_config(port), "b": redis_config(port, threshold=10)})
    assert len(p.stores) == 1
    context = p.result_context("a")
    p.proxy_arguments((np.ones(100_000),), {"k": b"z" * 200_000}, "a")
    p.share({"model": "weights"}, "b")
    maybe_proxy_result(np.ones(100_000), context)  # lost result: never adopted nor resolved
    p.adopt(maybe_proxy_result(np.ones(100_000), context))
    prefix = p.stores[0].name.encode() + b":"
    keys = list(redis_db.scan_iter())
    assert len(keys) == 6 and sum(k.startswith(prefix) for k in keys) == 5
    p.close()
    assert [k for k in redis_db.scan_iter() if k.startswith(prefix)] == []
    assert redis_db.dbsize() == 1 and redis_db.get("not-orchs") == b"keep me"


def test_stores_are_per_campaign(tmp_path):
    with (
        DataPlane({"a": file_config(tmp_path)}) as one,
        DataPlane({"a": file_config(tmp_path)}) as two,
    ):
        assert one.store_for("a").name != two.store_for("a").name
        proxy = one.share(np.ones(10), "a")
        two.close()
        assert isinstance(proxy, Proxy) and float(one.resolve(proxy).sum()) == 10.0


# --- more connectors: config ---------------------------------------------------------------

EP_A = "3bfb82cd-04d4-40a7-b8ce-2f03f9ce37ac"
EP_B = "dbd45418-9bb1-46ae-b4fc-d72b8acda768"


def two_collections(**first: Any) -> list[dict]:
    return [
        {"uuid": EP_A, "endpoint_path": "/p/orch", "local_path": "/lus/p/orch",
         "host_regex": "login.*", **first},
        {"uuid": EP_B, "endpoint_path": "/~/orch", "local_path": "/home/me/orch",
         "host_regex": "laptop"},
    ]  # fmt: skip


def test_config_more_connectors_valid(tmp_path):
    endpoint = DataConfig.model_validate(
        {"connector": "endpoint", "endpoint": EP_A, "peers": [EP_B], "relay": "ws://h:8700"}
    )
    assert endpoint.endpoint_group() == [EP_A, EP_B]
    assert endpoint.store_key() == ("endpoint", "ws://h:8700")
    other = DataConfig(connector="endpoint", endpoint=EP_B, relay="ws://h:8700")
    assert other.store_key() == endpoint.store_key()  # same relay: one store, peered
    multi = multi_config(tmp_path, 6379)
    assert multi.store_key()[0] == "multi" and multi.connectors is not None
    assert [m.max_bytes for m in multi.connectors] == [MB, None]
    globus = DataConfig.model_validate({"connector": "globus", "collections": two_collections()})
    assert globus.collections is not None and len(globus.collections) == 2


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"connector": "endpoint"}, "data.endpoint: required by connector 'endpoint'"),
        ({"connector": "endpoint", "endpoint": "not-a-uuid"}, "uuid_parsing"),
        (
            {"connector": "endpoint", "endpoint": EP_A, "relay": "http://h:1"},
            "data.relay: 'http://h:1' is not a ws:// or wss:// address",
        ),
        ({"connector": "endpoint", "endpoint": EP_A, "path": "/x"}, "data.path: not used"),
        ({"connector": "file", "path": "/x", "peers": [EP_A]}, "data.peers: not used"),
        ({"connector": "multi"}, "data.connectors: required by connector 'multi'"),
        (
            {"connector": "multi", "connectors": [{"connector": "file", "path": "/x"}]},
            "data.connectors: has 1 store(s)",
        ),
        (
            {"connector": "multi", "connectors": [
                {"connector": "redis", "host": "h", "port": 1},
                {"connector": "file", "path": "/x"}]},
            "data.connectors[0].max_bytes: required on every store but the last",
        ),
        (
            {"connector": "multi", "connectors": [
                {"connector": "redis", "host": "h", "port": 1, "max_bytes": 5},
                {"connector": "file", "path": "/x", "max_bytes": 9}]},
            "data.connectors[1].max_bytes: set on the last store",
        ),
        (
            {"connector": "multi", "connectors": [
                {"connector": "redis", "host": "h", "max_bytes": 5},
                {"connector": "file", "path": "/x"}]},
            "data.connectors[0].port: required by connector 'redis'",
        ),
        (
            {"connector": "multi", "connectors": [
                {"connector": "file", "path": "/x", "max_bytes": 9},
                {"connector": "redis", "host": "h", "port": 1, "max_bytes": 5},
                {"connector": "file", "path": "/y"}]},
            "data.connectors[1].max_bytes: 5 is not larger than the previous store's 9",
        ),
        (
            {"connector": "multi", "connectors": [
                {"connector": "file", "path": "/x", "max_bytes": 9},
                {"connector": "file", "path": "/x"}]},
            "data.connectors[1]: is the same store as data.connectors[0]",
        ),
        (
            {"connector": "multi", "connectors": [
                {"connector": "endpoint", "endpoint": EP_A, "max_bytes": 9},
                {"connector": "file", "path": "/x"}]},
            "literal_error",
        ),
        ({"connector": "globus"}, "data.collections: required by connector 'globus'"),
        (
            {"connector": "globus", "collections": two_collections()[:1]},
            "data.collections: has 1 collection(s)",
        ),
        (
            {"connector": "globus", "collections": two_collections(uuid=EP_B)},
            f"data.collections[1].uuid: {EP_B} is listed twice",
        ),
        ({"connector": "globus", "collections": two_collections(local_path="")}, "too_short"),
    ],
)  # fmt: skip
def test_config_more_connectors_errors(data, expected):
    with pytest.raises(ValidationError) as info:
        DataConfig.model_validate(data)
    text = str(info.value) + " ".join(e["type"] for e in info.value.errors())
    assert expected in text


def test_site_file_errors_are_one_line(tmp_path):
    from orchestrator.config.sites import load_site_file
    from orchestrator.exceptions import OrchError

    site = tmp_path / "s.yaml"
    site.write_text(
        "kind: cpu\nbackend: local\ncapacity: 1\n"
        "data:\n  connector: multi\n  connectors:\n"
        "    - {connector: redis, host: h, port: 1}\n    - {connector: file, path: /x}\n"
    )
    with pytest.raises(OrchError) as info:
        load_site_file(site)
    message = str(info.value)
    assert "\n" not in message and str(site) in message
    assert "data.connectors[0].max_bytes: required on every store but the last" in message


# --- multi connector ---------------------------------------------------------------------


def test_multi_puts_by_size_and_close_removes_both(tmp_path, redis_db):
    port = redis_db.connection_pool.connection_kwargs["port"]
    redis_db.set("not-orchs", b"keep me")
    base = tmp_path / "store"
    p = DataPlane({"a": multi_config(base, port)})
    managed = p.store_for("a")
    assert stored(managed) == {"file": 0, "redis": 0}
    small, large = np.ones(50_000), np.ones(500_000)  # 400 kB, 4 MB: both above 100 kB
    args, _, n = p.proxy_arguments((small, large), {}, "a")
    assert n == 2 and stored(managed) == {"file": 1, "redis": 1}
    keys = [get_factory(a).key for a in args]
    assert [k.connector_name for k in keys] == ["0-redis", "1-file"]
    copies = [pickle.loads(pickle.dumps(a)) for a in args]
    np.testing.assert_array_equal(run_child_resolve(copies[0]), small)
    np.testing.assert_array_equal(run_child_resolve(copies[1]), large)
    p.close()
    assert stored(managed) == {"file": 0, "redis": 0}
    assert not (base / managed.name).exists() and list(base.iterdir()) == []
    assert redis_db.dbsize() == 1 and redis_db.get("not-orchs") == b"keep me"


def run_child_resolve(proxy: Proxy) -> Any:
    """Resolve ``proxy`` in a fresh process (no store registered there), as a worker does."""
    code = (
        "import pickle, sys\n"
        "from orchestrator.apps.proxies import resolve_arguments\n"
        "(value,), _ = resolve_arguments((pickle.load(sys.stdin.buffer),), {})\n"
        "sys.stdout.buffer.write(pickle.dumps(value))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps(proxy),
        capture_output=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return pickle.loads(done.stdout)


def test_multi_unreachable_member_is_a_clear_error(tmp_path):
    from redis_server import free_port

    base = tmp_path / "store"
    with pytest.raises(DataStoreError, match=r"does not answer.*data\.connectors\[0\]\.host"):
        DataPlane({"a": multi_config(base, free_port())})
    assert not base.exists() or list(base.iterdir()) == []


# --- per-call threshold and per-task eviction ----------------------------------------------


def test_threshold_override_per_call(plane):
    managed = plane.store_for("a")
    medium = np.ones(5_000)  # 40 kB: under the site's 100 kB
    args, _, n = plane.proxy_arguments((medium,), {}, "a")
    assert n == 0 and args[0] is medium
    args, _, n = plane.proxy_arguments((medium,), {}, "a", threshold=1_000)
    assert n == 1 and is_proxy(args[0]) and sum(stored(managed).values()) == 1
    big = np.ones(50_000)  # 400 kB: over the site's threshold, under the method's
    args, _, n = plane.proxy_arguments((big,), {}, "a", threshold=10 * MB)
    assert n == 0 and args[0] is big and sum(stored(managed).values()) == 1
    # an object already proxied is reused whatever the threshold of the call
    args, _, n = plane.proxy_arguments((medium,), {}, "a", threshold=10 * MB)
    assert n == 1 and is_proxy(args[0])
    with pytest.raises(ValueError, match="threshold"):
        plane.proxy_arguments((medium,), {}, "a", threshold=-1)


def test_task_done_evicts_what_only_that_task_used(plane):
    managed = plane.store_for("a")
    model = np.ones(100_000)
    shared = plane.share(model, "a")
    own1, own2 = np.full(100_000, 1.0), b"y" * 300_000  # weak-referable and pinned
    reused = np.full(100_000, 3.0)
    args1, kwargs1, n1 = plane.proxy_arguments(
        (own1, model, reused), {"b": own2}, "a", task_id="t1"
    )
    args2, _, n2 = plane.proxy_arguments((reused, model, 7), {}, "a", task_id="t2")
    assert n1 == 4 and n2 == 2 and args2[0] is args1[2] and args2[1] is shared
    assert sum(stored(managed).values()) == 4  # model, own1, own2, reused
    assert plane.task_done("t1") == 2  # own1 and own2; `reused` is now shared with t2
    assert sum(stored(managed).values()) == 2
    assert not managed.store.exists(get_factory(args1[0]).key)
    assert not managed.store.exists(get_factory(kwargs1["b"]).key)
    assert managed.store.exists(get_factory(shared).key)
    assert managed.store.exists(get_factory(args1[2]).key)
    assert plane.task_done("t1") == 0 and plane.task_done("never-sent") == 0
    assert plane.task_done("t2") == 0  # it put nothing of its own
    assert sum(stored(managed).values()) == 2
    # the evicted object, sent again, is put again (not the dead proxy)
    again, _, _ = plane.proxy_arguments((own1,), {}, "a", task_id="t3")
    assert again[0] is not args1[0] and managed.store.exists(get_factory(again[0]).key)
    del own1  # the object may die before its task ends: still evicted
    assert plane.task_done("t3") == 1 and sum(stored(managed).values()) == 2


def test_task_done_spares_objects_shared_later(tmp_path):
    with DataPlane({"a": file_config(tmp_path)}) as p:
        managed = p.store_for("a")
        weights = np.ones(100_000)
        args, _, _ = p.proxy_arguments((weights,), {}, "a", task_id="t1")
        assert p.share(weights, "a") is args[0]  # shared after the fact
        assert p.task_done("t1") == 0 and managed.store.exists(get_factory(args[0]).key)
        # released by hand before the task ended: not counted twice
        blob = np.ones(100_000)
        args, _, _ = p.proxy_arguments((blob,), {}, "a", task_id="t2")
        assert p.release(blob) == 1 and p.task_done("t2") == 0


# --- endpoint and globus connectors at the boundary ------------------------------------------


def test_endpoint_without_a_local_endpoint_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYSTORE_HOME", str(tmp_path / "empty-home"))
    config = DataConfig(connector="endpoint", endpoint=EP_A, peers=[EP_B])
    with pytest.raises(DataStoreError) as info:
        DataPlane({"a": config})
    message = str(info.value)
    assert "\n" not in message and EP_A in message and EP_B in message
    assert "no endpoint of" in message and "empty-home" in message


def test_endpoint_relay_not_answering_is_a_clear_error(tmp_path, monkeypatch):
    from redis_server import free_port

    monkeypatch.setenv("PROXYSTORE_HOME", str(tmp_path / "empty-home"))
    relay = f"ws://127.0.0.1:{free_port()}"
    config = DataConfig(connector="endpoint", endpoint=EP_A, relay=relay)
    with pytest.raises(DataStoreError, match=f"relay {relay} does not answer"):
        DataPlane({"a": config})


def globus_config(host_regex: str) -> DataConfig:
    return DataConfig.model_validate(
        {"connector": "globus", "collections": two_collections(host_regex=host_regex)}
    )


def test_globus_connector_arguments_are_campaign_scoped():
    from proxystore.connectors.globus import GlobusEndpoints

    from orchestrator.data.stores import globus_endpoints

    config = globus_config("login.*")
    assert config.collections is not None
    endpoints = globus_endpoints(config.collections, "orch-c1-globus-0")
    parsed = GlobusEndpoints.from_dict(endpoints)  # what GlobusConnector accepts
    assert len(parsed) == 2
    first = parsed[EP_A]
    assert first.endpoint_path == "/p/orch/orch-c1-globus-0"
    assert first.local_path == "/lus/p/orch/orch-c1-globus-0"
    assert parsed.get_by_host("login03").uuid == EP_A
    assert parsed.get_by_host("laptop").uuid == EP_B


def test_globus_without_a_local_collection_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PROXYSTORE_HOME", str(tmp_path / "home"))
    with pytest.raises(DataStoreError, match="no `data.collections` entry has a host_regex"):
        DataPlane({"a": globus_config("no-such-host-[0-9]+")})


def test_globus_not_logged_in_is_a_clear_error(tmp_path, monkeypatch):
    from proxystore.utils.environment import hostname

    monkeypatch.setenv("PROXYSTORE_HOME", str(tmp_path / "home"))  # no tokens there
    monkeypatch.delenv("PROXYSTORE_GLOBUS_CLIENT_ID", raising=False)
    monkeypatch.delenv("PROXYSTORE_GLOBUS_CLIENT_SECRET", raising=False)
    with pytest.raises(DataStoreError) as info:
        DataPlane({"a": globus_config(hostname())})
    message = str(info.value)
    assert "not logged in to Globus" in message and "proxystore-globus-auth login" in message
    assert "\n" not in message


@pytest.mark.slow
def test_globus_unreachable_is_a_clear_error(tmp_path, monkeypatch):
    """Client credentials make the SDK ask Globus Auth for a token: offline it cannot."""
    from proxystore.utils.environment import hostname

    monkeypatch.setenv("PROXYSTORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PROXYSTORE_GLOBUS_CLIENT_ID", EP_A)
    monkeypatch.setenv("PROXYSTORE_GLOBUS_CLIENT_SECRET", "not-a-secret")
    with pytest.raises(DataStoreError) as info:
        DataPlane({"a": globus_config(hostname())})
    message = str(info.value)
    # offline: Globus does not answer; online: the made-up client is refused
    assert "Globus does not answer" in message or "not logged in to Globus" in message
    assert "\n" not in message
