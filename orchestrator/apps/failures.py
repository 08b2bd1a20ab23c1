"""The failure vocabulary: every reason a task can fail for, and the record that carries it.

One :class:`FailureReason` member per distinct reason, each with a one-line description and
whether a method retries it by default. The same record shape (:class:`FailureRecord`) goes
from the worker (``run_task``) through the site (``Outcome.failure``) to the thinker
(``orchestrator.models.FailureInfo``).

On the wire and in the journal a reason is a plain string (a ``StrEnum`` member is its value),
so a worker running an older or newer orch, and run directories written by one, still work:
:func:`parse_reason` turns a string back into a member, maps retired names (``walltime``) to
their member and keeps a string it does not know as that string.

This module is shipped to workers: it imports only the standard library.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, TypedDict


class FailureReason(StrEnum):
    """Why a task failed: the machine-readable class of ``FailureInfo.reason``.

    Each member has ``description`` (one line) and ``retried`` (whether a method's default
    ``retry_on`` retries it). A failure whose task raised an exception without a ``reason``
    attribute has no reason at all (``None``); its ``exception_type`` names it.
    """

    description: str
    retried: bool

    def __new__(cls, value: str, description: str, retried: bool) -> FailureReason:
        """A member: its string ``value``, one-line ``description`` and ``retried`` default."""
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        member.retried = retried
        return member

    SITE_FAILURE = (
        "site_failure",
        "the site, not the task, failed (worker lost, site down or unreachable, result lost)",
        True,
    )
    TIMEOUT = (
        "timeout",
        "the task ran past its wall time and was stopped (a code's whole process group killed)",
        True,
    )
    NO_SITE = (
        "no_site",
        "no site of the task's kind came back within the campaign's site_wait",
        False,
    )
    CANCELLED = ("cancelled", "cancelled by the user", False)
    INTERRUPTED = (
        "interrupted",
        "still running when the campaign was stopped (--resume runs it again)",
        False,
    )
    BAD_INPUT = (
        "bad_input",
        "the inputs were rejected before anything was launched (invalid SMILES, settings...)",
        False,
    )
    BINARY_MISSING = (
        "binary_missing",
        "the code's program is not on PATH, or the site's command names a missing program",
        False,
    )
    CODE_ERROR = (
        "code_error",
        "the code reported an error of its own ([ERROR], ERROR:, unknown basis...)",
        False,
    )
    NOT_CONVERGED = (
        "not_converged",
        "an SCF or optimisation did not converge (even where the code printed an energy)",
        False,
    )
    NONZERO_EXIT = (
        "nonzero_exit",
        "the code exited with a non-zero status and no more specific cause was found",
        False,
    )
    OUTPUT_MISSING = ("output_missing", "an expected output file or line is absent", False)
    OUTPUT_UNPARSABLE = (
        "output_unparsable",
        "the output is there but cannot be read as expected",
        False,
    )
    DATA = ("data", "moving data by proxy failed (a store could not be used)", False)
    PROXY_RESOLVE = (
        "proxy_resolve",
        "a proxied value could not be resolved (evicted, store unreachable)",
        False,
    )
    PROXY_PUT = ("proxy_put", "a large result could not be put in the site's store", False)

    @classmethod
    def _missing_(cls, value: object) -> FailureReason | None:
        if isinstance(value, str):
            return ALIASES.get(value)
        return None


ALIASES: dict[str, FailureReason] = {"walltime": FailureReason.TIMEOUT}
"""Retired reason names, still read from old journals and results: name -> member."""

RETRIED_BY_DEFAULT: frozenset[FailureReason] = frozenset(r for r in FailureReason if r.retried)
"""The reasons a method retries unless its ``retry_on`` says otherwise."""

_BY_NAME: dict[str, FailureReason] = {**{r.value: r for r in FailureReason}, **ALIASES}


SUMMARY_CHARS = 300
"""Characters of a failure message kept where one line stands for it (moves, the journal)."""


def summary_line(message: Any) -> str:
    """The last non-empty line of a failure message, cut to :data:`SUMMARY_CHARS` ("" if none)."""
    lines = str(message or "").strip().splitlines()
    return lines[-1][:SUMMARY_CHARS] if lines else ""


def parse_reason(value: Any) -> FailureReason | str | None:
    """The member for a reason read back from a worker, a journal or a results file.

    Args:
        value: A member, a reason string (a retired name such as ``walltime`` included), or
            ``None``/``""`` for no reason.

    Returns:
        The member; ``None`` for no reason; ``str(value)`` unchanged for a reason this orch
        does not know (written by a newer one, or by a campaign's own exception), so reading a
        journal never fails on it.
    """
    if value is None or value == "":
        return None
    if isinstance(value, FailureReason):
        return value
    text = str(value)
    return _BY_NAME.get(text, text)


class FailureRecord(TypedDict, total=False):
    """One failure as plain data: what ``run_task`` returns and ``Outcome.failure`` holds.

    ``reason`` is a plain string (a :class:`FailureReason` value, or one this orch does not
    know), so the record pickles the same whichever orch version reads it.
    :func:`failure_record` always fills every key; they are optional here because a record
    from a worker running another orch version may lack some, so readers use ``.get``.
    """

    exception_type: str
    message: str
    traceback: str
    where: Literal["task", "site"]
    reason: str | None
    details: dict[str, Any] | None


def failure_record(
    exception_type: str,
    message: str,
    *,
    where: Literal["task", "site"],
    reason: FailureReason | str | None = None,
    traceback: str = "",
    details: dict[str, Any] | None = None,
) -> FailureRecord:
    """Build a :class:`FailureRecord`, with ``reason`` stored as its plain string.

    Args:
        exception_type: Qualified name of the exception class (or a site's error name).
        message: One line (``str()`` of the exception).
        where: ``task`` (the task's code raised) or ``site`` (the site could not run it).
        reason: The failure's reason, or ``None`` when there is none.
        traceback: Tail of the formatted traceback.
        details: Structured facts (exit code, output tail...), or ``None``.

    Returns:
        The record.
    """
    return {
        "exception_type": exception_type,
        "message": message,
        "traceback": traceback,
        "where": where,
        "reason": None if reason is None or reason == "" else str(reason),
        "details": details,
    }
