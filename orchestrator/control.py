"""Controlling a running campaign from another terminal: cancel, drain, undrain, halt.

A running ``orch launch`` listens on a Unix socket, ``RUN_DIR/control.sock``, made with mode
0600; it also checks the peer's user id (``SO_PEERCRED``) on every connection, so only the
user who owns the run can act on it (root included: a socket's mode does not stop root, the
check does). One request per connection, one JSON line each way:

- request: ``{"action": "cancel", "tasks": [...], "method": null}``,
  ``{"action": "drain" | "undrain", "site": NAME}``, ``{"action": "halt"}``, ``{"action": "ping"}``;
- reply: ``{"ok": bool, "message": str, "details": {...}}``.

Every action is journaled (the journal's ``control`` table) with the user and what it did.
A run directory path too long for a socket address gets its socket in a private folder
(``$TMPDIR/orch-<uid>/``, mode 0700) and ``control.sock`` is a symbolic link to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pwd
import socket
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
"""File name of the control socket inside a run directory."""

ACTIONS = ("cancel", "drain", "undrain", "halt", "ping")
"""What a control request can ask for."""

_MAX_ADDRESS = 100  # sun_path holds 108 bytes on Linux; keep a margin
_MAX_REQUEST = 1 << 20
_TIMEOUT_S = 30.0


class ControlError(Exception):
    """A control request could not be delivered or was refused (one line for the user)."""


@dataclass
class Reply:
    """What the campaign answered."""

    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[dict[str, Any], str], Reply]
"""``handler(request, user) -> Reply``: acts on one request from ``user`` (a user name)."""


def user_name(uid: int) -> str:
    """The login name of ``uid`` (its number when it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _private_address(link: Path) -> Path:
    folder = Path(tempfile.gettempdir()) / f"orch-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid() or folder.stat().st_mode & 0o077:
        raise ControlError(f"{folder}: not a private folder of yours; remove it and try again")
    digest = hashlib.blake2b(str(link.resolve()).encode(), digest_size=8).hexdigest()
    return folder / f"{digest}.sock"


def peer_allowed(uid: int) -> bool:
    """Whether a peer with user id ``uid`` may control this process's campaign."""
    return uid == os.getuid()


class ControlServer:
    """Serves control requests for one running campaign (a daemon thread).

    Args:
        run_dir: The run directory; the socket is ``run_dir/control.sock``.
        handler: Acts on a request from an allowed user and says what it did.
        on_refused: Called with ``(user, request action)`` when a peer is refused.
    """

    def __init__(
        self,
        run_dir: Path,
        handler: Handler,
        on_refused: Callable[[str, str], None] | None = None,
    ):
        self.path = run_dir / SOCKET_NAME
        self._handler = handler
        self._on_refused = on_refused
        self._address: Path = self.path
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> ControlServer:
        """Bind the socket (mode 0600) and serve requests in the background."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by a campaign killed with -9
        address = self.path
        if len(os.fsencode(str(address))) > _MAX_ADDRESS:
            address = _private_address(self.path)
            with contextlib.suppress(FileNotFoundError):
                address.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # created 0600: no moment where another user could connect
        try:
            sock.bind(str(address))
        finally:
            os.umask(old)
        os.chmod(address, 0o600)
        if address != self.path:
            self.path.symlink_to(address)
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock, self._address = sock, address
        self._thread = threading.Thread(target=self._serve, name="orch-control", daemon=True)
        self._thread.start()
        logger.info("control socket %s", self.path)
        return self

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=self._answer, args=(conn,), name="orch-control-request", daemon=True
            ).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(_TIMEOUT_S)
            try:
                uid = _peer_uid(conn)
                request = _read_json(conn)
            except (OSError, ValueError) as exc:
                logger.warning("control: bad request (%s)", exc)
                return
            user = user_name(uid)
            action = str(request.get("action"))
            if not peer_allowed(uid):
                logger.warning("control: %s refused for user %s", action, user)
                if self._on_refused is not None:
                    self._on_refused(user, action)
                reply = Reply(
                    False,
                    f"refused: this run belongs to user {user_name(os.getuid())}; only its "
                    f"owner can control it (you are {user})",
                    {"refused": True},
                )
            elif action not in ACTIONS:
                reply = Reply(False, f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
            else:
                try:
                    reply = self._handler(request, user)
                except Exception as exc:  # noqa: BLE001 - the requester gets the reason
                    logger.exception("control: %s failed", action)
                    reply = Reply(False, f"{action} failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(reply.__dict__, default=str).encode() + b"\n")

    def stop(self) -> None:
        """Stop serving and remove the socket (and its link)."""
        self._stopping.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for path in {self.path, self._address}:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _read_json(conn: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > _MAX_REQUEST:
            raise ValueError("request too large")
    value = json.loads(data or b"{}")
    if not isinstance(value, dict):
        raise ValueError("a request is a JSON object")
    return value


def request(run_dir: Path, action: str, timeout: float = _TIMEOUT_S, **fields: Any) -> Reply:
    """Send one control request to the campaign running in ``run_dir`` and return its reply.

    Raises:
        ControlError: no campaign runs there, or its socket refused the connection (one
            line, with what to do).
    """
    path = run_dir / SOCKET_NAME
    if not path.exists():
        raise ControlError(
            f"{run_dir}: no campaign is running there ({SOCKET_NAME} is missing); "
            f"`orch status {run_dir}` shows how it ended"
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps({"action": action, **fields}).encode() + b"\n")
        reply = _read_json(sock)
    except PermissionError:
        owner = user_name(path.lstat().st_uid)
        raise ControlError(
            f"{path}: permission denied: this run belongs to user {owner}; only its owner "
            "can control it"
        ) from None
    except ConnectionRefusedError:
        raise ControlError(
            f"{run_dir}: the campaign is not running (its control socket is stale); "
            f"`orch status {run_dir}` shows how it ended"
        ) from None
    except (OSError, ValueError) as exc:
        raise ControlError(f"{path}: no answer from the campaign ({exc})") from None
    finally:
        sock.close()
    return Reply(
        ok=bool(reply.get("ok")),
        message=str(reply.get("message", "")),
        details=dict(reply.get("details") or {}),
    )
