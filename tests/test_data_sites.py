"""The data plane on the real engine: thresholds, large results, sharing, errors, cleanup."""

from __future__ import annotations

import pytest
import redis
from apps_for_tests import describe, make_bytes
from conftest import TESTS_DIR
from data_apps import backends_used
from proxystore.proxy import get_factory
from redis_server import REDIS_SERVER, redis_server

from orchestrator.apps.proxies import is_proxy
from orchestrator.config.sites import SiteConfig
from orchestrator.data import DataConfig
from orchestrator.dispatch import Method, MethodRegistry
from orchestrator.runner import open_session

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

THRESHOLD = 10_000
METHODS = MethodRegistry([Method(describe), Method(make_bytes)])


def site(store_root):
    data = DataConfig(connector="file", path=store_root, threshold_bytes=THRESHOLD)
    return SiteConfig(name="cpu", kind="cpu", backend="local", capacity=2, data=data)


def stored_files(root):
    return [p for p in root.rglob("*") if p.is_file()]


def stored_objects(root):
    """Objects in file stores under ``root`` (not counting FileConnector's ready markers)."""
    return [p for p in stored_files(root) if not p.name.endswith(".ready")]


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    run_dir = tmp_path_factory.mktemp("run")
    with open_session([site(root)], METHODS, {"d"}, run_dir, [str(TESTS_DIR)]) as s:
        yield s
    assert stored_files(root) == []  # the campaign's end removes everything orch put


def run(session, *args, method):
    session.queues.send_inputs(*args, method=method, topic="d")
    return session.queues.get_result("d", timeout=120)


def test_argument_threshold(session):
    before = session.data.puts
    small = run(session, b"s" * 100, method="describe")
    assert small.value == ("bytes", 100) and session.data.puts == before
    large = run(session, b"l" * 100_000, method="describe")
    assert large.value == ("bytes", 100_000)  # the worker got the bytes, resolved
    assert session.data.puts == before + 1
    assert large.sizes.inputs < 10_000  # only the proxy travelled with the task


def test_result_threshold(session):
    small = run(session, 100, method="make_bytes")
    assert not is_proxy(small.value) and small.value == b"x" * 100
    large = run(session, 100_000, method="make_bytes")
    assert is_proxy(large.value) and large.value == b"x" * 100_000


def test_50_mb_result_never_enters_the_task_channel(session):
    result = run(session, 50 * 2**20, method="make_bytes")
    assert result.success and is_proxy(result.value)
    assert result.sizes.value < 10_000  # the packed result held only a proxy
    assert len(result.value) == 50 * 2**20  # resolved here, from the site's store


def test_shared_input_is_put_once(session):
    shared = b"m" * 200_000
    before = session.data.puts
    for _ in range(8):
        session.queues.send_inputs(shared, method="describe", topic="d")
    values = [session.queues.get_result("d", timeout=120).value for _ in range(8)]
    assert values == [("bytes", 200_000)] * 8
    assert session.data.puts == before + 1


def test_resolve_error_is_a_failed_result_and_the_site_keeps_working(session):
    payload = b"gone" * 10_000
    proxy = session.data.share(payload, "cpu")
    session.data.release(payload)  # evicted: the worker will not find it
    failed = run(session, proxy, method="describe")
    assert failed.success is False
    assert failed.failure_info.reason == "proxy_resolve"
    assert failed.failure_info.where == "task"
    after = run(session, b"ok", method="describe")
    assert after.success and after.value == ("bytes", 2)


def test_nothing_left_after_a_campaign(tmp_path):
    root = tmp_path / "store"
    with open_session([site(root)], METHODS, {"d"}, tmp_path / "run", [str(TESTS_DIR)]) as s:
        for n in (200_000, 300_000):  # two large results, one never taken by the thinker
            s.queues.send_inputs(n, method="make_bytes", topic="d")
        s.queues.send_inputs(b"a" * 50_000, method="describe", topic="d")
        taken = s.queues.get_result("d", timeout=120)
        assert taken.success
        assert stored_files(root)  # data is in the store while the campaign runs
    assert stored_files(root) == []


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")
def test_multi_connector_small_to_redis_large_to_files(tmp_path):
    """A site whose store is a multi-connector: workers resolve and put through it."""
    (tmp_path / "redis").mkdir()
    root = tmp_path / "store"
    with redis_server(tmp_path / "redis") as port:
        data = DataConfig.model_validate(
            {
                "connector": "multi",
                "connectors": [
                    {"connector": "redis", "host": "127.0.0.1", "port": port,
                     "max_bytes": 1_000_000},
                    {"connector": "file", "path": str(root)},
                ],
                "threshold_bytes": THRESHOLD,
            }
        )  # fmt: skip
        config = SiteConfig(name="cpu", kind="cpu", backend="local", capacity=1, data=data)
        methods = MethodRegistry([Method(describe), Method(make_bytes), Method(backends_used)])
        client = redis.Redis(host="127.0.0.1", port=port)
        with open_session([config], methods, {"d"}, tmp_path / "run", [str(TESTS_DIR)]) as s:
            name = s.data.store_for("cpu").name
            # arguments: the worker process never registered the store before resolving
            first = run(s, b"m" * 200_000, name, method="backends_used")
            assert first.success, first.failure_info
            assert first.value == (200_000, ["0-redis", "1-file"])
            # put for that task alone: evicted once it finished (the worker saw it in Redis)
            assert client.dbsize() == 0 and not stored_objects(root)
            large = run(s, b"l" * 3_000_000, method="describe")
            assert large.value == ("bytes", 3_000_000) and not stored_objects(root)
            assert s.data.puts == 2
            # results: the worker puts by size too
            small_result = run(s, 100_000, method="make_bytes")
            big_result = run(s, 2_000_000, method="make_bytes")
            keys = [get_factory(r.value).key for r in (small_result, big_result)]
            assert [k.connector_name for k in keys] == ["0-redis", "1-file"]
            assert small_result.value == b"x" * 100_000 and big_result.value == b"x" * 2_000_000
            assert s.data.puts == 2  # results are put by the worker, not by orch
        assert client.dbsize() == 0  # nothing of the campaign is left in Redis
        client.close()
    assert stored_files(root) == []
