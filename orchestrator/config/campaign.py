"""Campaign options: ``-o key=value`` pairs validated against a campaign's ``Options`` model."""

from __future__ import annotations

import difflib
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
            raise ConfigError(
                f"campaign {cls.__name__}: takes no options (got {', '.join(pairs)}); leave out -o"
            )
        return None
    fields = options_cls.model_fields
    values: dict[str, Any] = {k: v for k, v in (base or {}).items() if k in fields}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            problem = "no '=' in it" if not sep else "no option name before '='"
            example = f"{key}=VALUE" if key in fields else f"{next(iter(fields), 'name')}=VALUE"
            raise ConfigError(
                f"option {pair!r}: {problem}; write it as key=value, e.g. -o {example}"
            )
        if key not in fields:
            known = ", ".join(fields)
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            guess = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(
                f"option {key!r}: unknown for {cls.__name__}; {guess}known options: {known}"
            )
        values[key] = value
    try:
        validated: BaseModel = options_cls.model_validate(values)
        return validated
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        problem = str(err["msg"]).removeprefix("Value error, ")
        if not loc:  # a rule across several options
            raise ConfigError(f"options: {problem}; change the -o values") from None
        raise ConfigError(
            f"option {loc}: {problem} (got {err.get('input')!r}); {_hint(options_cls, loc)}"
        ) from None


def _hint(options_cls: type[BaseModel], key: str) -> str:
    """What to do about a bad value of option ``key``: its description and default."""
    field = options_cls.model_fields.get(key.split(".")[0])
    about = [field.description] if field is not None and field.description else []
    if field is not None and not field.is_required() and field.default is not None:
        about.append(f"default {field.default}")
    return f"fix -o {key}=..." + (f" ({'; '.join(about)})" if about else "")
