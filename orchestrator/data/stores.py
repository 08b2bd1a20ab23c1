"""Build and tear down the ProxyStore stores a campaign uses (one per distinct connector).

Every store is campaign scoped and owned by orch:

* ``file``: a sub-directory ``<path>/<store name>`` created for the campaign and removed at
  its end (the ``path`` directory itself is left alone).
* ``redis``: every key starts with ``<store name>:``; at the end every key under that prefix
  is deleted (never FLUSHDB).

The configs shipped to workers say ``clear=False``: a worker that closed a store by mistake
would still delete nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from proxystore.connectors.file import FileConnector
from proxystore.store.base import Store
from proxystore.store.lifetimes import ContextLifetime
from redis.backoff import NoBackoff
from redis.retry import Retry

from orchestrator.apps.proxies import PrefixedRedisConnector
from orchestrator.data.config import DataConfig
from orchestrator.exceptions import OrchError

logger = logging.getLogger(__name__)


class DataStoreError(OrchError):
    """A data store could not be created or reached."""


@dataclass
class ManagedStore:
    """A store orch created for one campaign, with what it takes to clean it up.

    Attributes:
        store: The ProxyStore store (registered in this process under its name).
        lifetime: Campaign lifetime: every object orch puts (or adopts) is evicted at close.
        key: :meth:`DataConfig.store_key` of the config it was built from.
        owned_dir: The directory orch created for it (file connector), removed at close.
        sites: Names of the sites using it.
    """

    store: Store[Any]
    lifetime: ContextLifetime
    key: tuple[object, ...]
    owned_dir: Path | None = None
    sites: list[str] = field(default_factory=list)
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
        self.store.close(clear=True)
        logger.info("store %s closed and cleared", self.name)


def build_store(config: DataConfig, name: str, *, cache_size: int = 16) -> ManagedStore:
    """Create (and register in this process) the store a :class:`DataConfig` describes.

    Args:
        config: The site's ``data:`` section.
        name: The store's name, unique per campaign (also its directory or key prefix).
        cache_size: Objects each process keeps in its ProxyStore cache after resolving them.

    Raises:
        DataStoreError: The directory cannot be created or the Redis server does not answer.
    """
    owned_dir: Path | None = None
    if config.connector == "file":
        assert config.path is not None
        base = config.path.expanduser().resolve()
        owned_dir = base / name
        try:
            base.mkdir(parents=True, exist_ok=True)
            owned_dir.mkdir()
        except OSError as exc:
            raise DataStoreError(
                f"data store {name}: cannot create {owned_dir} ({exc.strerror or exc}); "
                "check `data.path` is a writable directory"
            ) from None
        connector: Any = FileConnector(str(owned_dir), clear=False)
    elif config.connector == "redis":
        assert config.host is not None and config.port is not None
        probe = redis.Redis(
            host=config.host,
            port=config.port,
            socket_connect_timeout=10,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            probe.ping()  # fail now, with a clear message, rather than at the first put
        except Exception as exc:  # noqa: BLE001 - any connection problem is reported alike
            raise DataStoreError(
                f"data store {name}: Redis at {config.host}:{config.port} does not answer "
                f"({type(exc).__name__}: {exc}); start it or fix `data.host`/`data.port`"
            ) from None
        finally:
            probe.close()
        connector = PrefixedRedisConnector(config.host, config.port, prefix=f"{name}:")
    else:  # pragma: no cover - DataConfig only admits the kinds above
        raise DataStoreError(f"data store {name}: unsupported connector {config.connector!r}")
    store: Store[Any] = Store(name, connector, cache_size=cache_size, register=True)
    return ManagedStore(
        store=store,
        lifetime=ContextLifetime(store, name=f"{name}-campaign"),
        key=config.store_key(),
        owned_dir=owned_dir,
    )
