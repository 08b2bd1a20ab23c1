"""Task and Result records: what a task asked for, where it ran, what came back, and when."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.apps.failures import (
    ALIASES,
    RETRIED_BY_DEFAULT,
    FailureReason,
    FailureRecord,
    failure_record,
    parse_reason,
)
from orchestrator.ids import new_id
from orchestrator.resources import Granted, Resources, lenient

__all__ = [
    "ALIASES",
    "CANCELLED",
    "INTERRUPTED",
    "ColmenaTimestamps",
    "RETRIED_BY_DEFAULT",
    "SITE_FAILURE",
    "TIMEOUT",
    "FailureInfo",
    "FailureReason",
    "FailureRecord",
    "Move",
    "Result",
    "Sizes",
    "Task",
    "TimeSpans",
    "Timestamps",
    "WorkerInformation",
    "failure_record",
    "is_proxy",
    "parse_reason",
]

SITE_FAILURE = FailureReason.SITE_FAILURE
"""``FailureInfo.reason`` of failures caused by the site (lost worker, unreachable service...),
not by the task: the transient kind worth a retry elsewhere."""

TIMEOUT = FailureReason.TIMEOUT
"""``FailureInfo.reason`` of a task stopped because it ran past its wall time."""

INTERRUPTED = FailureReason.INTERRUPTED
"""``FailureInfo.reason`` of a task still running when the campaign was stopped."""

CANCELLED = FailureReason.CANCELLED
"""``FailureInfo.reason`` of a task the user cancelled (``orch cancel``); never retried."""

BAD_INPUT = FailureReason.BAD_INPUT
"""``FailureInfo.reason`` of a task whose inputs (or resource request) cannot be used."""


def _with_defaults(model: type[BaseModel], values: dict[str, Any]) -> None:
    """Give ``values`` (a pickled model's fields) the defaults of fields added since."""
    for name, info in model.model_fields.items():
        if name not in values and not info.is_required():
            values[name] = info.get_default(call_default_factory=True)


class FailureInfo(BaseModel):
    """Why a task failed: the thinker's view of a :class:`FailureRecord`.

    ``reason`` is a :class:`FailureReason` member, or the plain string of a reason this orch
    does not know (a newer orch's, a campaign's own): a result is never refused for its
    reason. Retired names (``walltime``) read back as their member. Pickled (the journal),
    the reason is a plain string, so any orch version can read the result back.
    """

    exception_type: str = Field(description="Qualified name of the exception class")
    message: str = Field(description="str() of the exception")
    traceback: str = Field(default="", description="Tail of the formatted traceback")
    where: Literal["task", "site"] = Field(
        default="task", description="'task' (the function raised) or 'site'"
    )
    reason: FailureReason | str | None = Field(
        default=None,
        union_mode="left_to_right",
        description="Machine-readable class of failure (a FailureReason, e.g. 'timeout', "
        "'not_converged'; 'site_failure' for failures of the site rather than the task); "
        "None when the task raised an exception that names no reason",
    )
    details: dict[str, Any] | None = Field(
        default=None, description="Structured facts about the failure (exit code, output tail...)"
    )

    @field_validator("reason", mode="before")
    @classmethod
    def _known_reason(cls, value: Any) -> FailureReason | str | None:
        return parse_reason(value)

    @property
    def exception(self) -> str:
        """The exception as Colmena's ``failure_info.exception`` has it: ``repr(exc)``."""
        name = self.exception_type.rpartition(".")[2] or self.exception_type
        return f"{name}({self.message!r})"

    def record(self) -> FailureRecord:
        """This failure as plain data (the wire and ``Outcome.failure`` form)."""
        return failure_record(
            self.exception_type,
            self.message,
            where=self.where,
            reason=self.reason,
            traceback=self.traceback,
            details=self.details,
        )

    def __getstate__(self) -> dict[Any, Any]:
        """Pickle with the reason as a plain string (readable by any orch version)."""
        state = super().__getstate__()
        values = dict(state.get("__dict__", {}))
        reason = values.get("reason")
        if reason is not None:
            values["reason"] = str(reason)
        return {**state, "__dict__": values}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Unpickle: fields added since get their defaults; the reason is read as above."""
        values = state.get("__dict__", {})
        _with_defaults(type(self), values)
        values["reason"] = parse_reason(values.get("reason"))
        super().__setstate__(state)


class Timestamps(BaseModel):
    """Epoch seconds (``time.time()``) at each hop of a task's life."""

    created: float
    sent: float | None = Field(default=None, description="Handed to the site")
    started: float | None = Field(default=None, description="Function started on the worker")
    finished: float | None = Field(default=None, description="Function finished on the worker")
    returned: float | None = Field(default=None, description="Result back in the orchestrator")
    received: float | None = Field(default=None, description="Handed to the thinker")


class Move(BaseModel):
    """One time a task left a site before finishing: where it was and why it moved on."""

    site: str | None = Field(description="Site the attempt ran on (None: no site took it)")
    reason: str = Field(description="Failure reason of the attempt, e.g. 'site_failure'")
    message: str = Field(default="", description="The attempt's failure message (one line)")
    time: float = Field(description="When the attempt failed (epoch seconds)")


class Sizes(BaseModel):
    """Serialized sizes in bytes (``None`` where the backend does not expose them)."""

    inputs: int | None = None
    value: int | None = None


_NAN = math.nan
_PROXIED = {"proxy": True}


class ColmenaTimestamps(BaseModel):
    """A task's hops under Colmena's names (``result.timestamp``), NaN where unknown.

    orch's own names are in ``result.timestamps``; the two name the same moments: the
    thinker is its own task server, so the request is received when it is created.
    """

    created: float
    input_received: float = Field(default=_NAN, description="The dispatcher took the request")
    start_task_submission: float = Field(default=_NAN, description="Handed to a site")
    compute_started: float = Field(default=_NAN, description="Function started on the worker")
    compute_ended: float = Field(default=_NAN, description="Function finished on the worker")
    task_received: float = Field(default=_NAN, description="Outcome back in the orchestrator")
    result_sent: float = Field(default=_NAN, description="Put in the topic's queue")
    result_received: float = Field(default=_NAN, description="Taken by the thinker")


class TimeSpans(BaseModel):
    """Seconds between a task's events, under Colmena's names (``result.time``)."""

    running: float = Field(default=_NAN, description="Run time of the function on the worker")
    serialize_inputs: float = _NAN
    deserialize_inputs: float = _NAN
    serialize_results: float = _NAN
    deserialize_results: float = _NAN
    async_resolve_proxies: float = _NAN
    proxy: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    additional: dict[str, float] = Field(
        default_factory=dict,
        description="orch's own spans: queued (sent - created), transfer (returned - finished)",
    )


class WorkerInformation(BaseModel):
    """The worker that ran a task (Colmena's ``result.worker_info``)."""

    model_config = ConfigDict(extra="allow")

    hostname: str | None = None
    pid: int | None = None


def _nan(value: float | None) -> float:
    return _NAN if value is None else value


def _colmena_inputs(values: Any) -> Any:
    """Read Colmena's ``inputs=(args, kwargs)`` and give a hand-made result its defaults."""
    if not isinstance(values, dict):
        return values
    values = dict(values)
    inputs = values.pop("inputs", None)
    if inputs is not None:
        args, kwargs = inputs
        values.setdefault("args", tuple(args))
        values.setdefault("kwargs", dict(kwargs))
    if "task_id" not in values:
        values["task_id"] = new_id()
    values.setdefault("topic", "default")
    if values.get("method") is None:
        values["method"] = ""
    if "timestamps" not in values:
        values["timestamps"] = Timestamps(created=time.time())
    return values


class Result(BaseModel):
    """The outcome of one task, as the thinker sees it (a superset of Colmena's fields).

    Colmena's names read the same values: ``inputs``, ``timestamp`` (its timestamp names),
    ``time`` (its time spans), ``message_sizes``, ``worker_info``, ``complete``,
    ``failure_info.exception``, and ``json(exclude=...)``. A result can be made by hand as
    in Colmena: ``Result(inputs=((1,), {}), value=4)``.
    """

    # bytes go to JSON as URL-safe base64 (results files): raw bytes are rarely UTF-8
    model_config = ConfigDict(arbitrary_types_allowed=True, ser_json_bytes="base64")

    task_id: str
    method: str
    topic: str
    args: tuple[Any, ...] | None = None
    kwargs: dict[str, Any] | None = None
    value: Any = None
    success: bool | None = None
    failure_info: FailureInfo | None = None
    site: str | None = None
    model_version: str | None = Field(
        default=None,
        description="Model version that chose or served this task (e.g. 'ip-surrogate/3')",
    )
    worker_host: str | None = None
    worker_pid: int | None = None
    remote_task_id: str | None = Field(
        default=None, description="The task's id at a Globus site's service (Globus Compute)"
    )
    image: str | None = Field(
        default=None, description="Container image the task ran in (the site's container.image)"
    )
    image_digest: str | None = Field(
        default=None, description="sha256 digest of that image, as deployed and verified"
    )
    retries: int = 0
    moves: list[Move] = Field(
        default_factory=list,
        description="Earlier attempts that failed and were retried (site and reason), oldest "
        "first; ``site`` is where the task finally ran",
    )
    replayed: bool = Field(
        default=False,
        description="Taken from the journal of an earlier run (``--resume``), not run again",
    )
    task_info: dict[str, Any] = Field(default_factory=dict)
    resources: Resources = Field(
        default_factory=Resources,
        description="What the task asked for (nodes, ranks, threads, GPUs)",
    )
    granted: Granted | None = Field(
        default=None, description="What it got on the worker: nodes, ranks and hosts"
    )
    keep_inputs: bool = Field(
        default=True, description="Whether the inputs were kept (else args/kwargs are empty)"
    )
    timestamps: Timestamps
    sizes: Sizes = Field(default_factory=Sizes)
    inputs_by_proxy: list[int | str] = Field(
        default_factory=list,
        description="Inputs (positions, keyword names) that went to the site by proxy (over "
        'the data plane\'s threshold): results files write them as {"proxy": true}, and the '
        "journal does not keep them (a replayed result gets the new call's own, equal inputs)",
    )

    _read_colmena = model_validator(mode="before")(_colmena_inputs)

    @field_validator("resources", mode="before")
    @classmethod
    def _recorded_resources(cls, value: Any) -> Resources:
        """Resources as recorded (older files hold any mapping): read leniently."""
        return lenient(value)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Unpickle; a result journaled by an older orch gets the defaults of newer fields."""
        _with_defaults(type(self), state.get("__dict__", {}))
        super().__setstate__(state)

    @property
    def inputs(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword inputs, Colmena-style (empty when not kept)."""
        return (self.args or (), self.kwargs or {})

    @property
    def complete(self) -> bool:
        """Whether this is the task's final result (Colmena's field; orch has no other)."""
        return self.success is not None

    @property
    def timestamp(self) -> ColmenaTimestamps:
        """The task's hops under Colmena's names (NaN where not known)."""
        t = self.timestamps
        return ColmenaTimestamps(
            created=t.created,
            input_received=t.created,
            start_task_submission=_nan(t.sent),
            compute_started=_nan(t.started),
            compute_ended=_nan(t.finished),
            task_received=_nan(t.returned),
            result_sent=_nan(t.returned),
            result_received=_nan(t.received),
        )

    @property
    def time(self) -> TimeSpans:
        """Seconds between the task's events under Colmena's names (NaN where not known).

        ``running`` is measured on the worker; orch does not time serialization apart, so
        those spans are NaN; ``additional`` holds ``queued`` and ``transfer``.
        """
        t = self.timestamps
        extra: dict[str, float] = {}
        if t.sent is not None:
            extra["queued"] = t.sent - t.created
        if t.finished is not None and t.returned is not None:
            extra["transfer"] = t.returned - t.finished
        running = _NAN
        if t.started is not None and t.finished is not None:
            running = t.finished - t.started
        return TimeSpans(running=running, additional=extra)

    @property
    def message_sizes(self) -> dict[str, int]:
        """Serialized sizes in bytes, Colmena's ``{'inputs': ..., 'value': ...}``."""
        return {k: v for k, v in self.sizes.model_dump().items() if v is not None}

    @property
    def worker_info(self) -> WorkerInformation | None:
        """The worker that ran the task (``None`` when it ran nowhere)."""
        if self.worker_host is None and self.worker_pid is None:
            return None
        return WorkerInformation(hostname=self.worker_host, pid=self.worker_pid)

    def json(  # type: ignore[override]
        self,
        *,
        include: Collection[str] | Mapping[str, Any] | None = None,
        exclude: Collection[str] | Mapping[str, Any] | None = None,
        exclude_none: bool = False,
        indent: int | None = None,
        **_: Any,
    ) -> str:
        """One JSON document with orch's fields and Colmena's (``inputs``, ``timestamp``...).

        As in Colmena, ``exclude={'inputs'}`` leaves out the inputs (orch's ``args`` and
        ``kwargs`` too) and ``exclude={'value'}`` the value; values JSON cannot hold are
        written as their ``repr``, and a proxied value as ``{"proxy": true}``.

        Args:
            include: Only these top-level fields (a set, or a dict whose true values count).
            exclude: Leave out these top-level fields (a set, or a dict as above).
            exclude_none: Leave out fields that are ``None``.
            indent: Indent the JSON by this many spaces.
        """
        model = self._for_json()
        data: dict[str, Any] = model.model_dump(mode="json", fallback=repr)
        data["inputs"] = [data.get("args") or [], data.get("kwargs") or {}]
        data["timestamp"] = self.timestamp.model_dump(mode="json")
        data["time"] = self.time.model_dump(mode="json")
        data["message_sizes"] = self.message_sizes
        info = self.worker_info
        data["worker_info"] = None if info is None else info.model_dump(mode="json")
        data["complete"] = self.complete
        left_out = _names(exclude)
        if "inputs" in left_out:
            left_out |= {"args", "kwargs"}
        kept = _names(include)
        data = {
            key: value
            for key, value in data.items()
            if key not in left_out
            and (not kept or key in kept)
            and not (exclude_none and value is None)
        }
        return json.dumps(data, indent=indent, default=repr)

    def to_json(self) -> str:
        """One JSON line; bytes are URL-safe base64, other values JSON cannot hold their ``repr``.

        A value that moved by proxy is written as ``{"proxy": true}``: serializing it would
        resolve it (and use up a single-use result proxy). So are the inputs that went to
        the site by proxy (``inputs_by_proxy``): bulk data stays in the data plane.
        """
        return self._for_json().model_dump_json(fallback=repr)

    def _for_json(self) -> Result:
        """This result with proxies (and inputs sent by proxy) as ``{"proxy": true}``."""
        update: dict[str, Any] = {}
        if is_proxy(self.value):
            update["value"] = _PROXIED
        if self.inputs_by_proxy:
            update["args"], update["kwargs"] = self._inputs_replaced(_PROXIED)
        return self.model_copy(update=update) if update else self

    def _inputs_replaced(self, marker: Any) -> tuple[tuple[Any, ...] | None, dict[str, Any] | None]:
        args, kwargs = self.args, self.kwargs
        if args is not None:
            args = tuple(
                marker if i in self.inputs_by_proxy else value for i, value in enumerate(args)
            )
        if kwargs is not None:
            kwargs = {k: marker if k in self.inputs_by_proxy else v for k, v in kwargs.items()}
        return args, kwargs

    def without_proxied_inputs(self) -> Result:
        """A shallow copy with the inputs sent by proxy set to ``None`` (what is journaled)."""
        if not self.inputs_by_proxy:
            return self
        args, kwargs = self._inputs_replaced(None)
        return self.model_copy(update={"args": args, "kwargs": kwargs})

    def restore_inputs(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        """Put back the inputs :meth:`without_proxied_inputs` left out, from an equal call."""
        if not self.inputs_by_proxy or not self.keep_inputs:
            return
        if self.args is not None:
            self.args = tuple(
                args[i] if i in self.inputs_by_proxy and i < len(args) else value
                for i, value in enumerate(self.args)
            )
        if self.kwargs is not None:
            self.kwargs = {
                k: kwargs.get(k, v) if k in self.inputs_by_proxy else v
                for k, v in self.kwargs.items()
            }


@dataclass
class Task:
    """A task inside the orchestrator, from ``send_inputs`` until its result is delivered."""

    method: str
    topic: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    keep_inputs: bool = True
    max_retries: int = 0
    resources: Resources = field(default_factory=Resources)
    resources_given: bool = False
    """Whether the call gave ``resources`` (else the method's default applies)."""
    task_info: dict[str, Any] = field(default_factory=dict)
    task_id: str = field(default_factory=new_id)
    created: float = field(default_factory=time.time)
    retries: int = 0
    site: str | None = None
    sent: float | None = None
    slots: int = 1
    placed_slots: int = 0
    """Slots the current attempt takes at its site (set when it is placed)."""
    model_version: str | None = None
    walltime: float | None = None
    input_key: str | None = None
    moves: list[Move] = field(default_factory=list)
    attempt: int = 0
    inputs_by_proxy: list[int | str] = field(default_factory=list)
    """Inputs the last attempt sent by proxy (positions, keyword names)."""

    def make_result(self, **fields: Any) -> Result:
        """Build the Result for this task from the outcome fields."""
        return Result(
            task_id=self.task_id,
            method=self.method,
            topic=self.topic,
            args=self.args if self.keep_inputs else (),
            kwargs=self.kwargs if self.keep_inputs else {},
            keep_inputs=self.keep_inputs,
            retries=self.retries,
            moves=list(self.moves),
            task_info=self.task_info,
            resources=self.resources,
            site=self.site,
            model_version=self.model_version,
            inputs_by_proxy=list(self.inputs_by_proxy) if self.keep_inputs else [],
            **fields,
        )


def _names(fields: Collection[str] | Mapping[str, Any] | None) -> set[str]:
    """Top-level field names of an include/exclude argument (a set, or a dict of flags)."""
    if fields is None:
        return set()
    if isinstance(fields, Mapping):
        return {str(k) for k, v in fields.items() if v}
    return {str(k) for k in fields}


def is_proxy(value: Any) -> bool:
    """Whether ``value`` is a ProxyStore proxy (never one before ProxyStore is imported)."""
    if "proxystore" not in sys.modules:
        return False
    from orchestrator.apps.proxies import is_proxy

    return is_proxy(value)
