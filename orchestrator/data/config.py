"""The ``data:`` section of a site: where objects too large to travel with a task go.

One connector per site. Objects (task arguments and results) whose serialized size exceeds
``threshold_bytes`` are put in the site's store and travel as a small ProxyStore proxy that
the other side resolves. The store must be reachable at the same address from the machine
that runs orch *and* from the site's workers.

Adding a connector kind later (e.g. ``endpoint``, ``multi``) means: a new ``connector`` value,
its fields, an entry in :data:`CONNECTOR_FIELDS`, and a builder in ``orchestrator.data.stores``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

ConnectorKind = Literal["file", "redis"]

MAX_THRESHOLD = 8 * 1024 * 1024
"""Largest allowed ``threshold_bytes``: leaves room under the 10 MiB Globus Compute cap."""

CONNECTOR_FIELDS: dict[str, dict[str, bool]] = {
    "file": {"path": True},
    "redis": {"host": True, "port": True},
}
"""Connector kind -> its own fields -> whether the field is required."""

_ALL_CONNECTOR_FIELDS = ("path", "host", "port")

DATA_FIELD_HINTS: dict[str, str] = {
    "connector": "use one of: file (a directory every worker sees), redis (a Redis server)",
    "path": "give the directory the store lives in, at the same path on orch's machine and "
    "on the site's workers (e.g. a shared file system)",
    "host": "give the Redis server's host name or address as the workers see it",
    "port": "give the Redis server's port, a whole number from 1 to 65535",
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

    Rules checked across fields: ``file`` needs ``path`` and takes no ``host``/``port``;
    ``redis`` needs ``host`` and ``port`` and takes no ``path``.

    Attributes:
        connector: Where proxied objects live: ``file`` or ``redis``.
        path: ``file``: directory for the store; orch creates (and at the end removes) a
            campaign sub-directory in it.
        host: ``redis``: server host name as the site's workers reach it.
        port: ``redis``: server port.
        threshold_bytes: Objects whose serialized size exceeds this move by proxy.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    connector: ConnectorKind = Field(
        description="Where proxied objects live: `file` (a directory that orch and every "
        "worker of the site see at the same path) or `redis` (a Redis server both reach)."
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
    threshold_bytes: int = Field(
        default=1_000_000,
        ge=0,
        le=MAX_THRESHOLD,
        description="Task arguments and results whose serialized size exceeds this many "
        "bytes move by proxy instead of inside the task message. At most 8 MiB, because "
        "Globus Compute refuses task messages over 10 MiB.",
    )

    @model_validator(mode="after")
    def _connector_fields(self) -> DataConfig:
        own = CONNECTOR_FIELDS[self.connector]
        for field, required in own.items():
            if required and getattr(self, field) is None:
                raise _rule(
                    f"data.{field}",
                    f"required by connector '{self.connector}'",
                    f"add `{field}:`; {DATA_FIELD_HINTS[field]}",
                )
        for field in _ALL_CONNECTOR_FIELDS:
            if field not in own and getattr(self, field) is not None:
                raise _rule(
                    f"data.{field}",
                    f"not used by connector '{self.connector}'",
                    f"remove it (connector '{self.connector}' takes: {', '.join(own)})",
                )
        return self

    def store_key(self) -> tuple[object, ...]:
        """What identifies the store this config describes (sites with equal keys share one).

        ``threshold_bytes`` is not part of it: two sites may share a store with different
        thresholds.
        """
        if self.connector == "file":
            assert self.path is not None
            return ("file", str(self.path.expanduser().resolve()))
        return ("redis", self.host, self.port)
