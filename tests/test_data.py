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


@pytest.fixture(params=["file", "redis"])
def plane(request, tmp_path) -> Any:
    """A plane with one site 'a' on a File or a Redis store (threshold 100 kB)."""
    if request.param == "file":
        config = file_config(tmp_path / "store")
    else:
        config = redis_config(
            request.getfixturevalue("redis_db").connection_pool.connection_kwargs["port"]
        )
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
