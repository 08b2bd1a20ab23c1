"""The MLflow UI renders a campaign's registered model (versions, alias) in headless Chromium.

The server asks for the run's secret (HTTP basic auth), so the browser logs in as a user would
when the browser asks: Chromium is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no port another user could reach), and answers each auth
challenge with the run's credentials (``Fetch.authRequired`` -> ``continueWithAuth``, what
Playwright's ``http_credentials`` does). The DOM is read again until the expected content is
there or a deadline passes.
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import json
import os
import queue
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from orchestrator.registry import Credentials, ModelRegistry, TrackingServer, store_paths

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
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
# puts the two pipe ends at the fds Chromium reads and writes, then becomes Chromium
_ON_FDS_3_4 = "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
_ON_FDS_3_4 += "os.execv(sys.argv[3], sys.argv[3:])"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="headless Chromium not installed (Debian package `chromium`, see scripts/setup)",
)


def _high_fd(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or above (so that moving it to 3 or 4 clobbers nothing)."""
    copy = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return copy


class Browser:
    """Headless Chromium over the DevTools protocol; logs in with ``credentials`` when asked.

    Args:
        profile: A fresh profile directory.
        credentials: The user and password to answer HTTP auth challenges with.
    """

    def __init__(self, profile: Path, credentials: Credentials) -> None:
        self.credentials = credentials
        self.challenges = 0  # auth challenges answered
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
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        # every request of the page pauses until continued; auth challenges are answered
        self.call("Fetch.enable", self.session, handleAuthRequests=True, patterns=[{}])
        width, height = WINDOW
        self.call(
            "Emulation.setDeviceMetricsOverride",
            self.session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

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
                elif message.get("method") == "Fetch.requestPaused":
                    params = {"requestId": message["params"]["requestId"]}
                    self._send("Fetch.continueRequest", message["sessionId"], params)
                elif message.get("method") == "Fetch.authRequired":
                    self.challenges += 1
                    answer = {
                        "response": "ProvideCredentials",
                        "username": self.credentials.username,
                        "password": self.credentials.password,
                    }
                    params = {"requestId": message["params"]["requestId"]}
                    params["authChallengeResponse"] = answer
                    self._send("Fetch.continueWithAuth", message["sessionId"], params)

    def open(self, url: str) -> None:
        """Navigate the page to ``url``."""
        self.call("Page.navigate", self.session, url=url)

    def dom(self) -> str:
        """The page's current DOM as HTML."""
        found = self.call(
            "Runtime.evaluate",
            self.session,
            expression="document.documentElement.outerHTML",
            returnByValue=True,
        )
        return str(found["result"].get("value", ""))

    def screenshot(self, path: Path) -> None:
        """Write the visible page (``WINDOW`` pixels) as a PNG file."""
        shot = self.call("Page.captureScreenshot", self.session, format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        """Close the browser and reap it."""
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError, queue.Empty):
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._reader.join(timeout=10)
        self._in.close()


class _Rows(HTMLParser):
    """Collects the text of each element with ``role="row"`` (table rows of the MLflow UI)."""

    VOID = {"area", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.depth = 0  # open elements inside the current row (0: not in a row)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        if self.depth:
            self.depth += 1
        elif ("role", "row") in attrs:
            self.rows.append([])
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag not in self.VOID:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth:
            self.rows[-1].append(data)


def rows_text(dom: str) -> list[str]:
    """The visible text of each table row of a rendered page, whitespace collapsed."""
    parser = _Rows()
    parser.feed(dom)
    return [" ".join(" ".join(parts).split()) for parts in parser.rows]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    return width, height


@pytest.mark.timeout(240)
def test_model_page_shows_versions_and_alias(tmp_path):
    run_dir = tmp_path / "run"
    name = "ui-surrogate"
    with TrackingServer(run_dir) as server:
        registry = ModelRegistry(server, name)
        torch.manual_seed(0)
        for rmse in (0.4, 0.2):  # version 2 is better: it becomes the champion
            model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
            version = registry.log_training(model, {"width": 4}, {"val_rmse": rmse}).version
            registry.promote(version)
        assert registry.alias_version("champion") == 2
        # without the secret the page itself is refused
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/", timeout=10)
        assert refused.value.code == 401

        assert server.credentials is not None
        url = f"{server.url}/#/models/{name}"
        screenshot = store_paths(run_dir)["root"] / "ui-screenshot.png"
        browser = Browser(tmp_path / "profile", server.credentials)
        try:
            browser.open(url)
            deadline = time.monotonic() + 120
            while True:  # poll the rendered DOM until the versions and the alias are there
                dom = browser.dom()
                rows = rows_text(dom)
                version_rows = [row for row in rows if re.match(r"Version \d+ ", row)]
                champion_rows = [row for row in version_rows if "champion" in row]
                if len(version_rows) == 2 and champion_rows or time.monotonic() > deadline:
                    break
                time.sleep(0.5)  # polling interval of the rendered page
            assert browser.challenges >= 1  # it did log in when asked
            assert name in dom, dom[-2000:]
            assert sorted(row.split()[1] for row in version_rows) == ["1", "2"], rows
            assert len(champion_rows) == 1 and champion_rows[0].startswith("Version 2 "), rows
            browser.screenshot(screenshot)
        finally:
            browser.close()
    assert screenshot.is_file()
    assert png_size(screenshot) == WINDOW
    assert screenshot.stat().st_size > 20_000  # a rendered page, not a blank one (~5 kB)
