"""Headless Chromium driven over the DevTools protocol on a pipe, for tests of rendered pages.

Chromium runs with ``--remote-debugging-pipe``: DevTools messages travel on its fds 3 (in)
and 4 (out), so no port is opened that another user of the machine could reach. With
``credentials`` every request of the page pauses (``Fetch.enable``) and each HTTP auth
challenge is answered with them (``Fetch.authRequired`` -> ``continueWithAuth``, what
Playwright's ``http_credentials`` does). Console errors (``Runtime.consoleAPICalled`` of type
error or assert), uncaught exceptions (``Runtime.exceptionThrown``) and browser log entries
of level error (``Log.entryAdded``: failed loads, CSP and the like) are collected for
:meth:`Browser.console_errors`.

Use from a test module (``tests/`` is on ``sys.path`` when pytest runs)::

    from support.browser import CHROMIUM, Browser

    browser = Browser(tmp_path / "profile")
    try:
        browser.navigate(page.as_uri())
        assert browser.evaluate("document.querySelectorAll('svg').length") > 0
        assert browser.console_errors() == []
    finally:
        browser.close()
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import json
import math
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
"""The browser binary (Debian package ``chromium``)."""
HAVE_CHROMIUM = Path(CHROMIUM).exists()
SKIP_REASON = "headless Chromium not installed (Debian package `chromium`, see scripts/setup)"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-pipe",  # DevTools messages on fds 3 (in) and 4 (out)
]
WINDOW = (1400, 900)
"""The page's viewport in CSS pixels (device scale factor 1)."""
# puts the two pipe ends at the fds Chromium reads and writes, then becomes Chromium
_ON_FDS_3_4 = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
_ON_FDS_3_4 += "os.execv(sys.argv[3], sys.argv[3:])"


class _Credentials(Protocol):
    username: str
    password: str


