"""Methods: the functions a thinker can call by name, with what they need to run."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from orchestrator.exceptions import ConfigError, UnknownMethodError
from orchestrator.models import RETRIED_BY_DEFAULT, FailureReason, parse_reason
from orchestrator.resources import Resources, ResourcesError

SiteKindName = Literal["cpu", "gpu"]

TRANSIENT_REASONS: frozenset[str] = frozenset(RETRIED_BY_DEFAULT)
"""Failure reasons retried by default: those whose ``FailureReason.retried`` is set (the site
failed: worker lost, site down or unreachable; or the task ran past its wall time). An error
raised by the task's own code is not retried unless the method says so (``retry_on``), since
it would most likely happen again."""

MAX_BACKOFF = 300.0
"""Longest wait (seconds) before a retry, however many retries came before."""


@dataclass(frozen=True)
class Method:
    """A function registered under a name, with its requirements.

    Args:
        function: The Python function to run on a worker. It must be importable there
            (defined in an installed package or a campaign module) and its result must fit in
            10 MiB once serialized.
        name: Name used in ``send_inputs(method=...)``; defaults to the function's name.
        kind: Which kind of site runs it: ``cpu`` or ``gpu``.
        slots: Site slots (workers) one task occupies at least, whatever its resources.
        resources: What each task asks for unless its call says otherwise
            (``send_inputs(resources=...)``): a :class:`~orchestrator.resources.Resources` or
            a mapping of its fields (Colmena's ``ResourceRequirements`` names are read too).
            A bad value is a ``ConfigError``.
        max_retries: Default retry budget when ``send_inputs`` does not give one. A task
            that moves off a failed site uses one retry.
        retry_on: Failure reasons worth a retry (``FailureInfo.reason``): ``FailureReason``
            members or their names; default :data:`TRANSIENT_REASONS` (site failures and
            timeouts). ``"any"`` retries every failure within the budget, e.g.
            ``{"site_failure", "not_converged"}`` adds one. A name that is not a
            ``FailureReason`` is a ``ConfigError``.
        backoff: Seconds before the first retry; each further retry waits twice as long
            (at most :data:`MAX_BACKOFF`). 0 retries at once.
        walltime: Seconds a task may run on its worker before it is stopped and reported
            failed with reason ``timeout``; ``None`` for no limit.
            ``send_inputs(task_walltime=...)``
            overrides it per call.
        proxy_threshold: Bytes above which this method's arguments move by proxy, instead of
            the site's ``data.threshold_bytes`` (only at sites with a ``data`` store).
    """

    function: Callable[..., Any]
    name: str = ""
    kind: SiteKindName = "cpu"
    slots: int = 1
    max_retries: int = 2
    retry_on: frozenset[str] | Literal["any"] = TRANSIENT_REASONS
    backoff: float = 0.0
    walltime: float | None = None
    proxy_threshold: int | None = None
    resources: Resources = field(default_factory=Resources)

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise ConfigError(f"method {self.name or self.function!r}: function is not callable")
        if not self.name:
            object.__setattr__(self, "name", getattr(self.function, "__name__", ""))
        if not self.name.isidentifier():
            raise ConfigError(
                f"method {self.name!r}: name must be a Python identifier; pass name='...'"
            )
        if self.kind not in ("cpu", "gpu"):
            raise ConfigError(f"method {self.name}: kind {self.kind!r} is not 'cpu' or 'gpu'")
        if self.slots < 1:
            raise ConfigError(f"method {self.name}: slots must be >= 1 (got {self.slots})")
        try:
            parsed = Resources.parse(self.resources, where=f"method {self.name}: resources")
        except ResourcesError as exc:
            raise ConfigError(str(exc)) from None
        object.__setattr__(self, "resources", parsed)
        if self.max_retries < 0:
            raise ConfigError(f"method {self.name}: max_retries must be >= 0")
        if self.retry_on != "any":
            if isinstance(self.retry_on, str):
                raise ConfigError(
                    f"method {self.name}: retry_on must be 'any' or a set of failure reasons, "
                    f"e.g. {{'site_failure', 'timeout'}}"
                )
            object.__setattr__(self, "retry_on", self._known_reasons(self.retry_on))
        if self.backoff < 0:
            raise ConfigError(f"method {self.name}: backoff must be >= 0 seconds")
        if self.walltime is not None and self.walltime <= 0:
            raise ConfigError(f"method {self.name}: walltime must be > 0 seconds, or None")
        if self.proxy_threshold is not None and self.proxy_threshold < 0:
            raise ConfigError(f"method {self.name}: proxy_threshold must be >= 0 bytes, or None")

    def _known_reasons(self, given: Iterable[object]) -> frozenset[str]:
        """``retry_on`` as members (a retired name becomes its member); unknown: ConfigError."""
        reasons: set[str] = set()
        unknown: list[str] = []
        for item in given:
            reason = parse_reason(item) if isinstance(item, str) else None
            if isinstance(reason, FailureReason):
                reasons.add(reason)
            else:
                unknown.append(repr(item))
        if unknown:
            known = ", ".join(r.value for r in FailureReason)
            raise ConfigError(
                f"method {self.name}: retry_on names unknown failure reason(s) "
                f"{', '.join(sorted(unknown))}; use 'any' or some of: {known}"
            )
        return frozenset(reasons)

    def should_retry(self, reason: str | None) -> bool:
        """Whether a failure with ``reason`` is worth a retry of this method."""
        if self.retry_on == "any":
            return True
        return reason is not None and parse_reason(reason) in self.retry_on

    def retry_delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first)."""
        if self.backoff <= 0:
            return 0.0
        return float(min(MAX_BACKOFF, self.backoff * 2 ** (retry - 1)))


class MethodRegistry:
    """The methods of one campaign, looked up by name."""

    def __init__(self, methods: Iterable[Method | Callable[..., Any]]):
        self._methods: dict[str, Method] = {}
        for item in methods:
            spec = item if isinstance(item, Method) else Method(item)
            if spec.name in self._methods:
                raise ConfigError(f"method {spec.name!r} is registered twice; rename one")
            self._methods[spec.name] = spec

    def get(self, name: str) -> Method:
        """The method called ``name``.

        Raises:
            UnknownMethodError: naming the methods that exist.
        """
        try:
            return self._methods[name]
        except KeyError:
            known = ", ".join(sorted(self._methods)) or "none"
            raise UnknownMethodError(
                f"unknown method {name!r}; this campaign registers: {known}"
            ) from None

    def kinds(self) -> set[str]:
        """Site kinds the methods need."""
        return {m.kind for m in self._methods.values()}

    def __iter__(self) -> Iterator[Method]:
        return iter(self._methods.values())

    def __len__(self) -> int:
        return len(self._methods)

    def __contains__(self, name: object) -> bool:
        return name in self._methods
