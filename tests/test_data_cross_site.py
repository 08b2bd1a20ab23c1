"""Data moving between two sites that each reach only their own connector (file vs Redis)."""

from __future__ import annotations

import shutil

import pytest
import redis
from apps_for_tests import make_bytes, stores_seen
from conftest import TESTS_DIR
from redis_server import redis_server

from orchestrator.apps.proxies import is_proxy
from orchestrator.config.sites import SiteConfig
from orchestrator.data import DataConfig
from orchestrator.dispatch import Method, MethodRegistry
from orchestrator.runner import open_session

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]


def test_result_of_one_site_moves_into_the_other_sites_store(tmp_path):
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as port:
        file_site = SiteConfig(
            name="files", kind="cpu", backend="local", capacity=1,
            data=DataConfig(connector="file", path=tmp_path / "store", threshold_bytes=10_000),
        )  # fmt: skip
        redis_site = SiteConfig(
            name="redis", kind="gpu", backend="local", capacity=1,
            data=DataConfig(connector="redis", host="127.0.0.1", port=port, threshold_bytes=10_000),
        )  # fmt: skip
        methods = MethodRegistry([Method(make_bytes), Method(stores_seen, kind="gpu")])
        client = redis.Redis(host="127.0.0.1", port=port)
        with open_session(
            [file_site, redis_site], methods, {"d"}, tmp_path / "run", [str(TESTS_DIR)]
        ) as session:
            file_store = session.data.store_for("files").name
            redis_store = session.data.store_for("redis").name
            session.queues.send_inputs(2_000_000, method="make_bytes", topic="d")
            made = session.queues.get_result("d", timeout=120)
            assert made.site == "files" and is_proxy(made.value)  # in the file store

            puts = session.data.puts
            session.queues.send_inputs(
                made.value, [file_store, redis_store], method="stores_seen", topic="d"
            )
            used = session.queues.get_result("d", timeout=120)
            assert used.site == "redis" and used.success, used.failure_info
            length, seen = used.value
            assert length == 2_000_000
            # the redis site's worker read from Redis only; orch moved the bytes across
            assert seen == {file_store: False, redis_store: True}
            assert session.data.puts == puts + 1
            assert client.dbsize() > 0
        assert client.dbsize() == 0  # nothing orch put is left in Redis
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
