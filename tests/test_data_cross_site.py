"""Data moving between two sites that each reach only their own connector.

File vs Redis (orch moves the object), and two ProxyStore endpoints peered through a relay on
127.0.0.1 (the endpoints move it, peer-to-peer).
"""

from __future__ import annotations

import shutil

import data_endpoints
import pytest
import redis
from apps_for_tests import make_bytes, stores_seen
from conftest import TESTS_DIR
from data_apps import endpoint_used
from proxystore.endpoint import client
from proxystore.proxy import get_factory
from redis_server import redis_server

from orchestrator.apps.proxies import is_proxy
from orchestrator.config.sites import SiteConfig
from orchestrator.data import DataConfig
from orchestrator.dispatch import Method, MethodRegistry
from orchestrator.runner import open_session

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
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
            assert client.dbsize() == 0  # the copy made for that task went with it
        assert client.dbsize() == 0  # nothing orch put is left in Redis
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


@pytest.mark.skipif(not data_endpoints.AVAILABLE, reason="proxystore[endpoints] not installed")
def test_sites_on_peered_endpoints_exchange_data_peer_to_peer(tmp_path, monkeypatch):
    """Each site's workers reach only their own endpoint; objects cross by peer-to-peer."""
    homes = {"alpha": tmp_path / "home-alpha", "beta": tmp_path / "home-beta"}
    with (
        data_endpoints.relay(tmp_path / "relay") as relay,
        data_endpoints.endpoint(homes["alpha"], "ep-alpha", relay) as ep_a,
        data_endpoints.endpoint(homes["beta"], "ep-beta", relay) as ep_b,
    ):
        # orch runs beside site alpha (e.g. on its login node): same ProxyStore home
        monkeypatch.setenv("PROXYSTORE_HOME", str(homes["alpha"]))
        sites = [
            SiteConfig(
                name=name, kind=kind, backend="local", capacity=1,
                worker_init=f"export PROXYSTORE_HOME={homes[name]}",
                data=DataConfig(connector="endpoint", endpoint=ep.uuid, relay=relay,
                                threshold_bytes=10_000),
            )
            for name, kind, ep in (("alpha", "cpu", ep_a), ("beta", "gpu", ep_b))
        ]  # fmt: skip
        methods = MethodRegistry([Method(make_bytes), Method(endpoint_used, kind="gpu")])
        run_dir = tmp_path / "run"
        with open_session(sites, methods, {"d"}, run_dir, [str(TESTS_DIR)]) as session:
            store = session.data.store_for("alpha")
            assert session.data.store_for("beta") is store  # one store, peered endpoints
            assert str(store.store.connector.endpoint_uuid) == ep_a.uuid  # orch's side

            session.queues.send_inputs(2_000_000, method="make_bytes", topic="d")
            made = session.queues.get_result("d", timeout=120)
            assert made.site == "alpha" and made.success and is_proxy(made.value)
            key = get_factory(made.value).key
            assert key.endpoint_id == ep_a.uuid  # alpha's worker put it in alpha's endpoint
            assert not client.exists(ep_b.address, key.object_id, ep_b.uuid)

            puts = session.data.puts
            session.queues.send_inputs(made.value, store.name, method="endpoint_used", topic="d")
            used = session.queues.get_result("d", timeout=120)
            assert used.site == "beta" and used.success, used.failure_info
            # beta's worker asked only beta's endpoint, which fetched from alpha's endpoint
            assert used.value == (2_000_000, ep_b.uuid)
            assert session.data.puts == puts  # orch moved nothing
            assert any("peer channel" in line and "ep-alpha" in line for line in ep_b.log)

            payload = b"z" * 500_000
            shared = session.data.share(payload, "beta")  # orch puts it in its endpoint
            shared_key = get_factory(shared).key
            assert shared_key.endpoint_id == ep_a.uuid
            session.queues.send_inputs(payload, store.name, method="endpoint_used", topic="d")
            sent = session.queues.get_result("d", timeout=120)
            assert sent.success and sent.value == (500_000, ep_b.uuid)
            assert session.data.puts == puts + 1
            # the result was single use: beta's resolve evicted it at alpha's endpoint
            assert not client.exists(ep_a.address, key.object_id, ep_a.uuid)
            assert client.exists(ep_a.address, shared_key.object_id, ep_a.uuid)
        assert not client.exists(ep_a.address, shared_key.object_id, ep_a.uuid)
