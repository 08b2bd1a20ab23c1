"""The live dashboard: a page on 127.0.0.1 with a run's status, plots and controls.

``orch status RUN_DIR --serve`` (and ``orch launch --dashboard``, which starts this as a
child process) serves it. The server reads the journal read-only, like ``orch status``, in
its own process, so the campaign's own work is not slowed by page requests. Every request
needs the token printed in the terminal (a query parameter for pages, the ``X-Orch-Token``
header for control actions), and only requests addressed to the loopback host are served
(no DNS-rebinding). Control buttons (cancel, drain, undrain, halt) go through the run's
control socket, exactly as the ``orch`` commands do, so they are journaled the same way.

Run as ``python -m orchestrator.observe.dashboard RUN_DIR [--port N] [--parent-pid PID]``:
it prints its URL on the first line of standard output, and with ``--parent-pid`` ends when
that process does.
"""

from __future__ import annotations

import argparse
import hmac
import html
import json
import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from orchestrator.exceptions import ConfigError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
PAGE = Path(__file__).with_name("dashboard.html")
"""The page (plain HTML and script; it fetches ``/api/status`` every 2 s, the plots every 10)."""
NICENESS = 10
"""How much the dashboard started by ``orch launch --dashboard`` lowers its CPU priority."""

PLOTS_EVERY_S = 5.0
"""Shortest time between two renderings of the plots (they are cached in between)."""

_CONTROL_FIELDS = {"cancel": ("tasks", "method"), "drain": ("site",), "undrain": ("site",)}


class _Plots:
    """The report's plots, rendered at most every :data:`PLOTS_EVERY_S` seconds."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._lock = threading.Lock()
        self._at = 0.0
        self._svgs: dict[str, str] = {}

    def get(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() - self._at >= PLOTS_EVERY_S:
                from orchestrator.observe.report import collect, plot_svgs

                try:
                    # without the MLflow store: importing MLflow and copying the store every
                    # few seconds is the report's job, not the live page's
                    self._svgs = plot_svgs(collect(self.run_dir, models=False))
                except ConfigError:
                    self._svgs = {}
                self._at = time.monotonic()
            return self._svgs


def make_server(run_dir: Path, port: int = 0, token: str | None = None) -> ThreadingHTTPServer:
    """A dashboard server for ``run_dir`` bound to 127.0.0.1 (not started).

    The token is the server's attribute ``token``; its URL is ``server.url``.
    """
    from orchestrator.control import ACTIONS, ControlError, request
    from orchestrator.observe.status import read_status

    secret = token or secrets.token_urlsafe(18)
    plots = _Plots(run_dir)
    page = PAGE.read_text().replace("__RUN_DIR__", html.escape(str(run_dir)))

    class Handler(BaseHTTPRequestHandler):
        server_version = "orch-dashboard"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            logger.debug("%s " + format, self.address_string(), *args)

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                "img-src data:; connect-src 'self'",
            )
            self.end_headers()
            self.wfile.write(body)

        def _json(self, code: int, value: Any) -> None:
            self._send(code, json.dumps(value, default=str).encode(), "application/json")

        def _allowed(self, given: str | None) -> bool:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            if host not in (HOST, "localhost"):
                return False
            return given is not None and hmac.compare_digest(given, secret)

        def do_GET(self) -> None:  # noqa: N802 - the base's name
            url = urlsplit(self.path)
            given = parse_qs(url.query).get("token", [None])[0]
            if not self._allowed(given):
                self._send(
                    HTTPStatus.FORBIDDEN,
                    b"forbidden: open the URL with ?token=... that the terminal printed",
                    "text/plain; charset=utf-8",
                )
                return
            if url.path == "/":
                self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
            elif url.path == "/api/status":
                try:
                    self._json(HTTPStatus.OK, read_status(run_dir))
                except ConfigError as exc:
                    self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
            elif url.path == "/api/plots":
                self._json(HTTPStatus.OK, plots.get())
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain; charset=utf-8")

        def do_POST(self) -> None:  # noqa: N802 - the base's name
            if urlsplit(self.path).path != "/api/control":
                self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain; charset=utf-8")
                return
            if not self._allowed(self.headers.get("X-Orch-Token")):
                self._json(HTTPStatus.FORBIDDEN, {"ok": False, "message": "bad or missing token"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(min(length, 1 << 20)) or b"{}")
                action = str(body["action"])
                if action not in ACTIONS or action == "ping":
                    raise ValueError(f"unknown action {action!r}")
            except (ValueError, KeyError, TypeError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"ok": False, "message": f"bad request: {exc}"})
                return
            fields = {k: body.get(k) for k in _CONTROL_FIELDS.get(action, ())}
            try:
                reply = request(run_dir, action, **fields)
            except ControlError as exc:
                self._json(HTTPStatus.CONFLICT, {"ok": False, "message": str(exc)})
                return
            self._json(HTTPStatus.OK, reply.__dict__)

    server = ThreadingHTTPServer((HOST, port), Handler)
    server.daemon_threads = True
    server.token = secret  # type: ignore[attr-defined]
    server.url = f"http://{HOST}:{server.server_port}/?token={secret}"  # type: ignore[attr-defined]
    return server


def serve_dashboard(
    run_dir: Path,
    port: int | None = None,
    announce: Callable[[str], None] = print,
    parent_pid: int | None = None,
) -> None:
    """Serve the dashboard of ``run_dir`` until Ctrl-C (or until ``parent_pid`` ends).

    Raises:
        ConfigError: the port is taken.
    """
    try:
        server = make_server(run_dir, port or 0)
    except OSError as exc:
        raise ConfigError(
            f"--port {port}: cannot listen on {HOST}:{port} ({exc.strerror}); choose another "
            "port or leave --port out"
        ) from None
    announce(f"dashboard: {server.url}")  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, name="orch-dashboard", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(1.0)
            if parent_pid is not None and os.getppid() != parent_pid:  # orch is gone
                break
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    """``python -m orchestrator.observe.dashboard RUN_DIR [--port N] [--parent-pid PID]``."""
    parser = argparse.ArgumentParser(prog="python -m orchestrator.observe.dashboard")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)

    def announce(line: str) -> None:
        print(line, flush=True)

    # Next to a running campaign, the campaign's own work comes first (plots take CPU)
    os.nice(NICENESS)

    try:
        serve_dashboard(args.run_dir.resolve(), args.port, announce, args.parent_pid)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
