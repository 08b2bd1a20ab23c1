"""The ``data:`` section of a site: where objects too large to travel with a task go.

One connector per site. Objects (task arguments and results) whose serialized size exceeds
``threshold_bytes`` are put in the site's store and travel as a small ProxyStore proxy that
the other side resolves. The store must be reachable from the machine that runs orch *and*
from the site's workers (for ``endpoint``: each side reaches its own peered endpoint).

Adding a connector kind means: a new ``connector`` value, its fields, an entry in
:data:`CONNECTOR_FIELDS`, and a builder in ``orchestrator.data.stores``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

ConnectorKind = Literal["file", "redis", "endpoint", "multi", "globus"]
MemberKind = Literal["file", "redis"]

MAX_THRESHOLD = 8 * 1024 * 1024
"""Largest allowed ``threshold_bytes``: leaves room under the 10 MiB Globus Compute cap."""

CONNECTOR_FIELDS: dict[str, dict[str, bool]] = {
    "file": {"path": True},
    "redis": {"host": True, "port": True},
    "endpoint": {"endpoint": True, "peers": False, "relay": False},
    "multi": {"connectors": True},
    "globus": {"collections": True},
}
"""Connector kind -> its own fields -> whether the field is required."""

_ALL_CONNECTOR_FIELDS = tuple(dict.fromkeys(f for own in CONNECTOR_FIELDS.values() for f in own))

DATA_FIELD_HINTS: dict[str, str] = {
    "connector": "use one of: file (a directory every worker sees), redis (a Redis server), "
    "endpoint (peered ProxyStore endpoints), multi (several by object size), globus "
    "(Globus Transfer collections)",
    "path": "give the directory the store lives in, at the same path on orch's machine and "
    "on the site's workers (e.g. a shared file system)",
    "host": "give the Redis server's host name or address as the workers see it",
    "port": "give the Redis server's port, a whole number from 1 to 65535",
    "endpoint": "give the UUID of the ProxyStore endpoint the site's workers use (shown by "
    "`proxystore-endpoint list` where it runs)",
    "peers": "give a list of ProxyStore endpoint UUIDs, e.g. the endpoint beside orch",
    "relay": "give the relay server address the endpoints register with, e.g. "
    "ws://relay.example.org:8700 (ws:// or wss://)",
    "connectors": "give a list of at least two stores, smallest objects first, each "
    "`connector: file` with `path:` or `connector: redis` with `host:`/`port:`, each but the "
    "last with `max_bytes:`",
    "collections": "give a list of at least two Globus collections, each with `uuid:`, "
    "`endpoint_path:`, `local_path:` and `host_regex:`",
    "threshold_bytes": f"set a whole number of bytes from 0 to {MAX_THRESHOLD} (default "
    "1000000): larger arguments and results move by proxy",
}
"""One hint per field, for one-line configuration error messages."""


def _rule(field: str, problem: str, hint: str) -> PydanticCustomError:
    """A cross-field error in the same shape as ``orchestrator.config.sites`` rule errors."""
    return PydanticCustomError(
        "site_rule",
        "{field}: {problem}; {hint}",
        {"field": field, "problem": problem, "hint": hint},
    )


def _check_fields(obj: BaseModel, kind: str, own: dict[str, bool], where: str) -> None:
    """Required fields of ``kind`` are set and fields of other kinds are not."""
    for field, required in own.items():
        if required and getattr(obj, field) is None:
            raise _rule(
                f"{where}.{field}",
                f"required by connector '{kind}'",
                f"add `{field}:`; {DATA_FIELD_HINTS[field]}",
            )
    for field in _ALL_CONNECTOR_FIELDS:
        if field not in own and getattr(obj, field, None) is not None:
            raise _rule(
                f"{where}.{field}",
                f"not used by connector '{kind}'",
                f"remove it (connector '{kind}' takes: {', '.join(own)})",
            )


class MultiMember(BaseModel):
    """One store of a ``multi`` connector: a File or Redis store and the sizes it takes.

    Attributes:
        connector: ``file`` or ``redis``.
        path: ``file``: directory for the store (as for a ``file`` site).
        host: ``redis``: server host name as the site's workers reach it.
        port: ``redis``: server port.
        max_bytes: Objects up to this many serialized bytes go here (unless an earlier store
            takes them); leave it out on the last store, which takes everything larger.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    connector: MemberKind = Field(description="`file` or `redis`.")
    path: Path | None = Field(default=None, description="file: the store's directory.")
    host: str | None = Field(default=None, min_length=1, description="redis: server host.")
    port: int | None = Field(default=None, ge=1, le=65535, description="redis: server port.")
    max_bytes: int | None = Field(
        default=None,
        ge=0,
        description="Largest serialized object this store takes; none on the last store.",
    )

    def store_key(self) -> tuple[object, ...]:
        """What identifies this member's backing store."""
        if self.connector == "file":
            assert self.path is not None
            return ("file", str(self.path.expanduser().resolve()))
        return ("redis", self.host, self.port)


