"""Functions the data-plane tests run on real workers (imported there from tests/)."""

from __future__ import annotations


def endpoint_used(value: bytes, store_name: str) -> tuple[int, str | None]:
    """The argument's length, and the endpoint this worker's copy of the store talks to."""
    from proxystore.store import get_store

    store = get_store(store_name)
    if store is None:
        return len(value), None
    return len(value), str(getattr(store.connector, "endpoint_uuid", None))


def backends_used(value: bytes, store_name: str) -> tuple[int, list[str]]:
    """The argument's length, and the member connectors of this worker's multi store."""
    from proxystore.store import get_store

    store = get_store(store_name)
    members = getattr(store.connector, "connectors", {}) if store is not None else {}
    return len(value), sorted(members)
