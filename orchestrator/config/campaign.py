"""Campaign options: ``-o key=value`` pairs validated against a campaign's ``Options`` model."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from orchestrator.exceptions import ConfigError


def parse_options(
    cls: type, pairs: Sequence[str], base: Mapping[str, Any] | None = None
) -> BaseModel | None:
    """Build the campaign's ``Options`` from ``key=value`` strings.

    Args:
        cls: The campaign class (its ``Options`` model validates the values).
        pairs: ``key=value`` strings from the command line.
        base: Values to start from (a resumed run's options); ``pairs`` override them.

    Raises:
        ConfigError: a pair is malformed, names an unknown option or has a bad value.
    """
    options_cls = getattr(cls, "Options", None)
    if options_cls is None:
        if pairs:
            raise ConfigError(f"campaign {cls.__name__}: takes no options (got {', '.join(pairs)})")
        return None
    values: dict[str, Any] = {
        k: v for k, v in (base or {}).items() if k in options_cls.model_fields
    }
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"option {pair!r}: write it as key=value, e.g. -o n_tasks=10")
        if key not in options_cls.model_fields:
            known = ", ".join(options_cls.model_fields)
            raise ConfigError(f"option {key!r}: unknown for {cls.__name__}; known: {known}")
        values[key] = value
    try:
        validated: BaseModel = options_cls.model_validate(values)
        return validated
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        raise ConfigError(f"option {where}: {err['msg']} (got {err.get('input')!r})") from None