class GlobusCollection(BaseModel):
    """One Globus collection (directory) a ``globus`` connector keeps in sync.

    Attributes:
        uuid: The Globus collection's UUID.
        endpoint_path: The directory as the collection shows it (Globus File Manager path).
        local_path: The same directory as processes on that system see it.
        host_regex: Regular expression matching the host names of that system; it tells
            each process which collection is local.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    uuid: UUID = Field(description="The collection's UUID.")
    endpoint_path: str = Field(min_length=1, description="Directory inside the collection.")
    local_path: str = Field(min_length=1, description="That directory's local path.")
    host_regex: str = Field(min_length=1, description="Host names of the collection's system.")


class DataConfig(BaseModel):
    """How a site moves large task arguments and results: by ProxyStore reference.

    Examples (site YAML)::

        data:
          connector: file
          path: /shared/scratch/orch-data

        data:
          connector: redis
          host: login01.cluster.example.org
          port: 6379
          threshold_bytes: 500000

        data:                        # workers use their own endpoint, peered via a relay
          connector: endpoint
          endpoint: 3bfb82cd-04d4-40a7-b8ce-2f03f9ce37ac
          peers: [dbd45418-9bb1-46ae-b4fc-d72b8acda768]   # e.g. the endpoint beside orch
          relay: wss://relay.example.org

        data:                        # small objects to Redis, the rest to files
          connector: multi
          connectors:
            - {connector: redis, host: login01, port: 6379, max_bytes: 1000000}
            - {connector: file, path: /shared/scratch/orch-data}

    Rules checked across fields: each connector takes only its own fields (``file``:
    ``path``; ``redis``: ``host``, ``port``; ``endpoint``: ``endpoint`` and optionally
    ``peers``, ``relay``; ``multi``: ``connectors``; ``globus``: ``collections``).

    Attributes:
        connector: Where proxied objects live.
        path: ``file``: directory for the store; orch creates (and at the end removes) a
            campaign sub-directory in it.
        host: ``redis``: server host name as the site's workers reach it.
        port: ``redis``: server port.
        endpoint: ``endpoint``: UUID of the ProxyStore endpoint the site's workers use.
        peers: ``endpoint``: other endpoints of the peer group (e.g. one beside orch).
        relay: ``endpoint``: the relay address the endpoints register with.
        connectors: ``multi``: the stores, smallest objects first.
        collections: ``globus``: the Globus collections kept in sync (two or more).
        threshold_bytes: Objects whose serialized size exceeds this move by proxy.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    connector: ConnectorKind = Field(
        description="Where proxied objects live: `file` (a directory that orch and every "
        "worker of the site see at the same path), `redis` (a Redis server both reach), "
        "`endpoint` (ProxyStore endpoints peered through a relay: each side uses its own), "
        "`multi` (several file/redis stores chosen by object size) or `globus` (directories "
        "kept in sync by Globus Transfer)."
    )
    path: Path | None = Field(
        default=None,
        description="file connector: directory for the store. orch creates a sub-directory "
        "per campaign in it and removes that sub-directory when the campaign ends.",
    )
    host: str | None = Field(
        default=None,
        min_length=1,
        description="redis connector: the server's host name or address, as the site's "
        "workers reach it (`localhost` only works for a site on orch's machine).",
    )
    port: int | None = Field(
        default=None, ge=1, le=65535, description="redis connector: the server's port."
    )
    endpoint: UUID | None = Field(
        default=None,
        description="endpoint connector: UUID of the ProxyStore endpoint the site's workers "
        "use. Workers find it in their ProxyStore home (`$PROXYSTORE_HOME`, default "
        "`~/.local/share/proxystore`); set that in `worker_init` if it is elsewhere.",
    )
    peers: list[UUID] | None = Field(
        default=None,
        description="endpoint connector: more endpoints of the peer group, e.g. the one "
        "running beside orch when orch does not run beside a site's endpoint.",
    )
    relay: str | None = Field(
        default=None,
        description="endpoint connector: the relay server the endpoints register with "
        "(`ws://` or `wss://`). orch checks it answers before the campaign starts; sites "
        "naming different relays get different stores (orch moves objects between them).",
    )
    connectors: list[MultiMember] | None = Field(
        default=None,
        description="multi connector: two or more file/redis stores, smallest objects "
        "first; each object goes to the first whose `max_bytes` it fits.",
    )
    collections: list[GlobusCollection] | None = Field(
        default=None,
        description="globus connector: two or more Globus collections whose directories "
        "are kept in sync (every put is transferred to all of them).",
    )
    threshold_bytes: int = Field(
        default=1_000_000,
        ge=0,
        le=MAX_THRESHOLD,
        description="Task arguments and results whose serialized size exceeds this many "
        "bytes move by proxy instead of inside the task message. At most 8 MiB, because "
        "Globus Compute refuses task messages over 10 MiB.",
    )

    @field_validator("relay")
    @classmethod
    def _relay_address(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"wss?://[^\s/:]+(:\d+)?(/\S*)?", value):
            raise _rule(
                "data.relay",
                f"{value!r} is not a ws:// or wss:// address",
                DATA_FIELD_HINTS["relay"],
            )
        return value

    @model_validator(mode="after")
    def _connector_fields(self) -> DataConfig:
        _check_fields(self, self.connector, CONNECTOR_FIELDS[self.connector], "data")
        if self.connectors is not None:
            self._check_members(self.connectors)
        if self.collections is not None:
            self._check_collections(self.collections)
        return self

    @staticmethod
    def _check_members(members: list[MultiMember]) -> None:
        if len(members) < 2:
            raise _rule(
                "data.connectors",
                f"has {len(members)} store(s)",
                "give two or more (with one store use that connector directly)",
            )
        seen: dict[tuple[object, ...], int] = {}
        previous: int | None = None
        for i, member in enumerate(members):
            where = f"data.connectors[{i}]"
            _check_fields(member, member.connector, CONNECTOR_FIELDS[member.connector], where)
            last = i == len(members) - 1
            if last and member.max_bytes is not None:
                raise _rule(
                    f"{where}.max_bytes",
                    "set on the last store",
                    "remove it: the last store takes every object larger than the others",
                )
            if not last and member.max_bytes is None:
                raise _rule(
                    f"{where}.max_bytes",
                    "required on every store but the last",
                    "add `max_bytes:`, the largest serialized object this store takes",
                )
            if member.max_bytes is not None:
                if previous is not None and member.max_bytes <= previous:
                    raise _rule(
                        f"{where}.max_bytes",
                        f"{member.max_bytes} is not larger than the previous store's {previous}",
                        "list the stores smallest objects first, with growing `max_bytes`",
                    )
                previous = member.max_bytes
            first = seen.setdefault(member.store_key(), i)
            if first != i:
                raise _rule(
                    where,
                    f"is the same store as data.connectors[{first}]",
                    "merge them into one entry",
                )

    @staticmethod
    def _check_collections(collections: list[GlobusCollection]) -> None:
        if len(collections) < 2:
            raise _rule(
                "data.collections",
                f"has {len(collections)} collection(s)",
                "give two or more: Globus keeps one directory per system in sync",
            )
        seen: set[UUID] = set()
        for i, collection in enumerate(collections):
            if collection.uuid in seen:
                raise _rule(
                    f"data.collections[{i}].uuid",
                    f"{collection.uuid} is listed twice",
                    "give each collection once",
                )
            seen.add(collection.uuid)

    def store_key(self) -> tuple[object, ...]:
        """What identifies the store this config describes (sites with equal keys share one).

        ``threshold_bytes`` is not part of it: two sites may share a store with different
        thresholds. All ``endpoint`` sites naming the same relay share one store: each
        process uses the endpoint of the peer group it finds locally.
        """
        if self.connector == "file":
            assert self.path is not None
            return ("file", str(self.path.expanduser().resolve()))
        if self.connector == "redis":
            return ("redis", self.host, self.port)
        if self.connector == "endpoint":
            return ("endpoint", self.relay)
        if self.connector == "multi":
            assert self.connectors is not None
            return ("multi", *((m.store_key(), m.max_bytes) for m in self.connectors))
        assert self.collections is not None
        return (
            "globus",
            *sorted((str(c.uuid), c.endpoint_path, c.local_path) for c in self.collections),
        )

    def endpoint_group(self) -> list[str]:
        """``endpoint``: this site's endpoint and its peers, as UUID strings (else empty)."""
        if self.endpoint is None:
            return []
        return [str(self.endpoint), *(str(p) for p in self.peers or ())]
