"""Task ids: random version-4 UUID strings, made without a system call.

``uuid.uuid4()`` reads ``os.urandom`` for every id. That read releases the GIL, and on a busy
campaign another thread (the engine's result thread, the journal's writer) takes it and the
thread making the id waits its turn: a task id then costs tens of microseconds instead of one.
These ids come from :mod:`random`'s generator instead, seeded from the operating system at
start and again in every forked child (``random`` does that itself), so two processes do not
repeat each other's ids. They are unique, not secret: nothing uses a task id as a credential.
"""

from __future__ import annotations

import random
import uuid

_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_BITS = (0x4000 << 64) | (0x8000 << 48)


def new_id() -> str:
    """A random UUID (version 4, RFC 4122 variant) as its 36-character string."""
    digits = f"{random.getrandbits(128) & _VERSION_MASK | _VERSION_BITS:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def new_uuid() -> uuid.UUID:
    """The same, as a :class:`uuid.UUID` (an engine task's id)."""
    return uuid.UUID(int=random.getrandbits(128) & _VERSION_MASK | _VERSION_BITS)
