"""Build and tear down the ProxyStore stores a campaign uses (one per distinct connector).

Every store is campaign scoped and owned by orch:

* ``file``: a sub-directory ``<path>/<store name>`` created for the campaign and removed at
  its end (the ``path`` directory itself is left alone).
* ``redis``: every key starts with ``<store name>:``; at the end every key under that prefix
  is deleted (never FLUSHDB).
* ``multi``: each member as above (its own sub-directory or key prefix).
* ``endpoint``: endpoints cannot list their objects; orch evicts what it put and every result
  proxy handed to ``DataPlane.adopt``. A result of a task whose outcome never arrived stays in
  the worker's endpoint until that endpoint stops (its memory store is not persisted).
* ``globus``: a sub-directory ``<store name>`` in every collection's directory, deleted (with
  a Globus delete task) at the end.

The configs shipped to workers say ``clear=False``: a worker that closed a store by mistake
would still delete nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from proxystore.connectors.file import FileConnector
from proxystore.connectors.multi import MultiConnector, Policy
from proxystore.store.base import Store
from proxystore.store.lifetimes import ContextLifetime
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestrator.apps.proxies import PrefixedRedisConnector
from orchestrator.data.config import DataConfig, GlobusCollection, MultiMember
from orchestrator.exceptions import OrchError

logger = logging.getLogger(__name__)

REDIS_TIMEOUT_S = 5.0
"""Seconds orch's Redis client waits to connect to the server or for a reply: a store behind
a cut link fails the put (a site failure; the task is placed elsewhere) instead of hanging."""

REDIS_RETRIES = 1
"""Retries of a Redis command after a connection error or timeout (redis-py's default, 10
with back-off, would make a put to an unreachable server take about a minute)."""


class DataStoreError(OrchError):
    """A data store could not be created or reached."""


@dataclass
class ManagedStore:
    """A store orch created for one campaign, with what it takes to clean it up.

    Attributes:
        store: The ProxyStore store (registered in this process under its name).
        lifetime: Campaign lifetime: every object orch puts (or adopts) is evicted at close.
        key: :meth:`DataConfig.store_key` of the config it was built from.
        owned_dir: The directory orch created for it (file connector, or the first file
            member of a multi connector), removed at close.
        sites: Names of the sites using it.
        owned_dirs: Every directory orch created for it (multi: one per file member).
    """

    store: Store[Any]
    lifetime: ContextLifetime
    key: tuple[object, ...]
    owned_dir: Path | None = None
    sites: list[str] = field(default_factory=list)
    owned_dirs: list[Path] = field(default_factory=list)
    closed: bool = False

    @property
    def name(self) -> str:
        """The store's name (unique per campaign)."""
        return self.store.name

    def close(self) -> None:
        """Evict what orch put, delete the campaign's directory/keys, close (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.lifetime.close()
        except Exception:  # noqa: BLE001 - the sweep below still removes everything
            logger.exception("store %s: evicting the campaign's objects failed", self.name)
        # clear=True: FileConnector removes owned_dir, PrefixedRedisConnector deletes the
        # campaign's prefix (results of tasks whose outcome never arrived included).
        connector = self.store.connector
        if isinstance(connector, MultiConnector):  # its close() takes no `clear`
            members: list[Any] = [c for c, _ in connector.connectors.values()]
            for member in members:
                member.close(clear=True)
            self.store.close()
        elif type(connector).__name__ == "EndpointConnector":  # nothing to sweep: see above
            self.store.close()
        else:
            self.store.close(clear=True)
        logger.info("store %s closed and cleared", self.name)


def _file_connector(path: Path, name: str, field: str) -> tuple[FileConnector, Path]:
    base = path.expanduser().resolve()
    owned_dir = base / name
    try:
        base.mkdir(parents=True, exist_ok=True)
        owned_dir.mkdir()
    except OSError as exc:
        raise DataStoreError(
            f"data store {name}: cannot create {owned_dir} ({exc.strerror or exc}); "
            f"check `{field}` is a writable directory"
        ) from None
    return FileConnector(str(owned_dir), clear=False), owned_dir


def _redis_connector(host: str, port: int, name: str, field: str) -> PrefixedRedisConnector:
    probe = redis.Redis(
        host=host,
        port=port,
        socket_connect_timeout=10,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        probe.ping()  # fail now, with a clear message, rather than at the first put
    except Exception as exc:  # noqa: BLE001 - any connection problem is reported alike
        raise DataStoreError(
            f"data store {name}: Redis at {host}:{port} does not answer "
            f"({type(exc).__name__}: {exc}); start it or fix `{field}.host`/`{field}.port`"
        ) from None
    finally:
        probe.close()
    connector = PrefixedRedisConnector(host, port, prefix=f"{name}:")
    # ProxyStore 1.1.0's RedisConnector takes no client options: give orch's own client
    # bounded timeouts (workers rebuild theirs from the connector's config).
    connector._redis_client.close()
    connector._redis_client = redis.StrictRedis(
        host=host,
        port=port,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        retry=Retry(NoBackoff(), REDIS_RETRIES),
    )
    return connector


def _multi_connector(
    members: Sequence[MultiMember], name: str
) -> tuple[MultiConnector, list[Path]]:
    """One member connector per entry; each object goes to the first whose size fits."""
    parts: dict[str, tuple[Any, Policy]] = {}
    owned: list[Path] = []
    try:
        for i, member in enumerate(members):
            where = f"data.connectors[{i}]"
            connector: Any
            if member.connector == "file":
                assert member.path is not None
                connector, owned_dir = _file_connector(member.path, name, f"{where}.path")
                owned.append(owned_dir)
            else:
                assert member.host is not None and member.port is not None
                connector = _redis_connector(member.host, member.port, name, where)
            # Earlier members win ties: an object of exactly max_bytes goes to the smaller one.
            policy = Policy(
                priority=len(members) - i,
                max_size_bytes=sys.maxsize if member.max_bytes is None else member.max_bytes,
            )
            parts[f"{i}-{member.connector}"] = (connector, policy)
    except BaseException:
        for connector, _ in parts.values():
            connector.close(clear=True)
        raise
    return MultiConnector(parts), owned


def _check_relay(address: str, name: str) -> None:
    """Fail now if nothing listens at the relay address (endpoints could not peer)."""
    parts = urlsplit(address)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=10).close()
    except OSError as exc:
        raise DataStoreError(
            f"data store {name}: relay {address} does not answer ({exc.strerror or exc}); "
            "start it (`proxystore-relay`) or fix `data.relay`"
        ) from None


def _endpoint_connector(config: DataConfig, name: str, group: Sequence[str]) -> Any:
    from proxystore.connectors.endpoint import EndpointConnector
    from proxystore.utils.environment import home_dir

    if config.relay is not None:
        _check_relay(config.relay, name)
    endpoints = list(dict.fromkeys([*config.endpoint_group(), *group]))
    try:
        # proxystore_dir stays unset: every process (orch, each site's workers) looks in its
        # own ProxyStore home and uses the endpoint of the group it finds running there.
        return EndpointConnector(endpoints)
    except Exception as exc:  # noqa: BLE001 - ProxyStore's own error is a paragraph
        raise DataStoreError(
            f"data store {name}: no endpoint of {', '.join(endpoints)} answers on this "
            f"machine ({type(exc).__name__}; looked in {home_dir()}); start one with "
            "`proxystore-endpoint start NAME`, or add the endpoint beside orch to `data.peers`"
        ) from None


def globus_endpoints(collections: Sequence[GlobusCollection], name: str) -> dict[str, Any]:
    """The ``endpoints`` argument of ProxyStore's ``GlobusConnector`` for a campaign store.

    Each collection's directory gets a ``<name>`` sub-directory, so that closing the store
    deletes only the campaign's files.
    """
    return {
        str(c.uuid): {
            "endpoint_path": c.endpoint_path.rstrip("/") + "/" + name,
            "local_path": os.path.join(c.local_path, name),
            "host_regex": c.host_regex,
        }
        for c in collections
    }


def _globus_connector(config: DataConfig, name: str) -> tuple[Any, Path]:
    import re

    import globus_sdk
    from proxystore.connectors.globus import GlobusConnector
    from proxystore.globus.app import get_globus_app, is_client_login
    from proxystore.utils.environment import hostname

    assert config.collections is not None
    host = hostname()
    local = [c for c in config.collections if re.fullmatch(c.host_regex, host)]
    if not local:
        raise DataStoreError(
            f"data store {name}: no `data.collections` entry has a host_regex matching this "
            f"machine ({host}); orch puts objects in its local collection: add this machine's"
        )
    endpoints = globus_endpoints(config.collections, name)
    try:
        app = get_globus_app()
        globus_sdk.TransferClient(app=app)  # adds the transfer scope that login must cover
        logged_in = not app.login_required()
    except Exception as exc:  # noqa: BLE001 - offline, the SDK retries then raises
        raise DataStoreError(
            f"data store {name}: Globus does not answer ({type(exc).__name__}); check the "
            "network, or use another connector"
        ) from None
    if not logged_in:
        how = (
            "check PROXYSTORE_GLOBUS_CLIENT_ID/SECRET"
            if is_client_login()
            else ("run `proxystore-globus-auth login` (or set PROXYSTORE_GLOBUS_CLIENT_ID/SECRET)")
        )
        raise DataStoreError(f"data store {name}: not logged in to Globus for ProxyStore; {how}")
    owned_dir = Path(endpoints[str(local[0].uuid)]["local_path"])
    try:
        owned_dir.mkdir(parents=True, exist_ok=True)
        connector = GlobusConnector(endpoints, clear=False)
    except OSError as exc:
        raise DataStoreError(
            f"data store {name}: cannot create {owned_dir} ({exc.strerror or exc}); check "
            "`data.collections[].local_path`"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any Globus failure is reported alike
        raise DataStoreError(
            f"data store {name}: Globus refused the collections ({type(exc).__name__}: "
            f"{str(exc)[:200]}); check `data.collections` and your Globus permissions"
        ) from None
    return connector, owned_dir


def build_store(
    config: DataConfig,
    name: str,
    *,
    cache_size: int = 16,
    endpoints: Sequence[str] = (),
) -> ManagedStore:
    """Create (and register in this process) the store a :class:`DataConfig` describes.

    Args:
        config: The site's ``data:`` section.
        name: The store's name, unique per campaign (also its directory or key prefix).
        cache_size: Objects each process keeps in its ProxyStore cache after resolving them.
        endpoints: ``endpoint`` connector: the other endpoint UUIDs of the peer group (the
            endpoints and peers of every site sharing this store).

    Raises:
        DataStoreError: The directory cannot be created, or the Redis server, relay, local
            endpoint or Globus does not answer (one line naming the field to fix).
    """
    owned: list[Path] = []
    connector: Any
    if config.connector == "file":
        assert config.path is not None
        connector, owned_dir = _file_connector(config.path, name, "data.path")
        owned.append(owned_dir)
    elif config.connector == "redis":
        assert config.host is not None and config.port is not None
        connector = _redis_connector(config.host, config.port, name, "data")
    elif config.connector == "multi":
        assert config.connectors is not None
        connector, owned = _multi_connector(config.connectors, name)
    elif config.connector == "endpoint":
        connector = _endpoint_connector(config, name, endpoints)
    elif config.connector == "globus":
        connector, owned_dir = _globus_connector(config, name)
        owned.append(owned_dir)
    else:  # pragma: no cover - DataConfig only admits the kinds above
        raise DataStoreError(f"data store {name}: unsupported connector {config.connector!r}")
    store: Store[Any] = Store(name, connector, cache_size=cache_size, register=True)
    return ManagedStore(
        store=store,
        lifetime=ContextLifetime(store, name=f"{name}-campaign"),
        key=config.store_key(),
        owned_dir=owned[0] if owned else None,
        owned_dirs=owned,
    )
