"""Worker side of data movement: resolve proxied arguments, proxy large results.

Shipped to workers (by reference) next to :mod:`orchestrator.apps.runtime`, so it imports
nothing from the orchestrator's control side: only the standard library and ProxyStore.

The site puts ``{"data": {"store": <StoreConfig as a dict>, "threshold_bytes": N}}`` in the
task context (see ``orchestrator.data.DataPlane.result_context``). From it, a worker rebuilds
and registers the site's store on first use (ProxyStore's ``get_or_create_store``) and keeps
it for the life of the process. Workers never close a store: closing can delete the data of
everyone using it.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from proxystore.connectors.redis import RedisConnector, RedisKey
from proxystore.proxy import Proxy, ProxyResolveError, extract, get_factory
from proxystore.serialize import BytesLike
from proxystore.store import get_store
from proxystore.store.base import Store
from proxystore.store.config import StoreConfig
from proxystore.store.exceptions import ProxyResolveMissingKeyError, StoreExistsError
from proxystore.store.factory import StoreFactory
from proxystore.store.lifetimes import Lifetime

CONTEXT_KEY = "data"
"""Key of the data-movement settings in a task's context."""


class DataMovementError(RuntimeError):
    """A proxy could not be resolved or created; a plain, picklable exception.

    ``run_task`` reports ``reason`` and ``details`` of a failing task's exception.
    """

    reason = "data"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.details))


class ProxyResolveFailed(DataMovementError):
    """A proxied argument could not be resolved on the worker (or a result on orch)."""

    reason = "proxy_resolve"


class ProxyPutFailed(DataMovementError):
    """A large result could not be put in the site's store."""

    reason = "proxy_put"


class PrefixedRedisConnector(RedisConnector):
    """A Redis connector whose keys all start with ``prefix``.

    ``close(clear=True)`` deletes only this prefix's keys (the stock connector FLUSHDBs), so
    orch can remove everything a campaign left, results of lost tasks included, without
    touching other users of the database.

    Args:
        hostname: Redis server host.
        port: Redis server port.
        prefix: Start of every key, e.g. ``orch:<campaign>:``.
        clear: Default for ``close(clear=...)``.
    """

    def __init__(self, hostname: str, port: int, prefix: str, clear: bool = False) -> None:
        super().__init__(hostname, port, clear=clear)
        self.prefix = prefix

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hostname={self.hostname}, port={self.port}, " + (
            f"prefix={self.prefix!r})"
        )

    def config(self) -> dict[str, Any]:
        """The configuration that rebuilds this connector."""
        return {**super().config(), "prefix": self.prefix}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PrefixedRedisConnector:
        """Rebuild the connector from :meth:`config`."""
        return cls(**config)

    def _key(self) -> RedisKey:
        return RedisKey(redis_key=f"{self.prefix}{uuid.uuid4()}")

    def new_key(self, obj: BytesLike | None = None) -> RedisKey:
        """A new key under the prefix."""
        return self._key()

    def put(self, obj: BytesLike) -> RedisKey:
        """Store serialized bytes under a new prefixed key."""
        key = self._key()
        self._redis_client.set(key.redis_key, bytes(obj))
        return key

    def put_batch(self, objs: Sequence[BytesLike]) -> list[RedisKey]:
        """Store several serialized objects under new prefixed keys."""
        keys = [self._key() for _ in objs]
        if keys:
            self._redis_client.mset(
                {k.redis_key: bytes(o) for k, o in zip(keys, objs, strict=True)}
            )
        return keys

    def keys(self) -> list[str]:
        """The keys now under this connector's prefix."""
        return [
            k.decode() if isinstance(k, bytes) else str(k)
            for k in self._redis_client.scan_iter(match=f"{self.prefix}*", count=1000)
        ]

    def close(self, clear: bool | None = None) -> None:
        """Close the client; with ``clear``, first delete every key under the prefix."""
        if self.clear if clear is None else clear:
            batch: list[str] = []
            for key in self.keys():
                batch.append(key)
                if len(batch) >= 1000:
                    self._redis_client.delete(*batch)
                    batch.clear()
            if batch:
                self._redis_client.delete(*batch)
        self._redis_client.close()


def is_proxy(value: Any) -> bool:
    """Whether ``value`` is a ProxyStore proxy (checked without resolving it)."""
    return isinstance(value, Proxy)


def obviously_small(value: Any, threshold: int) -> bool:
    """Cheap check that skips serializing values that cannot exceed the threshold."""
    if value is None or isinstance(value, bool | int | float | complex):
        return True
    if isinstance(value, str | bytes | bytearray):
        return 4 * len(value) + 64 <= threshold
    if type(value).__module__ == "numpy" and type(value).__name__ == "ndarray":
        # numeric arrays serialize to their bytes plus a small header
        return not value.dtype.hasobject and value.nbytes + 1024 <= threshold
    return False


def serialize_for(store: Store[Any], value: Any) -> bytes:
    """Serialize ``value`` exactly as ``store.put`` would (its size is what the threshold means)."""
    return bytes(store.serializer(value))


def _passthrough(data: Any) -> Any:
    return data


def proxy_serialized(
    store: Store[Any],
    data: bytes,
    *,
    evict: bool = False,
    lifetime: Lifetime | None = None,
) -> Proxy[Any]:
    """Put bytes made by :func:`serialize_for` in ``store`` and return a proxy of the object.

    The value is serialized once: for the size check and for the put.
    """
    key = store.put(data, serializer=_passthrough, lifetime=lifetime)
    return store.proxy_from_key(key, evict=evict)


_OPEN_LOCK = threading.Lock()


