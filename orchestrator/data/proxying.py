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
    """One object already put in one store, and the proxy every task reuses.

    ``owner``: the task it was put for, while no other task (nor :meth:`DataPlane.share`)
    used it; ``None`` once shared, or when put without a task id.
    """

    proxy: Proxy[Any]
    ref: Any  # weakref.ref to the object, or the object itself (pinned, not weak-referable)
    owner: str | None = None


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

    Per-task objects: an argument put for one task (``proxy_arguments(..., task_id=...)``)
    that no other task reuses and that was not given to :meth:`share` is evicted by
    :meth:`task_done` as soon as the task has finished, instead of at the campaign's end.

    ``endpoint`` sites naming the same relay share one store whose peer group is every such
    site's endpoint and peers: a proxy made at one site is resolved at another peer-to-peer,
    without passing through orch.

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
        self._moved: dict[tuple[str, int], tuple[Proxy[Any], _Shared]] = {}
        self._pinned: OrderedDict[tuple[str, int], None] = OrderedDict()
        # task id -> (table, key, entry) of what was put for it; entries are held here so
        # that one whose object died (and left _shared) can still be evicted.
        self._by_task: dict[str, list[tuple[str, tuple[str, int], _Shared]]] = {}
        self._max_pinned = max_pinned
        groups: dict[tuple[object, ...], list[str]] = {}
        for config in sites.values():
            if config is not None:
                groups.setdefault(config.store_key(), []).extend(config.endpoint_group())
        try:
            for site, config in sites.items():
                if config is None:
                    continue
                managed = self._by_key.get(config.store_key())
                if managed is None:
                    name = f"orch-{self.campaign}-{config.connector}-{len(self._by_key)}"
                    managed = build_store(
                        config,
                        name,
                        cache_size=cache_size,
                        endpoints=groups[config.store_key()],
                    )
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

    def _lookup(
        self, managed: ManagedStore, obj: Any, task_id: str | None = None
    ) -> Proxy[Any] | None:
        """The proxy already made for ``obj`` in ``managed``; used by ``task_id`` from now."""
        entry = self._shared.get((managed.name, id(obj)))
        if entry is None:
            return None
        target = entry.ref() if isinstance(entry.ref, weakref.ref) else entry.ref
        if target is not obj:
            return None
        if (managed.name, id(obj)) in self._pinned:
            self._pinned.move_to_end((managed.name, id(obj)))
        if entry.owner is not None and entry.owner != task_id:
            entry.owner = None  # reused by another task (or shared): lives for the campaign
        return entry.proxy

    def _remember(
        self, managed: ManagedStore, obj: Any, proxy: Proxy[Any], task_id: str | None = None
    ) -> None:
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
        entry = _Shared(proxy=proxy, ref=ref, owner=task_id)
        shared[key] = entry
        if task_id is not None:
            self._by_task.setdefault(task_id, []).append(("shared", key, entry))

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
            proxy = self._lookup(managed, obj)  # no task id: shared from now on
            if proxy is None:
                proxy = self._put(managed, serialize_for(managed.store, obj))
                self._remember(managed, obj, proxy)
            return proxy

    def _maybe_proxy(
        self, managed: ManagedStore, threshold: int, value: Any, task_id: str | None
    ) -> Any:
        if is_proxy(value):
            return self._move(managed, value, task_id)
        proxy = self._lookup(managed, value, task_id)
        if proxy is not None:
            return proxy
        if obviously_small(value, threshold):
            return value
        data = serialize_for(managed.store, value)
        if len(data) <= threshold:
            return value
        proxy = self._put(managed, data)
        self._remember(managed, value, proxy, task_id)
        return proxy

    def proxy_arguments(
        self,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        site: str,
        *,
        threshold: int | None = None,
        task_id: str | None = None,
    ) -> tuple[tuple[Any, ...], dict[str, Any], int]:
        """Replace each top-level argument larger than the threshold by a proxy.

        Arguments already shared (same object) reuse their proxy whatever their size.
        Proxies nested in containers are not looked for.

        Args:
            args: The task's positional arguments.
            kwargs: The task's keyword arguments.
            site: Where the task runs (its store receives the objects).
            threshold: Serialized size above which an argument moves by proxy, for this
                call only (e.g. a method's own threshold); default: the site's.
            task_id: The task the arguments are for: what is put for it alone is evicted
                by :meth:`task_done`. Without it, puts live until the campaign ends.

        Returns:
            ``(args, kwargs, n_proxied)``: the arguments to send and how many travel by proxy
            (reused ones included). A site without ``data:`` gets the arguments unchanged.

        Raises:
            ValueError: ``threshold`` is negative.
        """
        if threshold is not None and threshold < 0:
            raise ValueError(f"threshold must be >= 0 bytes, not {threshold}")
        site_threshold = self._thresholds.get(site)
        if site_threshold is None:
            return tuple(args), dict(kwargs), 0
        limit = site_threshold if threshold is None else threshold
        with self._lock:
            managed = self.store_for(site)
            new_args = tuple(self._maybe_proxy(managed, limit, v, task_id) for v in args)
            new_kwargs = {
                k: self._maybe_proxy(managed, limit, v, task_id) for k, v in kwargs.items()
            }
        n = sum(a is not b for a, b in zip(new_args, args, strict=True))
        n += sum(new_kwargs[k] is not v for k, v in kwargs.items())
        return new_args, new_kwargs, n

    def _move(self, managed: ManagedStore, proxy: Proxy[Any], task_id: str | None) -> Any:
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
            copy = self._put(managed, serialize_for(managed.store, target))
            moved = (proxy, _Shared(proxy=copy, ref=None, owner=task_id))
            self._moved[key] = moved  # keeps the source alive, so its id stays unique
            if task_id is not None:
                self._by_task.setdefault(task_id, []).append(("moved", key, moved[1]))
        elif moved[1].owner is not None and moved[1].owner != task_id:
            moved[1].owner = None
        return moved[1].proxy

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
                    entry.owner = None  # task_done must not count it again
                    self._shared.pop(key, None)
                    self._pinned.pop(key, None)
        return count

    def task_done(self, task_id: str) -> int:
        """Evict now what was put for ``task_id`` alone (its arguments no other task used).

        Call it once the task's result (or final failure) has arrived. Objects shared with
        :meth:`share` or reused by another task stay until the campaign ends. Unknown ids
        (or a second call) evict nothing.

        Returns:
            How many stored objects were evicted.
        """
        count = 0
        with self._lock:
            for table, key, entry in self._by_task.pop(task_id, ()):
                if entry.owner != task_id:
                    continue  # shared meanwhile, or released
                entry.owner = None
                if table == "shared" and self._shared.get(key) is entry:
                    self._shared.pop(key, None)
                    self._pinned.pop(key, None)
                moved = self._moved.get(key)
                if table == "moved" and moved is not None and moved[1] is entry:
                    self._moved.pop(key, None)
                if self._evict(entry.proxy):
                    count += 1
        return count

    def _evict(self, proxy: Proxy[Any]) -> bool:
        factory = get_factory(proxy)
        if not isinstance(factory, StoreFactory):
            return False
        managed = self._owner(proxy)
        if managed is None or managed.closed:
            return False
        try:
            managed.store.evict(factory.key)
        except Exception as exc:  # noqa: BLE001 - e.g. a store behind a cut link
            # the campaign's end removes every key of its stores; a result must not be lost
            logger.warning("store %s: could not evict an object now (%s)", managed.name, exc)
            return False
        return True

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
            self._by_task.clear()
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
