"""The campaign's data plane: which site uses which store, and moving arguments by proxy."""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxystore.proxy import Proxy, extract, get_factory
from proxystore.store.factory import StoreFactory

from orchestrator.apps.proxies import (
    CONTEXT_KEY,
    is_proxy,
    obviously_small,
    proxy_serialized,
    resolve_failure,
    serialize_for,
)
from orchestrator.data.config import DataConfig
from orchestrator.data.stores import DataStoreError, ManagedStore, build_store

logger = logging.getLogger(__name__)


@dataclass
class _Shared:
    """One object already put in one store, and the proxy every task reuses."""

    proxy: Proxy[Any]
    ref: Any  # weakref.ref to the object, or the object itself (pinned, not weak-referable)


class DataPlane:
    """The stores of one campaign and the proxying of task arguments.

    Built from each site's ``data:`` section: sites with equal connector settings share one
    store. Objects orch puts live until :meth:`close` (campaign-scoped ``ContextLifetime``);
    result proxies made on workers are single use (evicted once resolved) and, when handed
    to :meth:`adopt`, also evicted at :meth:`close` if never resolved. :meth:`close` then
    deletes the campaign's directory (file) or key prefix (redis), so nothing is left.

    Shared inputs: an object (by identity, while it is alive) sent to many tasks of sites
    using one store is put once and the same proxy is reused. Do not mutate an object after
    sending it: later tasks would get the first version.

    Args:
        sites: Site name -> its ``data:`` section (``None``: the site moves everything by value).
        campaign: Campaign id in store names; a random one by default.
        max_pinned: Objects that cannot be weakly referenced (bytes, lists, dicts, ...) are
            remembered for reuse by holding them; at most this many, least recently used go.
        cache_size: ProxyStore cache size of each store (per process, workers included).

    Attributes:
        puts: Objects put in a store by this plane so far.
    """

    def __init__(
        self,
        sites: Mapping[str, DataConfig | None],
        *,
        campaign: str | None = None,
        max_pinned: int = 16,
        cache_size: int = 16,
    ) -> None:
        self.campaign = campaign or uuid.uuid4().hex[:12]
        self.puts = 0
        self._lock = threading.RLock()
        self._closed = False
        self._by_key: dict[tuple[object, ...], ManagedStore] = {}
        self._by_site: dict[str, ManagedStore] = {}
        self._thresholds: dict[str, int] = {}
        self._shared: dict[tuple[str, int], _Shared] = {}
        self._moved: dict[tuple[str, int], tuple[Proxy[Any], Proxy[Any]]] = {}
        self._pinned: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._max_pinned = max_pinned
        try:
            for site, config in sites.items():
                if config is None:
                    continue
                managed = self._by_key.get(config.store_key())
                if managed is None:
                    name = f"orch-{self.campaign}-{config.connector}-{len(self._by_key)}"
                    managed = build_store(config, name, cache_size=cache_size)
                    self._by_key[managed.key] = managed
                managed.sites.append(site)
                self._by_site[site] = managed
                self._thresholds[site] = config.threshold_bytes
        except BaseException:
            self.close()
            raise

    # --- lookups --------------------------------------------------------------------------

    @property
    def stores(self) -> list[ManagedStore]:
        """The campaign's stores, one per distinct connector setting."""
        return list(self._by_key.values())

    def uses_proxies(self, site: str) -> bool:
        """Whether ``site`` has a ``data:`` section."""
        return site in self._by_site

    def store_for(self, site: str) -> ManagedStore:
        """The store ``site`` uses.

        Raises:
            DataStoreError: The site has no ``data:`` section or the plane is closed.
        """
        if self._closed:
            raise DataStoreError("the data plane is closed (the campaign has ended)")
        try:
            return self._by_site[site]
        except KeyError:
            raise DataStoreError(
                f"site '{site}' has no `data:` section: it cannot move objects by proxy"
            ) from None

    def threshold(self, site: str) -> int | None:
        """Serialized size above which ``site``'s arguments and results move by proxy."""
        return self._thresholds.get(site)

    def result_context(self, site: str) -> dict[str, Any]:
        """What to merge into ``site``'s task context so its workers proxy large results.

        Returns:
            ``{"data": {"store": <StoreConfig dict>, "threshold_bytes": N}}``, or ``{}`` for
            a site without a ``data:`` section. Picklable; read by
            ``orchestrator.apps.proxies.maybe_proxy_result``.
        """
        if site not in self._by_site:
            return {}
        managed = self.store_for(site)
        return {
            CONTEXT_KEY: {
                "store": managed.store.config().model_dump(),
                "threshold_bytes": self._thresholds[site],
            }
        }

    # --- putting --------------------------------------------------------------------------

    def _lookup(self, managed: ManagedStore, obj: Any) -> Proxy[Any] | None:
        entry = self._shared.get((managed.name, id(obj)))
        if entry is None:
            return None
        target = entry.ref() if isinstance(entry.ref, weakref.ref) else entry.ref
        if target is not obj:
            return None
        if (managed.name, id(obj)) in self._pinned:
            self._pinned.move_to_end((managed.name, id(obj)))
        return entry.proxy

    def _remember(self, managed: ManagedStore, obj: Any, proxy: Proxy[Any]) -> None:
        key = (managed.name, id(obj))
        shared = self._shared

        try:
            ref: Any = weakref.ref(obj, lambda r: _forget(shared, key, r))
        except TypeError:  # bytes, list, dict, tuple, ...: hold it, bounded
            ref = obj
            self._pinned[key] = None
            self._pinned.move_to_end(key)
            while len(self._pinned) > self._max_pinned:
                old, _ = self._pinned.popitem(last=False)
                shared.pop(old, None)
        shared[key] = _Shared(proxy=proxy, ref=ref)

    def _put(self, managed: ManagedStore, data: bytes) -> Proxy[Any]:
        proxy = proxy_serialized(managed.store, data, lifetime=managed.lifetime)
        self.puts += 1
        return proxy

    def share(self, obj: Any, site: str) -> Proxy[Any]:
        """Put ``obj`` in ``site``'s store (once) and return a proxy to pass to many tasks.

        Whatever its size. Calling it again with the same object (or sending that object as
        an argument of a task of a site using the same store) reuses the same proxy. The
        object stays in the store until the campaign ends or :meth:`release`.
        """
        if is_proxy(obj):
            return obj
        with self._lock:
            managed = self.store_for(site)
            proxy = self._lookup(managed, obj)
            if proxy is None:
                proxy = self._put(managed, serialize_for(managed.store, obj))
                self._remember(managed, obj, proxy)
            return proxy

    def _maybe_proxy(self, managed: ManagedStore, threshold: int, value: Any) -> Any:
        if is_proxy(value):
            return self._move(managed, value)
        proxy = self._lookup(managed, value)
        if proxy is not None:
            return proxy
        if obviously_small(value, threshold):
            return value
        data = serialize_for(managed.store, value)
        if len(data) <= threshold:
            return value
        proxy = self._put(managed, data)
        self._remember(managed, value, proxy)
        return proxy

    def proxy_arguments(
        self, args: Sequence[Any], kwargs: Mapping[str, Any], site: str
    ) -> tuple[tuple[Any, ...], dict[str, Any], int]:
        """Replace each top-level argument larger than ``site``'s threshold by a proxy.

        Arguments already shared (same object) reuse their proxy whatever their size.
        Proxies nested in containers are not looked for.

        Returns:
            ``(args, kwargs, n_proxied)``: the arguments to send and how many travel by proxy
            (reused ones included). A site without ``data:`` gets the arguments unchanged.
        """
        threshold = self._thresholds.get(site)
        if threshold is None:
            return tuple(args), dict(kwargs), 0
        with self._lock:
            managed = self.store_for(site)
            new_args = tuple(self._maybe_proxy(managed, threshold, v) for v in args)
            new_kwargs = {k: self._maybe_proxy(managed, threshold, v) for k, v in kwargs.items()}
        n = sum(a is not b for a, b in zip(new_args, args, strict=True))
        n += sum(new_kwargs[k] is not v for k, v in kwargs.items())
        return new_args, new_kwargs, n

    def _move(self, managed: ManagedStore, proxy: Proxy[Any]) -> Any:
        """Re-home a proxy from another of the campaign's stores into ``managed``.

        A site's workers reach only their own connector, so an object produced at one site
        (e.g. a result proxied into its file store) is resolved here and put once into the
        target site's store; proxies the campaign does not own pass unchanged.
        """
        owner = self._owner(proxy)
        if owner is None or owner is managed:
            return proxy
        key = (managed.name, id(proxy))
        moved = self._moved.get(key)
        if moved is None:
            target = self.resolve(proxy)
            moved = (proxy, self._put(managed, serialize_for(managed.store, target)))
            self._moved[key] = moved  # keeps the source alive, so its id stays unique
        return moved[1]

    # --- results and clean-up -------------------------------------------------------------

    def _owner(self, proxy: Proxy[Any]) -> ManagedStore | None:
        factory = get_factory(proxy)
        if not isinstance(factory, StoreFactory):
            return None
        name = factory.store_config.name
        return next((m for m in self._by_key.values() if m.name == name), None)

    def adopt(self, value: Any) -> bool:
        """Tie a result proxy made on a worker to the campaign, so :meth:`close` evicts it.

        Call it on every task result as it arrives (never resolves ``value``).

        Returns:
            Whether ``value`` is a proxy of one of the campaign's stores.
        """
        if not is_proxy(value):
            return False
        with self._lock:
            managed = self._owner(value)
            if managed is None or managed.closed:
                return False
            managed.lifetime.add_proxy(value)
            return True

    def release(self, obj: Any) -> int:
        """Evict now what :meth:`share`/:meth:`proxy_arguments` put for ``obj`` (or a proxy).

        Tasks still holding the proxy will fail to resolve it.

        Returns:
            How many stored objects were evicted.
        """
        count = 0
        with self._lock:
            for key, entry in list(self._shared.items()):
                target = entry.ref() if isinstance(entry.ref, weakref.ref) else entry.ref
                if target is obj or entry.proxy is obj:
                    factory = get_factory(entry.proxy)
                    managed = next(m for m in self._by_key.values() if m.name == key[0])
                    if isinstance(factory, StoreFactory) and not managed.closed:
                        managed.store.evict(factory.key)
                        count += 1
                    self._shared.pop(key, None)
                    self._pinned.pop(key, None)
        return count

    @staticmethod
    def resolve(value: Any) -> Any:
        """Resolve ``value`` if it is a proxy (e.g. a task's result), with a plain error.

        Raises:
            ProxyResolveFailed: The object is gone (never ProxyStore's own errors).
        """
        if not is_proxy(value):
            return value
        try:
            return extract(value)
        except Exception as exc:  # noqa: BLE001 - never let ProxyResolveError escape
            raise resolve_failure(exc, "a result") from None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """End the campaign's data: evict everything, delete directories/keys, close stores.

        Idempotent. Proxies still held anywhere can no longer be resolved.
        """
        with self._lock:
            self._closed = True
            self._shared.clear()
            self._moved.clear()
            self._pinned.clear()
            for managed in self._by_key.values():
                try:
                    managed.close()
                except Exception:  # noqa: BLE001 - close the other stores regardless
                    logger.exception("data store %s: clean-up failed", managed.name)

    def __enter__(self) -> DataPlane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _forget(shared: dict[tuple[str, int], _Shared], key: tuple[str, int], ref: Any) -> None:
    """Weakref callback: the object died, so its id may be reused by another object."""
    entry = shared.get(key)
    if entry is not None and entry.ref is ref:
        shared.pop(key, None)