def open_store(config: StoreConfig | Mapping[str, Any]) -> Store[Any]:
    """The store registered in this process under ``config``'s name, built and registered first.

    Unlike ProxyStore's ``get_or_create_store``, the connector is rebuilt with its
    ``from_config`` (ProxyStore 1.1.0 passes the options as keyword arguments instead, which
    fails for a ``MultiConnector``). The store is never closed here.

    Raises:
        Exception: Whatever the connector raises when it cannot be built (e.g. an
            ``EndpointConnector`` that finds no endpoint of its group on this machine).
    """
    name = config["name"] if isinstance(config, Mapping) else config.name
    store = get_store(name)
    if store is not None:
        return store
    with _OPEN_LOCK:
        store = get_store(name)
        if store is not None:
            return store
        if not isinstance(config, StoreConfig):
            config = StoreConfig.model_validate(config)
        kind = config.connector.get_connector_type()
        connector = kind.from_config(dict(config.connector.options))
        try:
            return Store(
                config.name,
                connector,
                serializer=config.serializer,
                deserializer=config.deserializer,
                cache_size=config.cache_size,
                metrics=config.metrics,
                populate_target=config.populate_target,
                register=True,
            )
        except StoreExistsError:  # ProxyStore itself registered it meanwhile (another thread)
            existing = get_store(config.name)
            assert existing is not None
            return existing


def store_from_context(context: Mapping[str, Any] | None) -> tuple[Store[Any], int] | None:
    """The site's store (registered in this process, never closed) and threshold, if any.

    Returns:
        ``(store, threshold_bytes)``, or ``None`` when the site moves no data by proxy.
    """
    settings = (context or {}).get(CONTEXT_KEY)
    if not settings:
        return None
    return open_store(settings["store"]), int(settings["threshold_bytes"])


def maybe_proxy_result(value: Any, context: Mapping[str, Any] | None) -> Any:
    """Return ``value``, or a proxy of it when its serialized size exceeds the threshold.

    The proxy is single use (``evict=True``): the object is deleted from the store once
    orch resolves it. Orch should also hand result proxies it receives to
    ``DataPlane.adopt`` so that results never resolved are deleted at the campaign's end.

    Args:
        value: What the task's function returned.
        context: The task context (``run_task``'s ``context``).

    Raises:
        ProxyPutFailed: The store could not be reached or refused the object.
    """
    settings = (context or {}).get(CONTEXT_KEY)
    if not settings or is_proxy(value):
        return value
    threshold = int(settings["threshold_bytes"])
    if obviously_small(value, threshold):
        return value
    try:
        found = store_from_context(context)
    except Exception as exc:  # noqa: BLE001 - e.g. the store directory cannot be created
        raise ProxyPutFailed(
            f"cannot open the site's data store: {type(exc).__name__}: {exc}",
            {"cause": type(exc).__name__},
        ) from None
    assert found is not None
    store = found[0]
    data = serialize_for(store, value)
    if len(data) <= threshold:
        return value
    try:
        return proxy_serialized(store, data, evict=True)
    except Exception as exc:  # noqa: BLE001 - any store failure becomes one plain error
        raise ProxyPutFailed(
            f"could not put a {len(data)}-byte result in store '{store.name}': "
            f"{type(exc).__name__}: {exc}",
            {"store": store.name, "size": len(data), "cause": type(exc).__name__},
        ) from None


def _describe_proxy(proxy: Proxy[Any]) -> dict[str, Any]:
    factory = get_factory(proxy)
    if isinstance(factory, StoreFactory):
        return {"store": factory.store_config.name, "key": repr(factory.key)}
    return {"factory": type(factory).__name__}


def resolve_failure(exc: BaseException, where: str = "") -> ProxyResolveFailed:
    """Turn a ProxyStore resolve error into a plain, picklable :class:`ProxyResolveFailed`."""
    cause: BaseException = exc
    if isinstance(exc, ProxyResolveError) and isinstance(exc.cause, BaseException):
        cause = exc.cause
    details: dict[str, Any] = {"cause": type(cause).__name__}
    if isinstance(cause, ProxyResolveMissingKeyError):
        details.update(store=cause.store_name, key=repr(cause.key))
        text = (
            f"object {cause.key!r} is not in store '{cause.store_name}' (evicted, the "
            "campaign ended, or the store is not shared between orch and this worker)"
        )
    else:
        text = f"{type(cause).__name__}: {cause}"
    prefix = f"cannot resolve {where}: " if where else "cannot resolve a proxy: "
    return ProxyResolveFailed(prefix + text, details)


def is_resolve_error(exc: BaseException) -> bool:
    """Whether ``exc`` is one of ProxyStore's (unpicklable) resolve errors."""
    return isinstance(exc, ProxyResolveError | ProxyResolveMissingKeyError)


def _resolve(value: Any, where: str) -> Any:
    if not is_proxy(value):
        return value
    try:
        factory = get_factory(value)
        if isinstance(factory, StoreFactory):
            open_store(factory.store_config)  # registered before ProxyStore rebuilds it
        return extract(value)
    except Exception as exc:  # noqa: BLE001 - never let ProxyResolveError escape
        error = resolve_failure(exc, where)
        error.details.update(_describe_proxy(value))
        raise error from None


def resolve_arguments(
    args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Resolve the proxies among the top-level arguments, before calling the function.

    Resolved proxies are replaced by their objects. Proxies nested in containers are left as
    they are (they resolve when used).

    Returns:
        The arguments with proxies replaced by their targets.

    Raises:
        ProxyResolveFailed: A proxy could not be resolved (never ProxyStore's own errors,
            which cannot be unpickled).
    """
    new_args = tuple(_resolve(v, f"argument {i}") for i, v in enumerate(args))
    new_kwargs = {k: _resolve(v, f"argument {k!r}") for k, v in kwargs.items()}
    return new_args, new_kwargs