def _high_fd(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or above (so that moving it to 3 or 4 clobbers nothing)."""
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return copy


def _remote_text(obj: dict[str, Any]) -> str:
    """A console argument (a ``Runtime.RemoteObject``) as text."""
    if "value" in obj:
        return str(obj["value"])
    return str(obj.get("description") or obj.get("unserializableValue") or obj.get("type"))


class Browser:
    """Headless Chromium over the DevTools protocol; logs in with ``credentials`` when asked.

    Args:
        profile: A fresh profile directory.
        credentials: The user and password to answer HTTP auth challenges with (anything
            with ``username`` and ``password``); None: requests are not intercepted.
        window: The viewport in CSS pixels.
    """

    def __init__(
        self,
        profile: Path,
        credentials: _Credentials | None = None,
        window: tuple[int, int] = WINDOW,
    ) -> None:
        self.credentials = credentials
        self.window = window
        self.challenges = 0  # auth challenges answered
        self._errors: list[str] = []
        self._errors_lock = threading.Lock()
        self._loads = 0  # Page.loadEventFired seen
        self._loaded = threading.Condition()
        to_chrome_r, to_chrome_w = map(_high_fd, os.pipe())
        from_chrome_r, from_chrome_w = map(_high_fd, os.pipe())
        cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _ON_FDS_3_4, str(to_chrome_r), str(from_chrome_w), *cmd],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._out = os.fdopen(to_chrome_w, "wb")
        self._in = os.fdopen(from_chrome_r, "rb")
        self._ids = itertools.count(1)
        self._write = threading.Lock()
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]
            self.call("Runtime.enable", self.session)
            self.call("Log.enable", self.session)
            self.call("Page.enable", self.session)
            if credentials is not None:
                # every request of the page pauses until continued; auth challenges answered
                self.call("Fetch.enable", self.session, handleAuthRequests=True, patterns=[{}])
            width, height = window
            self.call(
                "Emulation.setDeviceMetricsOverride",
                self.session,
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    # -- the protocol ----------------------------------------------------------------------

    def _send(self, method: str, session: str | None, params: dict[str, Any]) -> int:
        message_id = next(self._ids)
        message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self._replies[message_id] = queue.Queue()
        with self._write:
            self._out.write(json.dumps(message).encode() + b"\0")
            self._out.flush()
        return message_id

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and wait for its reply (RuntimeError on an error)."""
        reply = self._replies[self._send(method, session, params)].get(timeout=60)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return dict(reply.get("result", {}))

    def _read(self) -> None:
        buffer = b""
        while chunk := self._in.read1(65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    self._replies[message["id"]].put(message)
                else:
                    self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Fetch.requestPaused":
            self._send(
                "Fetch.continueRequest", message["sessionId"], {"requestId": params["requestId"]}
            )
        elif method == "Fetch.authRequired":
            self.challenges += 1
            credentials = self.credentials
            answer: dict[str, Any] = (
                {
                    "response": "ProvideCredentials",
                    "username": credentials.username,
                    "password": credentials.password,
                }
                if credentials is not None
                else {"response": "CancelAuth"}
            )
            self._send(
                "Fetch.continueWithAuth",
                message["sessionId"],
                {"requestId": params["requestId"], "authChallengeResponse": answer},
            )
        elif method == "Page.loadEventFired":
            with self._loaded:
                self._loads += 1
                self._loaded.notify_all()
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(_remote_text(arg) for arg in params.get("args", []))
            self._error(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception") or {}
            text = exception.get("description") or details.get("text") or "exception"
            self._error(f"uncaught: {text}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                where = f" ({entry['url']})" if entry.get("url") else ""
                self._error(f"log {entry.get('source', '?')}: {entry.get('text', '')}{where}")

    def _error(self, text: str) -> None:
        with self._errors_lock:
            self._errors.append(text)

    # -- the page --------------------------------------------------------------------------

    def navigate(self, url: str, timeout: float = 60.0) -> None:
        """Open ``url`` and wait for its load event (not for a change of the fragment only).

        Raises:
            RuntimeError: the page cannot be opened.
            TimeoutError: it did not load within ``timeout`` seconds.
        """
        with self._loaded:
            before = self._loads
        reply = self.call("Page.navigate", self.session, url=url)
        if reply.get("errorText"):
            raise RuntimeError(f"cannot open {url}: {reply['errorText']}")
        if not reply.get("loaderId"):
            return  # a navigation within the same document: nothing loads
        with self._loaded:
            if not self._loaded.wait_for(lambda: self._loads > before, timeout):
                raise TimeoutError(f"{url} did not load within {timeout:g} s")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (RuntimeError if it throws)."""
        found = self.call(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            returnByValue=True,
            awaitPromise=True,
        )
        if "exceptionDetails" in found:
            details = found["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            raise RuntimeError(f"{expression!r} threw: {text}")
        return found["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 30.0, interval: float = 0.2) -> Any:
        """Evaluate ``condition`` until it is truthy and return its value.

        Raises:
            TimeoutError: it stayed falsy for ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(condition)
            except RuntimeError:  # e.g. the page is between two documents
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{condition!r} still false after {timeout:g} s")
            time.sleep(interval)

    def dom(self) -> str:
        """The page's current DOM as HTML."""
        return str(self.evaluate("document.documentElement.outerHTML") or "")

    def click(self, css_selector: str) -> None:
        """Click the first element that matches ``css_selector`` (RuntimeError if none)."""
        found = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(css_selector)}); "
            "if (!e) return false; e.scrollIntoView(); e.click(); return true; })()"
        )
        if not found:
            raise RuntimeError(f"no element matches {css_selector!r}")

    def console_errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries seen so far."""
        with self._errors_lock:
            return list(self._errors)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """Write the page as a PNG file: the viewport, or with ``full_page`` all of it."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.call("Page.getLayoutMetrics", self.session)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": math.ceil(size["width"]),
                "height": math.ceil(size["height"]),
                "scale": 1,
            }
            params["captureBeyondViewport"] = True
        shot = self.call("Page.captureScreenshot", self.session, **params)
        path = Path(path)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        """Close the browser and reap it."""
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError, ValueError, queue.Empty):
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._reader.join(timeout=10)
        self._in.close()
